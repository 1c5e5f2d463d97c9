"""What the benchmarks share: the GoEmotions benchmark's paths and tasks, where a run keeps its output, running the
CLI, reading the F1 of its results, and writing a results file. The scripts beside it are thin over this module;
run them from the repository root as `python bench/<script>.py` (Python puts bench/ on the import path)."""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "goemotions"
CONFIG = REPO / "examples" / "goemotions" / "config.yaml"
RUNS = REPO / "bench" / "runs"
RESULTS = REPO / "bench" / "results"
TASKS = ["emotion", "ekman", "sentiment"]
AVERAGES = ("macro", "micro")
# Comparisons recorded before the speed defaults (no attention dropout, frozen word embeddings) trained the encoder
# as it comes, and keep doing so, so that they reproduce the figures recorded for them.
ENCODER_AS_IT_COMES = ["--attention_dropout", "0.1", "--freeze_word_embeddings", "false"]


def run_directory(group: str, name: str, seed: int | None = None) -> Path:
    """bench/runs/<group>/<name>[-seed<seed>]: each run its own directory, so a finished run is found, not redone."""
    return RUNS / group / (name + (f"-seed{seed}" if seed is not None else ""))


def cli_command(*arguments) -> list[str]:
    return [sys.executable, str(REPO / "run_mtl_classification.py"), *map(str, arguments)]


def run_cli(output_dir: Path, *arguments, quiet: bool = False, rerun: bool = False) -> dict:
    """`run_mtl_classification.py <arguments> --output_dir <output_dir>`, unless a run finished there before (or
    `rerun`); its all_results.json. `quiet` keeps the CLI's log off the terminal."""
    if rerun or not (output_dir / "all_results.json").exists():
        subprocess.run(cli_command(*arguments, "--output_dir", output_dir), check=True, cwd=REPO, capture_output=quiet)
    return read_json(output_dir / "all_results.json")


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def f1_scores(
    results: dict,
    tasks: list[str] = TASKS,
    split: str = "test",
    suffixes: tuple[str, ...] = ("",),
    key: str = "{split}_{average}_f1{suffix}",
    digits: int | None = None,
) -> dict[str, dict[str, float]]:
    """Per task, macro and micro F1 from a run's all_results.json, whose keys are `<split>_<task>_<average>_f1<suffix>`
    (suffix "": the run's thresholds, tuned when it tuned them; "_at_0.5": the fixed threshold), named by `key`."""

    def value(name: str) -> float:
        return results[name] if digits is None else round(results[name], digits)

    return {
        task: {
            key.format(split=split, average=average, suffix=suffix): value(f"{split}_{task}_{average}_f1{suffix}")
            for suffix in suffixes
            for average in AVERAGES
        }
        for task in tasks
    }


def logits_and_labels(model, tokenizer, split: str, max_length: int = 128):
    """One GoEmotions split's logits and multi-hot labels, both [rows, total_labels] numpy in the config's order."""
    import numpy as np  # as torch in gpu_model: only the scripts that load a model need it

    rows = [json.loads(line) for line in (DATA / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    logits = model.logits([row["text"] for row in rows], tokenizer, max_length=max_length).numpy()
    labels = np.zeros_like(logits)
    names = model.config.label_names
    for index, row in enumerate(rows):
        for task in model.config.tasks:
            labels[index, [names.index(f"{task}/{label}") for label in row[task]]] = 1
    return logits, labels


def mean_over_seeds(by_seed: list):
    """The element-wise mean of same-shaped nested dicts of scores (one per seed), rounded to 4 decimals."""
    first = by_seed[0]
    if isinstance(first, dict):
        return {key: mean_over_seeds([scores[key] for scores in by_seed]) for key in first}
    return round(sum(by_seed) / len(by_seed), 4)


def median_ratio(runs: list[dict], numerator: str, denominator: str, figure: str) -> float:
    """Median over paired runs ({variant: figures} each) of numerator's figure over denominator's."""
    return statistics.median(run[numerator][figure] / run[denominator][figure] for run in runs)


def write_results(path: Path, report: dict, gpu: bool = False) -> dict:
    """The report with the date and the machine, as JSON at `path`."""
    report = {**report, "date": datetime.date.today().isoformat(), "cpu": cpu_model()}
    if gpu:
        report["gpu"] = gpu_model()
    Path(path).write_text(json.dumps(report, indent=2) + "\n")
    return report


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return platform.machine()


def gpu_model() -> str | None:
    import torch  # only the speed and search benchmarks ask; the others run the CLI in subprocesses

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None
