#!/usr/bin/env python
"""Average the weights of finished GoEmotions runs into one model ("model soup") and score it as the CLI does.

Runs fine-tuned from the same encoder with the same seed tend to sit in one basin of the loss, so their mean is itself
a working model (Wortsman et al., 2022, "Model soups"): one model of the same size at inference, at the training cost
of all the runs averaged. The averaged model gets its thresholds tuned on the validation split and is scored on the
test split by `run_mtl_classification.py` (no training), beside each run's own test figures.

    python bench/goemotions.py --loss_type asl ...   # the runs, first
    python bench/weight_average.py                   # writes bench/results/weight_average.json
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
from goemotions import ours_name, run_directory
from harness import CONFIG, RESULTS, RUNS, f1_scores, read_json, run_cli, write_results
from safetensors.torch import load_file, save_file

# bench/goemotions.py's three 3-epoch ASL runs at 1e-4: (task weights, speed defaults).
ASL_RUNS = [
    str(run_directory(ours_name("asl", weights, speed_defaults), 3, 1e-4).relative_to(RUNS))
    for weights, speed_defaults in ((None, False), (None, True), ("ekman=2", True))
]


def read_test_scores(output_dir: Path) -> dict:
    return f1_scores(read_json(output_dir / "all_results.json"), suffixes=("", "_at_0.5"))


def average_weights(runs: list[Path], output_dir: Path) -> None:
    """Write the mean of the runs' weights to output_dir, with the first run's config, code and tokenizer."""
    states = [load_file(run / "model.safetensors") for run in runs]
    mean = {name: torch.stack([state[name].float() for state in states]).mean(dim=0) for name in states[0]}
    output_dir.mkdir(parents=True, exist_ok=True)
    for path in runs[0].iterdir():
        if path.name.startswith(("config", "tokenizer")) or path.suffix == ".py":
            shutil.copy(path, output_dir / path.name)
    save_file(mean, output_dir / "model.safetensors", metadata={"format": "pt"})


def score(model_dir: Path, output_dir: Path) -> dict:
    """Thresholds tuned on validation, then test F1, by the CLI without training."""
    run_cli(output_dir, CONFIG, "--model_name_or_path", model_dir, "--do_train", "false", rerun=True)
    return read_test_scores(output_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=ASL_RUNS, help="Run directories under bench/runs/.")
    parser.add_argument("--name", default="asl-e3-lr0.0001", help="The averaged model's directory name.")
    parser.add_argument("--output", type=Path, default=RESULTS / "weight_average.json")
    args = parser.parse_args()
    runs = [RUNS / run for run in args.runs]
    model_dir = RUNS / "weight-average" / args.name
    average_weights(runs, model_dir / "model")
    summary = {
        "averaged": score(model_dir / "model", model_dir / "scored"),
        "runs": {name: read_test_scores(run) for name, run in zip(args.runs, runs)},
    }
    write_results(args.output, summary)
    print(json.dumps(summary["averaged"], indent=2))


if __name__ == "__main__":
    main()
