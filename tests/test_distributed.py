"""Data parallel on the CPU: the CLI under `torchrun --nproc_per_node 2` (gloo) trains to the weights of a 1-process
run with the same global batch, and its evaluation and predictions cover each row exactly once; so too with texts read
in chunks, each text's chunks in one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import base_args, free_port, list_records, read_predictions, write_jsonl
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[1]


# Chunks of 3 tokens overlapping by 1 (5 with [CLS] and [SEP]): the texts make 1 or 2 chunks each. Pooled by
# attention, whose learned weights must be trained alike in both runs too.
CHUNKS = ("--long_documents", "chunk", "--max_seq_length", "5", "--chunk_stride", "1", "--chunk_pooling", "attention")


def run(processes: int, checkpoint, tmp_path: Path, output_dir: Path, *extra) -> subprocess.CompletedProcess:
    """Global batch 8 either way: 1 process × 8 or 2 processes × 4, in file order so both see the same batches.
    Validation has 7 rows and test 5, with evaluation batches of 2: the last batches are uneven across processes."""
    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        write_jsonl(data / "train.jsonl", list_records(16))
        write_jsonl(data / "validation.jsonl", list_records(7, offset=3))
        write_jsonl(data / "test.jsonl", list_records(5, offset=1))
    args = base_args(
        checkpoint, output_dir,
        "--train_file", str(data / "train.jsonl"), "--validation_file", str(data / "validation.jsonl"),
        "--test_file", str(data / "test.jsonl"), "--task_columns", "mood,topic",
        "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "2",
        "--per_device_train_batch_size", str(8 // processes), "--per_device_eval_batch_size", "2",
        "--train_sampling_strategy", "sequential", "--seed", "3", *extra,
    )  # fmt: skip
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                f"--master_port={free_port()}"]  # fmt: skip
    command = [*launcher, str(REPO_ROOT / "run_mtl_classification.py"), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


@pytest.fixture(scope="module", params=["bert", "roberta", "bert-chunks"])
def runs(request, tiny_bert_dir, tiny_encoder_dirs, tmp_path_factory) -> dict:
    """1- and 2-process runs of one encoder (BERT, RoBERTa for another family, and BERT reading texts in chunks) by
    process count, and the checkpoint they started from under "checkpoint"."""
    encoder = request.param.removesuffix("-chunks")
    checkpoint = tiny_bert_dir if encoder == "bert" else tiny_encoder_dirs[encoder]
    tmp_path = tmp_path_factory.mktemp(f"ddp-{request.param}")
    outputs = {}
    for processes in (1, 2):
        outputs[processes] = tmp_path / f"out-{processes}"
        completed = run(
            processes, checkpoint, tmp_path, outputs[processes], *CHUNKS * request.param.endswith("chunks")
        )
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    outputs["checkpoint"] = checkpoint
    return outputs


def test_two_processes_train_the_weights_of_one(runs):
    one, two = (load_file(runs[n] / "model.safetensors") for n in (1, 2))
    # Training moved the encoder: its first attention query differs from the checkpoint's (under its own prefix).
    checkpoint = load_file(runs["checkpoint"] / "model.safetensors")
    (query,) = [name for name in one if name.endswith("layer.0.attention.self.query.weight")]
    (initial,) = [tensor for name, tensor in checkpoint.items() if name.endswith(query.split(".", 1)[1])]
    assert not torch.allclose(one[query], initial)
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, atol=1e-5, rtol=1e-4, msg=name)
    state = json.loads((runs[2] / "trainer_state.json").read_text())
    assert state["global_step"] == 4  # 16 rows / global batch 8 × 2 epochs: each process saw its half


def test_evaluation_and_prediction_cover_each_row_once(runs):
    one, two = (json.loads((runs[n] / "all_results.json").read_text()) for n in (1, 2))
    assert two["eval_samples"] == 7 and two["test_samples"] == 5
    # Every F1 (overall, per task, macro and micro) from predictions gathered without the padding duplicates. The
    # Trainer's eval_loss is a mean of per-batch means, so it depends on how rows fall into batches: not compared.
    f1_keys = [key for key in one if key.startswith(("eval_", "test_")) and key.endswith("_f1")]
    assert len(f1_keys) == 12
    for key in f1_keys:
        assert two[key] == pytest.approx(one[key], abs=1e-6), key
    texts = [record["text"] for record in list_records(5, offset=1)]
    assert [row["text"] for row in read_predictions(runs[2])] == texts
    assert read_predictions(runs[2]) == read_predictions(runs[1])
