"""Hyper-parameter search (`--hpo_trials`): the space file and its checks, the objective, the study's results, and
a study that resumes after a kill and is shared by concurrent workers, on SQLite and on a real PostgreSQL server."""

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import REPO_ROOT
from helpers import base_args, free_port, list_records, random_case, write_jsonl

from mtl_model.decoding import per_label_vector
from mtl_model.errors import ArgumentError
from mtl_model.metrics import cross_fitted_macro_f1, multitask_metrics, tune_thresholds
from mtl_model.search_ray import datasets_by_value
from mtl_model.search_space import KEEPS_COMMAND_LINE, command_line_values, read_search_space
from run_mtl_classification import cli

TASKS = {"mood": ["angry", "happy", "sad"], "topic": ["day", "movie"]}
SPACE = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "loss_type": {"type": "categorical", "choices": ["bce", "focal"]},
    "focal_gamma": {"type": "float", "low": 0.5, "high": 3.0, "when": {"loss_type": "focal"}},
    "classifier_dropout": {"type": "float", "low": 0.0, "high": 0.3},
    "label_correlation_weight": {"type": "float", "low": 0.0, "high": 0.3},
    "head_learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
}


@pytest.fixture
def search_data(tmp_path):
    files = {
        "train": write_jsonl(tmp_path / "train.jsonl", list_records(48)),
        "validation": write_jsonl(tmp_path / "validation.jsonl", list_records(32, 3)),
        "test": write_jsonl(tmp_path / "test.jsonl", list_records(16, 5)),
    }
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    return files, space


def search_args(tiny_bert_dir, output_dir, files, space, trials, *extra):
    return base_args(
        tiny_bert_dir, output_dir, "--train_file", str(files["train"]), "--validation_file", str(files["validation"]),
        "--task_columns", "mood,topic", "--eval_strategy", "epoch", "--num_train_epochs", "2",
        "--hpo_trials", str(trials), "--hpo_space", str(space), *extra,
    )  # fmt: skip


def read_trials(output_dir) -> list[dict]:
    with open(output_dir / "search" / "trials.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# The space file


def write_space(tmp_path, entries) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return str(path)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"learning_rat": {"type": "float", "low": 1e-5, "high": 1e-4}}, "learning_rat: not a flag a trial can set"),
        ({"output_dir": {"type": "categorical", "choices": ["a"]}}, "output_dir: not a flag a trial can set"),
        ({"at_least_one_label": {"type": "categorical", "choices": ["mood"]}}, "at_least_one_label: not a flag"),
        ({"long_documents": {"type": "categorical", "choices": ["truncate", "chunk"]}}, "long_documents: not "
         "searched: it decides how the texts are tokenized, once for all trials; give --long_documents on the command "
         "line"),
        ({"chunk_pooling": {"type": "categorical", "choices": ["max", "mean"]}}, "chunk_pooling: the run truncates "
         "texts, so no trial would read a chunk; search it with --long_documents chunk"),
        ({"chunk_budget": {"type": "int", "low": 2, "high": 8}}, "chunk_budget: the run truncates texts"),
        ({"learning_rate": {"type": "float", "low": 1e-5, "hihg": 1e-4}}, "learning_rate: unknown keys ['hihg']"),
        ({"learning_rate": {"type": "float", "low": 1e-3, "high": 1e-4}}, "learning_rate: low (0.001) is above high"),
        ({"learning_rate": {"type": "float", "low": 0.0, "high": 1e-4, "log": True}}, "a log range must lie above 0"),
        ({"learning_rate": {"type": "uniform", "low": 0.0, "high": 1.0}}, "type must be one of"),
        ({"loss_type": {"type": "categorical", "choices": []}}, "loss_type: a categorical entry needs"),
        ({"loss_type": {"type": "categorical", "choices": ["bce", "hinge"]}}, "--loss_type must be one of"),
        ({"classifier_dropout": {"type": "float", "low": 0.0, "high": 1.5}}, "classifier_dropout: --classifier_drop"),
        ({"num_train_epochs": {"type": "int", "low": -1, "high": 3}}, "--num_train_epochs must be at least 0"),
        ({"num_train_epochs": {"type": "int", "low": 1.5, "high": 3}}, "must be a whole number"),
        ({"focal_gamma": {"type": "float", "low": 1, "high": 2, "when": {"loss_type": "focal"}}}, "when names"),
        (
            {"loss_type": {"type": "categorical", "choices": ["bce"]},
             "focal_gamma": {"type": "float", "low": 1, "high": 2, "when": {"loss_type": "focal"}}},
            "when loss_type is ['focal'], which are not among its choices",
        ),
    ],
)  # fmt: skip
def test_space_file_errors_name_the_entry(tmp_path, entries, message):
    with pytest.raises(ArgumentError, match=None) as error:
        read_search_space(write_space(tmp_path, entries), TASKS, chunked=False)
    assert message in str(error.value)
    assert str(tmp_path / "space.yaml") in str(error.value)


