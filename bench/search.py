#!/usr/bin/env python
"""Hyper-parameter search for the GoEmotions benchmark: many runs at once, for a machine with a GPU.

One process per run, `--parallel` of them sharing the machine: a 22M-parameter model at batch size 32 leaves a GPU
mostly idle, so runs side by side add up (on an H200: one process alone about 44 optimizer steps/s, sixteen at once
about 10 each, 155 together). A 3-epoch run is 4,071 steps, a 5-epoch one 6,785; the whole grid below about 82,000,
so on a GPU lent for minutes pick a few runs with `--only`. Two kinds of run:
- ours: `run_mtl_classification.py examples/goemotions/config.yaml` with the options of OURS below, in
  bench/runs/search/<name>/ (thresholds tuned on the validation split, as always);
- stock: bench/goemotions.py's single-task stock runs for the epochs and learning rates of STOCK below, in their
  usual directories, so that bench/goemotions.py finds them done.

A finished run is not repeated. Runs are ranked by validation macro-F1 averaged over the three tasks; the test
figures are reported beside them and are never used to choose.

    python bench/search.py --parallel 12    # writes bench/results/search.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from goemotions import run_directory
from harness import (
    CONFIG,
    ENCODER_AS_IT_COMES,
    REPO,
    RESULTS,
    RUNS,
    TASKS,
    cli_command,
    f1_scores,
    read_json,
    write_results,
)

SEARCH_DIR = RUNS / "search"
# Our runs: name -> CLI options on top of the example config (3 epochs at 1e-4 is the CPU benchmark's setting).
ASL = ["--loss_type", "asl"]
OURS = {
    "asl-e3-lr1e-4": [*ASL, "--num_train_epochs", "3"],
    "asl-e3-lr1e-4-seed1": [*ASL, "--num_train_epochs", "3", "--seed", "1"],
    "asl-e3-lr1e-4-seed2": [*ASL, "--num_train_epochs", "3", "--seed", "2"],
    "asl-e3-lr1e-4-ekman2": [*ASL, "--num_train_epochs", "3", "--task_weights", "ekman=2"],
    "asl-e3-lr1e-4-dropout-embeddings": [*ASL, "--num_train_epochs", "3", *ENCODER_AS_IT_COMES],
    "asl-e3-lr2e-4": [*ASL, "--num_train_epochs", "3", "--learning_rate", "2e-4"],
    "asl-e3-lr5e-5": [*ASL, "--num_train_epochs", "3", "--learning_rate", "5e-5"],
    "asl-e5-lr1e-4": [*ASL, "--num_train_epochs", "5"],
    "asl-e5-lr1e-4-ekman2": [*ASL, "--num_train_epochs", "5", "--task_weights", "ekman=2"],
    "bce-e5-lr1e-4": ["--loss_type", "bce", "--num_train_epochs", "5"],
}
# Stock runs: (epochs, learning rate) for which to run the three single-task stock runs.
STOCK = [(3, 1e-4), (5, 1e-4)]


def ours_command(options: list[str], output_dir: Path) -> list[str]:
    # No checkpoints or evaluation during training: a search run is short, and only its end is compared.
    return cli_command(
        CONFIG, *options, "--output_dir", output_dir, "--eval_strategy", "no", "--save_strategy", "no",
        "--disable_tqdm", "true",
    )  # fmt: skip


def jobs() -> list[tuple[str, list[str], Path]]:
    """(name, command, file that exists once the run is done), ours first."""
    ours = [
        (name, ours_command(options, SEARCH_DIR / name), SEARCH_DIR / name / "all_results.json")
        for name, options in OURS.items()
    ]
    stock = []
    for epochs, learning_rate in STOCK:
        for task in TASKS:
            name = f"stock-{task}-e{epochs:g}-lr{learning_rate:g}"
            # bench/goemotions.py's run; its report, which would name one setting of ours, is kept beside the log.
            command = [
                sys.executable, str(REPO / "bench" / "goemotions.py"), "--only", f"stock-{task}",
                "--epochs", str(epochs), "--learning_rate", str(learning_rate),
                "--output", str(SEARCH_DIR / "logs" / f"{name}.json"),
            ]  # fmt: skip
            stock.append((name, command, run_directory(f"stock-{task}", epochs, learning_rate) / "results.json"))
    return ours + stock


def run_all(pending: list[tuple[str, list[str], Path]], parallel: int) -> None:
    """At most `parallel` processes at a time, each with its share of the CPU threads; logs beside the runs."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // parallel))}
    (SEARCH_DIR / "logs").mkdir(parents=True, exist_ok=True)
    running = []
    while pending or running:
        while pending and len(running) < parallel:
            name, command, _ = pending.pop(0)
            with open(SEARCH_DIR / "logs" / f"{name}.log", "w") as log:  # the child keeps its own copy
                running.append((name, subprocess.Popen(command, cwd=REPO, env=environment, stdout=log, stderr=log)))
        time.sleep(5)
        for name, process in [job for job in running if job[1].poll() is not None]:
            print(f"{name}: exit {process.returncode}", flush=True)
            running.remove((name, process))
            write_summary()


def ours_figures(results: dict) -> dict:
    validation, test = f1_scores(results, split="eval"), f1_scores(results, suffixes=("", "_at_0.5"))
    figures = {task: {**validation[task], **test[task]} for task in TASKS}
    figures["validation_macro_f1_mean"] = statistics.mean(figures[task]["eval_macro_f1"] for task in TASKS)
    figures["train_runtime_s"] = round(results["train_runtime"])
    return figures


def write_summary() -> dict:
    ours = {
        name: ours_figures(read_json(SEARCH_DIR / name / "all_results.json"))
        for name in OURS
        if (SEARCH_DIR / name / "all_results.json").exists()
    }
    all_jobs = jobs()
    stock = {name: read_json(done) for name, _, done in all_jobs if name.startswith("stock-") and done.exists()}
    summary = {
        "ours_by_validation_macro_f1": dict(
            sorted(ours.items(), key=lambda item: item[1]["validation_macro_f1_mean"], reverse=True)
        ),
        "stock": stock,
        "pending": [name for name, _, done in all_jobs if not done.exists()],
    }
    return write_results(RESULTS / "search.json", summary, gpu=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, default=1, help="Runs at a time.")
    parser.add_argument("--only", nargs="+", help="Names of the runs to do (default: all).")
    args = parser.parse_args()
    pending = [job for job in jobs() if not job[2].exists() and (not args.only or job[0] in args.only)]
    run_all(pending, args.parallel)
    print(json.dumps(write_summary(), indent=2))


if __name__ == "__main__":
    main()
