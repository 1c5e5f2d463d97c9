"""Nothing lost: a run killed after a checkpoint resumes by itself and ends where an uninterrupted run ends; a finished
output_dir is not trained over by accident; a checkpoint of another model or label set is refused before training."""

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import MOODS, TOPICS, base_args, list_records, write_jsonl
from safetensors.torch import load_file

from run_mtl_classification import cli

REPO_ROOT = Path(__file__).resolve().parents[1]

# The CLI, with the process hanging right after its first complete checkpoint so that the test can SIGKILL it there.
HANG_AFTER_FIRST_CHECKPOINT = textwrap.dedent(f"""
    import sys, time
    sys.path.insert(0, {str(REPO_ROOT)!r})
    from transformers import Trainer
    import run_mtl_classification

    save_checkpoint = Trainer._save_checkpoint

    def save_then_hang(self, *args, **kwargs):
        save_checkpoint(self, *args, **kwargs)
        print("CHECKPOINT SAVED", flush=True)
        time.sleep(600)

    Trainer._save_checkpoint = save_then_hang
    sys.exit(run_mtl_classification.cli(sys.argv[1:]))
""")


def run_args(tiny_bert_dir, tmp_path, output_dir, *extra):
    """Two epochs of 4 steps, a checkpoint every 3 steps (the first one mid-epoch), thresholds tuned at the end."""
    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        write_jsonl(data / "train.jsonl", list_records(16))
        write_jsonl(data / "validation.jsonl", list_records(8, offset=3))
    return base_args(
        tiny_bert_dir, output_dir,
        "--train_file", str(data / "train.jsonl"), "--validation_file", str(data / "validation.jsonl"),
        "--task_columns", "mood,topic", "--do_train", "--do_eval", "--tune_thresholds", "--min_positives_to_tune", "1",
        "--num_train_epochs", "2", "--save_strategy", "steps", "--save_steps", "3", "--seed", "7",
        *extra,
    )  # fmt: skip