def test_default_space_reads_and_samples_conditionally():
    import optuna

    space = read_search_space(None, TASKS, chunked=False)
    assert {"learning_rate", "head_learning_rate", "loss_type", "focal_gamma", "label_correlation_weight"} <= set(
        space.names
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        settings = space.settings(study.ask())
        assert ("focal_gamma" in settings) == (settings["loss_type"] == "focal")
        assert ("pos_weight_cap" in settings) == (settings["loss_type"] in ("bce", "focal"))
        assert 2e-5 <= settings["learning_rate"] <= 3e-4


def test_command_line_trial_fixes_what_the_space_can_sample_and_keeps_the_rest(tmp_path):
    space = read_search_space(write_space(tmp_path, {
        **SPACE, "per_device_train_batch_size": {"type": "categorical", "choices": [4, 8]},
        "warmup_steps": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.05},
    }), TASKS, chunked=False)  # fmt: skip
    model_args = SimpleNamespace(loss_type="focal", focal_gamma=5.0, classifier_dropout=None, head_learning_rate=3e-3,
                                 label_correlation_weight="mood=0.1,topic=0.1")  # fmt: skip
    training_args = SimpleNamespace(learning_rate=1e-3, per_device_train_batch_size=16, warmup_steps=0.1)
    values = command_line_values(space, model_args, training_args, TASKS)
    assert values["label_correlation_weight"] == 0.1  # every task the same: one number
    assert space.command_line_trial(values) == {
        "learning_rate": 1e-3, "loss_type": "focal", "head_learning_rate": 3e-3, "warmup_steps": 0.1,
        "label_correlation_weight": 0.1,
        "focal_gamma": None,  # out of range: kept
        "classifier_dropout": None,  # the encoder's own: kept
        "per_device_train_batch_size": None,  # not among the choices: kept
    }  # fmt: skip
    model_args.label_correlation_weight = "mood=0.1"  # topic has none: not one number
    off_grid = SimpleNamespace(learning_rate=1e-3, per_device_train_batch_size=8, warmup_steps=0.12)
    trial = space.command_line_trial(command_line_values(space, model_args, off_grid, TASKS))
    assert trial["label_correlation_weight"] is None and trial["warmup_steps"] is None
    assert trial["per_device_train_batch_size"] == 8
    model_args.loss_type = "asl"  # not among the choices: focal_gamma, conditional on it, does not apply
    assert "focal_gamma" not in space.command_line_trial(command_line_values(space, model_args, off_grid, TASKS))


def test_the_first_trial_runs_the_command_lines_settings(tiny_bert_dir, tmp_path, search_data):
    import optuna

    files, space = search_data
    output_dir = tmp_path / "out"
    given = ("--loss_type", "focal", "--focal_gamma", "5", "--label_correlation_weight", "mood=0.1,topic=0.2")
    assert cli(search_args(tiny_bert_dir, output_dir, files, space, 2, *given)) == 0
    first, second = read_trials(output_dir)
    assert float(first["learning_rate"]) == 1e-3 and float(first["head_learning_rate"]) == 3e-3
    assert first["loss_type"] == "focal"
    # Values the space cannot sample (out of range, per task, the encoder's own) stay as the command line gave them.
    assert [first.get(name, "") for name in ("focal_gamma", "label_correlation_weight", "classifier_dropout")] == [
        ""
    ] * 3
    assert second["classifier_dropout"] != "" and second["learning_rate"] != first["learning_rate"]
    study = optuna.load_study(study_name="mtl-search", storage=f"sqlite:///{output_dir / 'search' / 'study.db'}")
    assert study.trials[0].user_attrs[KEEPS_COMMAND_LINE] == ["focal_gamma", "classifier_dropout",
                                                              "label_correlation_weight"]  # fmt: skip
    assert KEEPS_COMMAND_LINE not in study.trials[1].user_attrs


