"""Hyper-parameter search through the Trainer's own `hyperparameter_search`, with Optuna (default) or Ray Tune.

Each trial trains a fresh model (`model_init`, which reads the trial's model options) on the training split and is
scored on the validation split by `--hpo_objective`, reported at every evaluation so that a pruner can stop it
early; the test split is never seen. With Optuna the study lives in a database (`--hpo_storage`, an SQLite file in
the output directory by default), so a search resumes after a kill and any number of processes, on any number of
machines, can work on one study. The results are written by `search_report`.
"""

import dataclasses
import fcntl
import logging
import os
import resource
import socket
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from .errors import ArgumentError
from .metrics import task_macro_f1_at_tuned_thresholds
from .search_report import FINISHED, TEST_SCORE, SearchResult, optuna_trial_rows, ray_trial_rows, write_search_report
from .search_space import KEEPS_COMMAND_LINE, TRAINING_FIELDS, SearchSpace, fixed_and_kept

logger = logging.getLogger(__name__)

SEARCH_DIR = "search"
STUDY_FILE = "study.db"
# A worker beats every HEARTBEAT_SECONDS while it runs a trial; a trial without a beat for GRACE_SECONDS (its
# process was killed, its machine lost) is marked failed and queued again with the same settings, at most
# MAX_RETRIES times.
HEARTBEAT_SECONDS = 5
GRACE_SECONDS = 20
MAX_RETRIES = 2


@dataclass(frozen=True)
class TrialSetup:
    """What a trial's settings set beyond the model (which `model_init` builds from them): the TrainingArguments
    fields of the space, and our heads' learning rate. An entry a trial does not sample (its `when` does not hold)
    keeps the run's own value, not the previous trial's."""

    space: SearchSpace
    base_training: dict
    base_head_learning_rate: float | None

    def training_arguments(self, trial) -> dict:
        settings = self.space.settings(trial)
        return {name: settings.get(name, self.base_training[name]) for name in self.base_training}

    def head_learning_rate(self, trial) -> float | None:
        return self.space.settings(trial).get("head_learning_rate", self.base_head_learning_rate)

    @classmethod
    def of(cls, space: SearchSpace, training_args, head_learning_rate: float | None) -> "TrialSetup":
        fields = [name for name in space.names if name in TRAINING_FIELDS]
        return cls(space, {name: getattr(training_args, name) for name in fields}, head_learning_rate)