def kill_after_first_checkpoint(args: list[str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", HANG_AFTER_FIRST_CHECKPOINT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith("CHECKPOINT SAVED"):
            process.kill()  # SIGKILL: no handler, no cleanup
            break
    process.wait(timeout=60)
    assert process.returncode == -9, "".join(output[-30:])


def final_state(output_dir: Path) -> tuple[dict, dict, dict]:
    results = json.loads((output_dir / "all_results.json").read_text())
    config = json.loads((output_dir / "config.json").read_text())
    return load_file(output_dir / "model.safetensors"), results, config


def assert_same_run(resumed: Path, uninterrupted: Path) -> None:
    weights, results, config = final_state(resumed)
    expected_weights, expected_results, expected_config = final_state(uninterrupted)
    assert weights.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        torch.testing.assert_close(weights[name], tensor, atol=1e-5, rtol=1e-4, msg=name)
    for key, value in expected_results.items():
        if key.startswith("eval_") and "per_second" not in key and "runtime" not in key:
            assert results[key] == pytest.approx(value, abs=1e-4), key
    assert config["tasks"] == expected_config["tasks"] == {"mood": sorted(MOODS), "topic": sorted(TOPICS)}
    assert config["thresholds"] == expected_config["thresholds"]
    assert config["id2label"] == expected_config["id2label"]


@pytest.fixture(scope="module")
def uninterrupted_runs(tiny_bert_dir, tiny_encoder_dirs, tmp_path_factory):
    """Encoder name → (its checkpoint, the output_dir of its uninterrupted run), each run once for the module."""
    runs = {}

    def run(encoder: str) -> tuple[Path, Path]:
        if encoder not in runs:
            checkpoint = tiny_bert_dir if encoder == "bert" else tiny_encoder_dirs[encoder]
            output_dir = tmp_path_factory.mktemp(f"uninterrupted-{encoder}") / "out"
            assert cli(run_args(checkpoint, output_dir.parent, output_dir)) == 0
            runs[encoder] = checkpoint, output_dir
        return runs[encoder]

    return run


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_runs) -> Path:
    return uninterrupted_runs("bert")[1]


@pytest.mark.parametrize("encoder", ["bert", "roberta"])
def test_killed_run_resumes_from_its_newest_complete_checkpoint(encoder, uninterrupted_runs, tmp_path, caplog):
    checkpoint, uninterrupted = uninterrupted_runs(encoder)
    output_dir = tmp_path / "out"
    args = run_args(checkpoint, tmp_path, output_dir)
    kill_after_first_checkpoint(args)
    assert (output_dir / "checkpoint-3" / "trainer_state.json").is_file()
    assert not (output_dir / "config.json").exists()  # killed before the end
    # A checkpoint cut short by a kill while saving: weights half written, no trainer state.
    half_written = output_dir / "checkpoint-6"
    half_written.mkdir()
    (half_written / "model.safetensors").write_bytes(b"\x00" * 100)

    with caplog.at_level(logging.INFO):
        assert cli(args) == 0  # the same command again
    assert f"Skipping {half_written}" in caplog.text
    assert f"Resuming from {output_dir / 'checkpoint-3'}" in caplog.text
    assert_same_run(output_dir, uninterrupted)


def test_resume_from_an_explicit_checkpoint(tiny_bert_dir, tmp_path, uninterrupted):
    checkpoint = tmp_path / "kept-checkpoint"
    shutil.copytree(uninterrupted / "checkpoint-3", checkpoint)
    output_dir = tmp_path / "out"
    assert cli(run_args(tiny_bert_dir, tmp_path, output_dir, "--resume_from_checkpoint", str(checkpoint))) == 0
    assert_same_run(output_dir, uninterrupted)


def test_finished_output_dir_is_refused_unless_overwritten(tiny_bert_dir, tmp_path, capsys):
    output_dir = tmp_path / "out"
    args = run_args(tiny_bert_dir, tmp_path, output_dir, "--save_steps", "5")
    assert cli(args) == 0
    assert (output_dir / "checkpoint-5").is_dir()

    assert cli(args) == 2
    error = capsys.readouterr().err
    assert str(output_dir) in error and "--overwrite_output_dir" in error

    assert cli([*args, "--overwrite_output_dir", "--save_steps", "7"]) == 0
    assert sorted(path.name for path in output_dir.glob("checkpoint-*")) == ["checkpoint-7", "checkpoint-8"]


@pytest.mark.parametrize(
    "what, expected",
    [
        ("another label set", "labels only in the checkpoint ['glad'], only in this run's data ['angry']"),
        ("another architecture", "it holds a 'roberta' encoder, this run trains a 'bert' encoder"),
        ("another encoder size", "its hidden_size is 48"),
        ("not a checkpoint", "no readable config.json"),
        ("word embeddings trained now", "its optimizer state covers 40 parameter tensors, this run trains 41"),
    ],
)
def test_resuming_from_an_incompatible_checkpoint_fails_before_training(
    what, expected, tiny_bert_dir, tmp_path, uninterrupted, capsys
):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(uninterrupted / "checkpoint-3", checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    if what == "another label set":
        config = json.loads(json.dumps(config).replace("angry", "glad"))  # tasks, id2label and label2id alike
    elif what == "another architecture":
        config["model_type"] = "roberta"
    elif what == "another encoder size":
        config["hidden_size"] = 48
    (checkpoint / "config.json").write_text(json.dumps(config) if what != "not a checkpoint" else "{")
    output_dir = tmp_path / "out"

    extra = ["--freeze_word_embeddings", "false"] if what == "word embeddings trained now" else []
    assert cli(run_args(tiny_bert_dir, tmp_path, output_dir, "--resume_from_checkpoint", str(checkpoint), *extra)) == 2
    error = capsys.readouterr().err
    assert f"cannot resume from {checkpoint}" in error and expected in error
    assert not (output_dir / "checkpoint-6").exists()  # nothing trained