def test_bad_search_flags_exit_2_before_training(tiny_bert_dir, tmp_path, search_data, capsys):
    files, space = search_data
    assert cli([*base_args(tiny_bert_dir, tmp_path / "a", "--train_file", str(files["train"]), "--task_columns",
                           "mood", "--do_train", "--hpo_space", str(space))]) == 2  # fmt: skip
    assert "--hpo_space sets up a search: add --hpo_trials N" in capsys.readouterr().err
    bad = search_args(tiny_bert_dir, tmp_path / "b", files, space, 2, "--hpo_objective", "eval_macro_f2")
    assert cli(bad) == 2
    assert "--hpo_objective 'eval_macro_f2' is not computed" in capsys.readouterr().err
    ray_scored = search_args(
        tiny_bert_dir, tmp_path / "d", files, space, 2, "--hpo_backend", "ray", "--hpo_score_test"
    )
    assert cli(ray_scored) == 2
    assert "--hpo_score_test keeps each trial's test score in its Optuna study" in capsys.readouterr().err
    unreadable = write_space(tmp_path, {"learning_rate": {"type": "float", "low": 1, "high": 0}})
    assert cli(search_args(tiny_bert_dir, tmp_path / "c", files, unreadable, 2)) == 2
    assert "learning_rate: low (1) is above high (0)" in capsys.readouterr().err
    assert not (tmp_path / "b" / "search").exists() and not (tmp_path / "c" / "search").exists()


# The objective


def test_cross_fitted_f1_scores_each_half_at_the_other_halfs_thresholds():
    logits, labels, config = random_case(3, rows=80)
    config.thresholds = None
    metrics = cross_fitted_macro_f1(logits, labels, config, min_positives=2, seed=0)
    halves = np.array_split(np.random.default_rng(0).permutation(len(logits)), 2)
    expected = {task: [] for task in config.tasks}
    for tuned_on, scored_on in (halves, halves[::-1]):
        tuned = tune_thresholds(logits[tuned_on], labels[tuned_on], config, 2)
        scores = multitask_metrics(logits[scored_on], labels[scored_on], config,
                                   np.array(per_label_vector(config.tasks, tuned)))  # fmt: skip
        for task in config.tasks:
            expected[task].append(scores[f"{task}_macro_f1"])
    for task in config.tasks:
        assert metrics[f"{task}_cross_fitted_macro_f1"] == pytest.approx(np.mean(expected[task]))
    assert metrics["cross_fitted_macro_f1"] == pytest.approx(np.mean([np.mean(v) for v in expected.values()]))
    # Scores that say nothing of the labels: thresholds tuned on the scored rows flatter them, cross-fitted do not.
    in_sample = multitask_metrics(
        logits, labels, config, np.array(per_label_vector(config.tasks, tune_thresholds(logits, labels, config, 2)))
    )
    mean_in_sample = np.mean([in_sample[f"{task}_macro_f1"] for task in config.tasks])  # fmt: skip
    assert metrics["cross_fitted_macro_f1"] < mean_in_sample - 0.02


# The search, its results, and a rerun