class RecordTrialFacts(TrainerCallback):
    """Puts among an Optuna trial's user attributes, while it runs, the worker that runs it (host:pid) and, at the
    end of its training, the peak resident memory of that process so far (MiB; memory must not grow from trial to
    trial) and, given `test_scoring`, the trial's test macro-F1 (`test_macro_f1`), for the report alone."""

    def __init__(self, trainer, test_scoring: "TestScoring | None" = None):
        self.trainer = trainer
        self.test_scoring = test_scoring

    def on_train_begin(self, args, state, control, **kwargs):
        if hasattr(self.trainer.current_trial, "set_user_attr"):
            self.trainer.current_trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")

    def on_train_end(self, args, state, control, **kwargs):
        trial = self.trainer.current_trial
        if not hasattr(trial, "set_user_attr"):
            return
        if self.test_scoring is not None:
            trial.set_user_attr(TEST_SCORE, self.test_scoring.score(self.trainer))
        trial.set_user_attr("peak_rss_mib", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


@dataclass(frozen=True)
class TestScoring:
    """A trial's model on the test split as a training run would score it: thresholds tuned on the validation split
    (`min_positives`, `objective`: the run's --min_positives_to_tune and --threshold_objective), then the mean over
    tasks of test macro-F1. Reported beside the objective, never used to choose."""

    validation: object  # datasets.Dataset
    test: object
    min_positives: int
    objective: str

    def score(self, trainer) -> float:
        validation, test = (trainer.predict(rows, metric_key_prefix="trial") for rows in (self.validation, self.test))
        per_task = task_macro_f1_at_tuned_thresholds(
            (validation.predictions, validation.label_ids), (test.predictions, test.label_ids), trainer.model.config,
            self.min_positives, self.objective,
        )  # fmt: skip
        return float(sum(per_task.values()) / len(per_task))


def search_directory(output_dir: str) -> Path:
    return Path(output_dir) / SEARCH_DIR


def direction_of(objective: str) -> str:
    """As TrainingArguments reads `metric_for_best_model`: a loss is minimised, anything else maximised."""
    return "minimize" if objective.endswith("loss") else "maximize"


def trial_arguments(training_args, directory: Path):
    """The run's TrainingArguments for a trial: evaluated (scored), no checkpoints (the best settings are retrained,
    not a trial's weights), no test predictions, nothing pushed, its files under the search directory."""
    return dataclasses.replace(
        training_args,
        output_dir=str(directory / "trials"),
        save_strategy="no",
        load_best_model_at_end=False,
        do_eval=True,
        do_predict=False,
        push_to_hub=False,
        report_to=[],
    )


def storage_url(search_args, output_dir: str) -> str:
    return search_args.hpo_storage or f"sqlite:///{(search_directory(output_dir) / STUDY_FILE).resolve()}"


def run_search(
    search_args,
    training_args,
    space: SearchSpace,
    head_learning_rate: float | None,
    command_line: dict,
    make_trainer: Callable,
    given: dict,
    test_scoring: TestScoring | None = None,
) -> SearchResult:
    """Run the search and write its report; the study's first trial runs the command line's own settings
    (`command_line`: the value of each flag of the space, `search_space.command_line_values`). `make_trainer(args,
    setup)` builds a `MultiTaskTrainer` with a `model_init` that builds the model of a trial's settings, and `setup`
    as its `trial_setup`. `given`: the arguments the user gave, for best_config.yaml
    (`search_report.given_values`); `test_scoring`: each trial scored on the test split too (`--hpo_score_test`,
    Optuna only)."""
    directory = search_directory(training_args.output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    objective = search_args.hpo_objective.removeprefix("eval_")
    setup = TrialSetup.of(space, training_args, head_learning_rate)
    trainer = make_trainer(trial_arguments(training_args, directory), setup)
    search = dict(
        hp_space=setup.training_arguments if search_args.hpo_backend == "optuna" else None,
        compute_objective=lambda metrics: metrics[f"eval_{objective}"],
        direction=direction_of(objective),
    )
    first_trial = space.command_line_trial(command_line)
    if search_args.hpo_backend == "ray":
        (result, rows), study = run_ray_search(trainer, search_args, space, first_trial, directory, search), None
    else:
        url = storage_url(search_args, training_args.output_dir)
        trainer.add_callback(RecordTrialFacts(trainer, test_scoring))
        result, rows, study = run_optuna_search(trainer, search_args, url, search, first_trial)
    write_search_report(directory, rows, result, given, study)
    logger.info("Search done: %s", result.description)
    return result


# Optuna


def queued_trials_only_storage(url: str):
    """Optuna's RDB storage (SQLite, PostgreSQL, MySQL …) where a trial is created only into the queue (WAITING,
    from a template: `enqueue_trial`, and the retry of a failed trial), never on the spot for the sampler.

    `study.optimize` then runs queued trials only, and processes take a queued trial atomically (a row update that
    only one of them wins), so workers sharing a study together finish exactly the N trials queued. Optuna's own
    `MaxTrialsCallback` counts after the fact, and concurrent workers overshoot it. The hook is the storage's
    `_create_new_trial`, the one method every creation goes through (the cached storage wrapping it calls it).
    """
    import optuna

    class QueuedTrialsOnly(optuna.storages.RDBStorage):
        def _create_new_trial(self, study_id, template_trial=None):
            if template_trial is None:
                raise StudyQueueEmpty
            return super()._create_new_trial(study_id, template_trial)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since Optuna 2.9
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
        return QueuedTrialsOnly(
            url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS, heartbeat_stale_trial_callback=retry
        )


class StudyQueueEmpty(Exception):
    """Every trial of the study is taken: nothing for this worker to start."""


def run_optuna_search(trainer, search_args, url: str, search: dict, first_trial: dict) -> tuple:
    """The search through Optuna, `first_trial` (`SearchSpace.command_line_trial`) first in a new study: the
    result, the trials' rows and the study."""
    import optuna

    name, wanted = search_args.hpo_study_name, search_args.hpo_trials
    # Workers starting at once would race to create Optuna's tables, the study and its queue: one at a time.
    with study_lock(url, name):
        storage = queued_trials_only_storage(url)
        study = optuna.create_study(storage=storage, study_name=name, direction=search["direction"],
                                    load_if_exists=True)  # fmt: skip
        check_study_objective(study, search_args.hpo_objective)
        top_up_queue(study, wanted, first_trial)
        worker = join_study(study)
    # Each worker its own seed: workers of one seed would sample the same settings side by side.
    sampler = optuna.samplers.TPESampler(seed=trainer.args.seed + worker)
    options = dict(storage=storage, study_name=name, load_if_exists=True, sampler=sampler,
                   pruner=build_pruner(search_args.hpo_pruner))  # fmt: skip
    while True:
        fail_stale_trials(study)
        counts = state_counts(study)
        # N finished is the end, even with trials still queued (by an earlier run of a larger N): they wait for one.
        if sum(counts.get(state, 0) for state in FINISHED) >= wanted:
            break
        if counts.get("WAITING"):
            started = time.time()
            try:
                trainer.hyperparameter_search(backend="optuna", n_trials=1, **search, **options)
            except StudyQueueEmpty:  # another worker took the last queued trial first
                continue
            log_progress(study, wanted, time.time() - started)
        elif counts.get("RUNNING"):  # another worker's, or a killed one's that is not stale yet
            time.sleep(HEARTBEAT_SECONDS)
        else:
            raise ArgumentError(f"study {name!r}: trials failed beyond {MAX_RETRIES} retries; see the log and "
                                f"{url}")  # fmt: skip
    best = study.best_trial
    result = SearchResult(
        best.params, str(best.number), best.value,
        f"Optuna study {name!r}, {wanted} trials, best: trial {best.number} ({search_args.hpo_objective} "
        f"{best.value:.4f} on the validation split)",
    )  # fmt: skip
    return result, optuna_trial_rows(study), study


def fail_stale_trials(study) -> None:
    """Optuna's own: a trial without a heartbeat for the grace period (its worker was killed) is failed and queued
    again. `study.optimize` does it before each trial too, but a worker whose queue is empty must do it itself."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def check_study_objective(study, objective: str) -> None:
    """One study, one objective: the first worker records it; another objective on the same study is an error."""
    recorded = study.user_attrs.get("objective")
    if recorded is None:
        study.set_user_attr("objective", objective)
    elif recorded != objective:
        raise ArgumentError(f"--hpo_objective {objective}: study {study.study_name!r} scores trials by {recorded}; "
                            "give that objective, or another --hpo_study_name")  # fmt: skip


def join_study(study) -> int:
    """How many workers joined the study before this one (0 for the first), counted in the study itself. Called
    under `study_lock`."""
    joined = study.user_attrs.get("workers_joined", 0)
    study.set_user_attr("workers_joined", joined + 1)
    return joined


def top_up_queue(study, wanted: int, first_trial: dict) -> None:
    """Queue trials until the study holds `wanted` trials that are finished, running or queued (a failed one is
    replaced), a new study's first being `first_trial`: its values fixed, its None entries kept at the command
    line's (a user attribute: Optuna fixes no None). Called under `study_lock`: two workers starting at once must
    not both top it up."""
    counts = state_counts(study)
    if not counts and wanted:
        fixed, kept = fixed_and_kept(first_trial)
        study.enqueue_trial(fixed, user_attrs={KEEPS_COMMAND_LINE: kept})
        counts["WAITING"] = 1
    for _ in range(wanted - sum(counts.get(state, 0) for state in (*FINISHED, "RUNNING", "WAITING"))):
        study.enqueue_trial({})  # no fixed parameter: the sampler suggests them all when the trial starts


@contextmanager
def study_lock(url: str, study_name: str):
    """Hold a lock on the study across processes: a file lock beside an SQLite database (one machine), the
    database's own advisory lock for PostgreSQL and MySQL (any machine), on a connection of its own."""
    if url.startswith("sqlite"):
        with open(f"{url.split(':///', 1)[1]}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(hashtext(:name))"), {"name": study_name})
            yield
            connection.execute(text("SELECT pg_advisory_unlock(hashtext(:name))"), {"name": study_name})
        elif connection.dialect.name == "mysql":
            connection.execute(text("SELECT GET_LOCK(:name, -1)"), {"name": study_name})
            yield
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": study_name})
        else:
            raise ArgumentError(f"--hpo_storage {url}: use SQLite, PostgreSQL or MySQL for a study")
    engine.dispose()


def state_counts(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def build_pruner(name: str):
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    # No pruning before 3 trials have finished, nor in a trial's first evaluation: too little to compare with.
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


def log_progress(study, wanted: int, seconds: float) -> None:
    """One line per trial this worker ran: its state, objective and time, and the best so far."""
    trials = study.get_trials(deepcopy=False)
    finished = [trial for trial in trials if trial.state.name in FINISHED]
    mine = max((trial for trial in trials if trial.state.name != "WAITING"), key=lambda trial: trial.datetime_start)
    value = "" if mine.value is None else f" {mine.value:.4f}"
    best = study.best_trial if any(trial.state.name == "COMPLETE" for trial in trials) else None
    logger.info("Search: trial %d %s%s in %.0f s, peak RSS %s MiB; %d/%d finished; best: trial %s%s", mine.number,
                mine.state.name, value, seconds, mine.user_attrs.get("peak_rss_mib", "?"), len(finished), wanted,
                "-" if best is None else best.number, "" if best is None else f" {best.value:.4f}")  # fmt: skip


# Ray Tune


def run_ray_search(
    trainer, search_args, space: SearchSpace, first_trial: dict, directory: Path, search: dict
) -> tuple:
    """Through the Trainer's Ray Tune integration, ASHA scheduling the trials, `first_trial` the first (its None
    entries kept at the command line's value, `SearchSpace.settings`); Ray resumes an interrupted search of the same
    name in the same directory. Across machines: `ray start` as Ray documents, then this command with RAY_ADDRESS
    set."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    if trainer.args.eval_strategy == "no":
        raise ArgumentError("--hpo_backend ray schedules trials by their evaluations: give --eval_strategy steps "
                            "or epoch")  # fmt: skip
    mode = search["direction"][:3]
    # Ray warns that a point's value differs from a constant of the space: KEEPS_COMMAND_LINE does so by design.
    logging.getLogger("ray.tune.search.variant_generator").addFilter(
        lambda record: KEEPS_COMMAND_LINE not in record.getMessage()
    )
    # Ray Tune runs each trial in a directory of its own; paths given relative to this one must still hold there.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    datasets_by_value(trainer)
    storage = directory.resolve() / "ray"
    best = trainer.hyperparameter_search(
        backend="ray",
        hp_space=lambda _: space.ray_space(),
        compute_objective=search["compute_objective"],
        direction=search["direction"],
        n_trials=search_args.hpo_trials,
        scheduler=ASHAScheduler(metric="objective", mode=mode),
        search_alg=BasicVariantGenerator(points_to_evaluate=[space.ray_point(first_trial)]),
        storage_path=str(storage),
        name=search_args.hpo_study_name,
        resume="AUTO" if any((storage / search_args.hpo_study_name).glob("experiment_state-*.json")) else False,
        progress_reporter=tune.CLIReporter(metric_columns=["objective"], max_report_frequency=60),
    )
    result = SearchResult(
        space.settings(best.hyperparameters), best.run_id, best.objective,
        f"Ray Tune search {search_args.hpo_study_name!r} (ASHA), {search_args.hpo_trials} trials, best: trial "
        f"{best.run_id} ({search_args.hpo_objective} {best.objective:.4f} on the validation split)",
    )  # fmt: skip
    return result, ray_trial_rows(best.run_summary, space)


def datasets_by_value(trainer) -> None:
    """Puts the trainer's datasets in memory. Ray sends the trainer, pickled, to each trial's node; a dataset read
    from Arrow cache files pickles as those files' paths, which another machine lacks, while one in memory pickles
    its rows."""
    trainer.train_dataset, trainer.eval_dataset = (
        dataset.flatten_indices(keep_in_memory=True) for dataset in (trainer.train_dataset, trainer.eval_dataset)
    )
