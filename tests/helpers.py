"""Helpers shared by test modules: small multi-task data files, the CLI's common flags, a batch of random token
ids, and the fresh-interpreter remote-code reload."""

import csv
import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

MOODS, TOPICS = ["happy", "sad", "angry"], ["movie", "day"]
ROWS = [
    ("i love this movie", ["happy"], ["movie"]),
    ("i hate this day", ["sad", "angry"], ["day"]),
    ("good day", ["happy"], ["day"]),
    ("bad movie", ["angry"], ["movie"]),
    ("sad day not good", ["sad"], ["day"]),
    ("happy happy movie", ["happy"], ["movie"]),
    ("this is that", [], []),
    ("i love that day", ["happy"], ["day"]),
]


def rows(n=16, offset=0):
    return [ROWS[(i + offset) % len(ROWS)] for i in range(n)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def list_records(n=16, offset=0):
    return [{"text": text, "mood": mood, "topic": topic} for text, mood, topic in rows(n, offset)]


def write_csv(path: Path, header: list[str], records: list[list], delimiter: str = ",") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(records)
    return path


def wide_records(n=16, offset=0):
    return [
        [text, *(int(m in mood) for m in MOODS), *(int(t in topic) for t in TOPICS)]
        for text, mood, topic in rows(n, offset)
    ]


WIDE_HEADER = ["text", *(f"mood/{m}" for m in MOODS), *(f"topic/{t}" for t in TOPICS)]


# A random multi-task case for the metric tests: three tasks, each unannotated on its own rows.
METRIC_TASKS = {"a": ["x", "y", "z"], "b": ["p", "q"], "c": ["u", "v", "w", "t"]}
METRIC_SLICES = {"a": slice(0, 3), "b": slice(3, 5), "c": slice(5, 9)}


def random_case(seed: int, rows: int = 60, **options):
    """Random logits [rows, 9] and labels (a quarter of each task's rows not annotated) of METRIC_TASKS, and a config
    with random thresholds and `options`."""
    from mtl_model import MultiTaskConfig

    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(rows, 9))
    labels = (rng.random((rows, 9)) < 0.3).astype(np.float32)
    for task_slice in METRIC_SLICES.values():  # each task unannotated on a different random quarter of the rows
        labels[rng.random(rows) < 0.25, task_slice] = -100
    thresholds = {task: rng.uniform(0.3, 0.7, size=len(names)).tolist() for task, names in METRIC_TASKS.items()}
    return logits, labels, MultiTaskConfig(tasks=METRIC_TASKS, thresholds=thresholds, **options)


def base_args(tiny_bert_dir, output_dir, *extra):
    return [
        "--model_name_or_path", str(tiny_bert_dir),
        "--output_dir", str(output_dir),
        "--cache_dir", str(Path(output_dir).parent / "cache"),
        "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "4",
        "--learning_rate", "1e-3",
        "--num_train_epochs", "1",
        "--max_seq_length", "32",
        "--report_to", "none",
        "--logging_steps", "1",
        "--save_strategy", "no",
        *extra,
    ]  # fmt: skip


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_predictions(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]


def random_batch(batch_size=4, length=7):
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 100, (batch_size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 4:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


REMOTE_LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer, pipeline

    # The package may be installed in this environment: hide it, as on a machine that only has the saved files.
    class BlockProjectPackage:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "mtl_model":
                raise ImportError(f"{name} is hidden in this test")

    sys.meta_path.insert(0, BlockProjectPackage())
    directory, batch_file, results_file = sys.argv[1:4]
    try:
        import mtl_model  # noqa: F401
        raise SystemExit("mtl_model must not be importable here")
    except ImportError:
        pass
    batch = {key: torch.tensor(value) for key, value in json.load(open(batch_file)).items()}
    results = {}
    for auto_class in (AutoModel, AutoModelForSequenceClassification):
        model = auto_class.from_pretrained(directory, trust_remote_code=True).eval()
        with torch.no_grad():
            output = model(**batch, output_hidden_states=True)
        results[auto_class.__name__] = output.logits.tolist()
        results["hidden_states"] = len(output.hidden_states)
    config = AutoConfig.from_pretrained(directory, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(directory)  # no remote code needed, and no question asked
    classifier = pipeline("text-classification", model=directory, top_k=None, trust_remote_code=True)
    results["pipeline"] = classifier(["i love this movie", "bad day"])
    results["predict"] = model.predict(["i love this movie"], tokenizer)
    results["config"] = {"class": type(config).__name__, "tasks": config.tasks, "thresholds": config.thresholds}
    # What the README and the model card warn of: without remote code, the encoder's stock classifier.
    results["without_remote_code"] = type(AutoModelForSequenceClassification.from_pretrained(directory)).__name__
    json.dump(results, open(results_file, "w"))
    """
)


def assert_fresh_interpreter_reproduces_logits(directory: Path, model, tmp_path: Path) -> dict:
    """Load `directory` with remote code in a fresh interpreter where `mtl_model` cannot be imported, through
    AutoModel and AutoModelForSequenceClassification: both must give `model`'s logits exactly. Returns what the
    interpreter reported (logits, pipeline output, `predict`, config)."""
    batch = random_batch()
    with torch.no_grad():
        expected = model.eval()(**batch).logits
    batch_file = tmp_path / "batch.json"
    batch_file.write_text(json.dumps({key: value.tolist() for key, value in batch.items()}))
    script = tmp_path / "load.py"
    script.write_text(REMOTE_LOAD_SCRIPT)
    # Run from an empty directory so neither the repo nor an installed mtl_model package is importable.
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    completed = subprocess.run(
        [sys.executable, "-I", str(script), str(directory), str(batch_file), str(tmp_path / "results.json")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    # Loading as the README and the model card show never stops to ask whether to run the model's code.
    assert "Do you wish to run the custom code" not in completed.stdout + completed.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    for name in ("AutoModel", "AutoModelForSequenceClassification"):
        assert torch.equal(torch.tensor(results[name]), expected), name
    assert results["hidden_states"] == model.config.encoder.num_hidden_layers + 1  # embeddings, then each layer
    return results