def test_search_writes_trials_best_config_and_report_and_resumes(tiny_bert_dir, tmp_path, search_data):
    import optuna

    files, space = search_data
    output_dir = tmp_path / "out"
    scored = ("--test_file", str(files["test"]), "--hpo_score_test")
    assert cli(search_args(tiny_bert_dir, output_dir, files, space, 3, *scored)) == 0
    trials = read_trials(output_dir)
    assert [row["state"] for row in trials] == ["COMPLETE"] * 3
    assert all(float(row["peak_rss_mib"]) > 0 and 0 <= float(row["objective"]) <= 1 for row in trials)
    assert all(0 <= float(row["test_macro_f1"]) <= 1 for row in trials)
    assert all((row.get("focal_gamma", "") != "") == (row["loss_type"] == "focal") for row in trials)
    report = (output_dir / "search" / "report.md").read_text()
    assert "## The best 3 trials" in report and "![optimization_history](plots/optimization_history.png)" in report
    assert "Spearman's rank correlation of the objective with test macro-F1 over the 3 completed trials" in report
    for plot in ("optimization_history", "param_importances", "slice"):
        assert (output_dir / "search" / "plots" / f"{plot}.png").stat().st_size > 1000
    assert not (output_dir / "config.json").exists()  # a search alone saves no model

    best = yaml.safe_load((output_dir / "search" / "best_config.yaml").read_text())
    best_trial = max(trials, key=lambda row: float(row["objective"]))
    assert best["learning_rate"] == pytest.approx(float(best_trial["learning_rate"]))
    assert best["do_train"] is True and not any(key.startswith("hpo_") for key in best)

    # The same command again: the study already holds 3 finished trials, so none runs; one more with N=4.
    assert cli(search_args(tiny_bert_dir, output_dir, files, space, 3)) == 0
    assert len(read_trials(output_dir)) == 3
    assert cli(search_args(tiny_bert_dir, output_dir, files, space, 4)) == 0
    trials = read_trials(output_dir)
    assert [row["number"] for row in trials] == ["0", "1", "2", "3"]
    assert trials[3]["test_macro_f1"] == ""  # scored on the test split only when asked
    # Trials queued beyond N (a run of a larger N cut short) wait: N finished is the end.
    study = optuna.load_study(study_name="mtl-search", storage=f"sqlite:///{output_dir / 'search' / 'study.db'}")
    study.enqueue_trial({})
    assert cli(search_args(tiny_bert_dir, output_dir, files, space, 4)) == 0
    assert [row["state"] for row in read_trials(output_dir)] == ["COMPLETE"] * 4 + ["WAITING"]

    # best_config.yaml is a training run's config file, taken as it is.
    assert cli([str(output_dir / "search" / "best_config.yaml"), "--output_dir", str(tmp_path / "best")]) == 0
    saved = json.loads((tmp_path / "best" / "config.json").read_text())
    assert saved["loss_type"] == best["loss_type"]
    assert saved["classifier_dropout"] == pytest.approx(best["classifier_dropout"])


def test_search_then_train_the_best_settings(tiny_bert_dir, tmp_path, search_data):
    """Texts read in chunks here, so that the pooling of their chunks is one of the settings searched."""
    files, _ = search_data
    pooling = {"chunk_pooling": {"type": "categorical", "choices": ["mean", "attention"]}}
    space = write_space(tmp_path, {**SPACE, **pooling})
    output_dir = tmp_path / "out"
    extra = ["--test_file", str(files["test"]), "--do_train", "--do_predict", "--tune_thresholds"]
    extra += ["--long_documents", "chunk", "--max_seq_length", "6", "--chunk_stride", "1"]
    # Values the space samples, so that the command line's own trial, if best, sets them too.
    extra += ["--classifier_dropout", "0.2", "--label_correlation_weight", "0.1", "--chunk_pooling", "mean"]
    assert cli(search_args(tiny_bert_dir, output_dir, files, space, 2, *extra)) == 0
    best = yaml.safe_load((output_dir / "search" / "best_config.yaml").read_text())
    config = json.loads((output_dir / "config.json").read_text())
    assert (config["long_documents"], config["chunk_length"], config["chunk_pooling"]) == (
        "chunk", 6, best["chunk_pooling"]
    )  # fmt: skip
    assert config["classifier_dropout"] == pytest.approx(best["classifier_dropout"])
    assert config["label_correlation"] == pytest.approx(dict.fromkeys(TASKS, best["label_correlation_weight"]))
    assert config["thresholds"] is not None and (output_dir / "predictions.jsonl").is_file()
    card = (output_dir / "README.md").read_text()
    assert "from a search: Optuna study 'mtl-search', 2 trials, best: trial" in card
    assert f"learning_rate: {best['learning_rate']}" in card


# Kill and rerun; two workers on one study


def worker(tiny_bert_dir, output_dir, files, space, trials, *extra, threads: int | None = None) -> subprocess.Popen:
    """The search command in a process of its own, its log in a file beside the output directory (`log_file`); with
    `threads`, torch's threads capped (OMP_NUM_THREADS) for processes that run side by side."""
    args = search_args(tiny_bert_dir, output_dir, files, space, trials, *extra)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if threads:
        environment["OMP_NUM_THREADS"] = str(threads)
    log = open(log_file(output_dir), "a", encoding="utf-8")  # noqa: SIM115 (closed with the process, in `finish`)
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "run_mtl_classification.py"), *args],
                               stdout=log, stderr=subprocess.STDOUT, env=environment)  # fmt: skip
    process.log = log
    return process


def log_file(output_dir):
    return output_dir.parent / f"{output_dir.name}-{time.monotonic_ns()}.log"


def finish(process: subprocess.Popen, timeout: float = 600) -> None:
    """Wait for a worker; it must exit 0, else its log's end is the failure message."""
    process.wait(timeout=timeout)
    process.log.close()
    assert process.returncode == 0, open(process.log.name, encoding="utf-8").read()[-3000:]


def sqlite_states(path) -> list[str]:
    if not path.exists():
        return []
    with sqlite3.connect(path) as connection:
        try:
            return [state for (state,) in connection.execute("SELECT state FROM trials ORDER BY number")]
        except sqlite3.OperationalError:  # the tables are not made yet
            return []


def running_trial_is_training(path) -> bool:
    """Whether a trial is RUNNING with its parameters set: it is past its setup, training."""
    query = "SELECT COUNT(*) FROM trials JOIN trial_params USING (trial_id) WHERE state = 'RUNNING'"
    with sqlite3.connect(path) as connection:
        return connection.execute(query).fetchone()[0] > 0


def test_a_killed_search_resumes_and_retries_the_trial_cut_short(tiny_bert_dir, tmp_path, search_data):
    files, space = search_data
    output_dir = tmp_path / "out"
    slow = ("--num_train_epochs", "20")  # trials long enough (seconds) to be killed inside one
    process = worker(tiny_bert_dir, output_dir, files, space, 3, *slow)
    database = output_dir / "search" / "study.db"
    deadline = time.time() + 240
    while not (sqlite_states(database).count("COMPLETE") >= 1 and running_trial_is_training(database)):
        assert process.poll() is None and time.time() < deadline, open(process.log.name).read()[-3000:]
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.log.close()
    cut_short = sqlite_states(database).index("RUNNING")

    # The rerun's trials need not be long: the study, not the command line, says which trials are left.
    assert cli(search_args(tiny_bert_dir, output_dir, files, space, 3)) == 0
    trials = read_trials(output_dir)
    finished = [row for row in trials if row["state"] in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    assert trials[cut_short]["state"] == "FAIL"
    assert len(trials) == 4  # the three finished, and the one cut short, retried with its settings
    retried = trials[-1]
    assert retried["learning_rate"] == trials[cut_short]["learning_rate"]


def find_postgres_bin() -> str:
    from glob import glob
    from shutil import which

    found = which("initdb") or next(iter(sorted(glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None)
    assert found, "the PostgreSQL test needs a PostgreSQL server installed: apt-get install postgresql (.ci/run does)"
    return os.path.dirname(os.path.realpath(found))


@pytest.fixture
def postgres_url():
    """A PostgreSQL server of its own, started on 127.0.0.1 in a temporary directory (as the postgres user when
    this runs as root: the server refuses root), stopped after the test."""
    import shutil
    import tempfile

    bin_dir = find_postgres_bin()
    directory = tempfile.mkdtemp(prefix="mtl-pg-", dir="/tmp")
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = os.path.join(directory, "data")
    subprocess.run([*as_user, f"{bin_dir}/initdb", "-D", data, "-U", "postgres", "--auth=trust"], check=True,
                   capture_output=True)  # fmt: skip
    options = f"-h 127.0.0.1 -p {port} -k {directory}"
    subprocess.run([*as_user, f"{bin_dir}/pg_ctl", "-D", data, "-o", options, "-l", f"{directory}/log", "-w",
                    "start"], check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


def run_two_workers(tiny_bert_dir, tmp_path, files, space, output_dirs, *shared) -> list[subprocess.Popen]:
    # One thread each, as the data-parallel tests run theirs: two processes of two threads oversubscribe two cores.
    workers = [worker(tiny_bert_dir, output_dir, files, space, 5, "--num_train_epochs", "3", *shared, threads=1)
               for output_dir in output_dirs]  # fmt: skip
    for process in workers:
        finish(process)
    return workers


def check_exactly_five_trials_by_two_workers(study, workers: list[subprocess.Popen]) -> None:
    trials = study.get_trials()
    states = [trial.state.name for trial in trials]
    assert len(states) == 5 and set(states) <= {"COMPLETE", "PRUNED"}, states  # exactly N: none extra, none waiting
    assert len({trial.user_attrs["worker"] for trial in trials}) == 2  # both workers ran trials
    assert len({trial.params["learning_rate"] for trial in trials}) == 5  # each worker sampled with its own seed
    # Each worker's progress lines: the trials it ran itself, each once, finished, whatever the other was running.
    for process in workers:
        logged = re.findall(r"Search: trial (\d+) (\w+)", open(process.log.name, encoding="utf-8").read())
        ran = sorted(trial.number for trial in trials if trial.user_attrs["worker"].endswith(f":{process.pid}"))
        assert sorted(int(number) for number, _ in logged) == ran
        assert {state for _, state in logged} <= {"COMPLETE", "PRUNED"}


def test_two_workers_on_postgresql_finish_exactly_n_trials(tiny_bert_dir, tmp_path, search_data, postgres_url):
    """Two processes, each with its own output directory (as on two machines), on one study in PostgreSQL."""
    import optuna

    files, space = search_data
    output_dirs = [tmp_path / "worker0", tmp_path / "worker1"]
    shared = ("--hpo_storage", postgres_url, "--hpo_study_name", "two-workers")
    workers = run_two_workers(tiny_bert_dir, tmp_path, files, space, output_dirs, *shared)
    study = optuna.load_study(study_name="two-workers", storage=postgres_url)
    check_exactly_five_trials_by_two_workers(study, workers)
    assert all(len(read_trials(output_dir)) == 5 for output_dir in output_dirs)  # each reports the whole study


def test_two_workers_on_the_default_sqlite_study_finish_exactly_n_trials(tiny_bert_dir, tmp_path, search_data):
    """Two processes on one machine given the same output directory share its SQLite study."""
    import optuna

    files, space = search_data
    output_dir = tmp_path / "out"
    workers = run_two_workers(tiny_bert_dir, tmp_path, files, space, [output_dir, output_dir])
    storage = f"sqlite:///{output_dir / 'search' / 'study.db'}"
    check_exactly_five_trials_by_two_workers(optuna.load_study(study_name="mtl-search", storage=storage), workers)


# Ray Tune


def test_ray_tune_search_on_a_local_ray_runtime(tiny_bert_dir, tmp_path, search_data, monkeypatch):
    """The same search through the Trainer's Ray Tune integration and ASHA, on a local Ray runtime of 2 CPUs; the
    trainer (ours, with its callbacks) is pickled to Ray's workers.

    In a process of its own, as the command runs: a process that has trained before holds accelerate's shared
    GradientState with weak references to its old data loaders, which do not pickle."""
    files, space = search_data
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    output_dir = tmp_path / "out"
    finish(worker(tiny_bert_dir, output_dir, files, space, 2, "--hpo_backend", "ray"))
    trials = read_trials(output_dir)
    assert len(trials) == 2 and {row["state"] for row in trials} <= {"COMPLETE", "PRUNED"}
    best = yaml.safe_load((output_dir / "search" / "best_config.yaml").read_text())
    best_trial = max(trials, key=lambda row: float(row["objective"]))
    assert best["learning_rate"] == pytest.approx(float(best_trial["learning_rate"]))
    # The first trial runs the command line's settings, its classifier dropout kept at the encoder's own.
    assert [(float(row["learning_rate"]), row["classifier_dropout"]) for row in trials].count((1e-3, "")) == 1
    assert "Ray Tune search 'mtl-search' (ASHA), 2 trials" in (output_dir / "search" / "report.md").read_text()


@pytest.fixture
def ray_cluster(tmp_path, monkeypatch):
    """A Ray cluster of two nodes, started as Ray documents for several machines: `ray start --head` on one,
    `ray start --address HEAD:PORT` on each other, all with one token of Ray's token authentication; here both on this
    machine. The head offers no CPU, so that every trial runs on the node that joined. Its files are in a temporary
    directory of its own: in Ray's default one, the address it leaves behind would be the cluster that a later
    `ray.init()` on this machine joins. Stopped after the test."""
    import secrets
    import shutil
    import tempfile

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray, port = os.path.join(os.path.dirname(sys.executable), "ray"), free_port()
    address = f"127.0.0.1:{port}"
    directory = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths lie under it
    node = ["--block", "--disable-usage-stats", "--object-store-memory", str(100 * 2**20), f"--temp-dir={directory}"]
    head = ["--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false"]
    log = open(tmp_path / "ray-nodes.log", "w", encoding="utf-8")  # noqa: SIM115 (closed after the nodes stop)
    nodes = []
    try:
        for options in (head, [f"--address={address}", "--num-cpus=2"]):
            nodes.append(subprocess.Popen([ray, "start", *options, *node], stdout=log, stderr=subprocess.STDOUT))
            wait_for_ray_nodes(ray, address, len(nodes))
        yield address
    finally:
        for process in nodes:
            process.terminate()
        for process in nodes:
            process.wait(timeout=60)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)


def wait_for_ray_nodes(ray: str, address: str, count: int, timeout: float = 120) -> None:
    """Until `ray status` lists `count` active nodes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = subprocess.run([ray, "status", "--address", address], capture_output=True, text=True)
        if status.stdout.count(" node_") == count:
            return
        time.sleep(2)
    raise AssertionError(f"the Ray cluster at {address} never had {count} nodes: {status.stdout}{status.stderr}")


def test_ray_tune_search_across_the_nodes_of_a_ray_cluster(tiny_bert_dir, tmp_path, search_data, ray_cluster,
                                                          monkeypatch):  # fmt: skip
    """The search command on the head of a cluster started with `ray start` (RAY_ADDRESS): its trials run on the
    other node, the only one with CPUs, and finish."""
    files, space = search_data
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster)
    output_dir = tmp_path / "out"
    process = worker(tiny_bert_dir, output_dir, files, space, 2, "--hpo_backend", "ray")
    finish(process)
    assert "Connecting to existing Ray cluster" in open(process.log.name, encoding="utf-8").read()
    trials = read_trials(output_dir)
    assert len(trials) == 2 and {row["state"] for row in trials} <= {"COMPLETE", "PRUNED"}
    assert process.pid not in {int(row["worker"].split(":")[1]) for row in trials}  # host:pid of Ray's worker
    assert (output_dir / "search" / "best_config.yaml").exists()


def test_ray_gets_the_datasets_by_value(tmp_path):
    """Ray pickles the trainer to other machines: its datasets must carry their rows, not the paths of Arrow cache
    files that only this machine has."""
    import pickle

    import datasets

    rows = [{"text": f"text {i}", "labels": [i % 2]} for i in range(20)]
    read = datasets.load_dataset("json", data_files=str(write_jsonl(tmp_path / "rows.jsonl", rows)), split="train",
                                 cache_dir=str(tmp_path / "cache"))  # fmt: skip
    trainer = SimpleNamespace(train_dataset=read.select(range(12)), eval_dataset=read.select(range(12, 20)))
    assert str(tmp_path / "cache") in str(pickle.dumps(trainer.train_dataset))  # as read: pickled as a path
    datasets_by_value(trainer)
    for dataset, expected in ((trainer.train_dataset, rows[:12]), (trainer.eval_dataset, rows[12:])):
        pickled = pickle.dumps(dataset)
        assert str(tmp_path / "cache") not in str(pickled)
        assert pickle.loads(pickled).to_list() == expected
