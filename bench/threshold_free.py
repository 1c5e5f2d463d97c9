#!/usr/bin/env python
"""Threshold-free test scores of a seeded settings comparison: does a setting change how well the model ranks the
labels, or only where its probabilities sit against the threshold 0.5?

For each run of `bench/settings.py <comparison>` (its predictions.jsonl: every test text's probability for every
label), per task: macro and micro average precision (the area under the precision-recall curve, no threshold), and
how many labels the model predicts at 0.5 for each true one. Means over the seeds:

    python bench/threshold_free.py speed_defaults   # writes bench/results/speed_defaults_threshold_free.json
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from harness import DATA, RESULTS, mean_over_seeds, run_directory, write_results
from settings import COMPARISONS
from sklearn.metrics import average_precision_score


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def gold_matrix(rows: list[dict], task: str, names: list[str]) -> np.ndarray:
    """[texts, labels] multi-hot of the test split's labels for `task`."""
    index = {name: i for i, name in enumerate(names)}
    gold = np.zeros((len(rows), len(names)), dtype=np.int8)
    for row, example in zip(gold, rows):
        row[[index[label] for label in example[task]]] = 1
    return gold


def task_scores(gold: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    present = gold.sum(axis=0) > 0  # average precision is undefined for a label without test positives
    macro = average_precision_score(gold[:, present], probabilities[:, present], average="macro")
    return {
        "macro_average_precision": float(macro),
        "micro_average_precision": float(average_precision_score(gold, probabilities, average="micro")),
        "predicted_per_true_label_at_0.5": float((probabilities >= 0.5).sum() / gold.sum()),
    }


def run_scores(run_dir: Path, gold: dict[str, np.ndarray], names: dict[str, list[str]]) -> dict[str, dict]:
    predictions = read_jsonl(run_dir / "predictions.jsonl")
    scores = {}
    for task, task_gold in gold.items():
        probabilities = np.array([[row[task]["scores"][name] for name in names[task]] for row in predictions])
        scores[task] = task_scores(task_gold, probabilities)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    seeded = sorted(name for name, comparison in COMPARISONS.items() if "seeds" in comparison)
    parser.add_argument("comparison", choices=seeded)
    name = parser.parse_args().comparison
    comparison = COMPARISONS[name]
    names = json.loads((DATA / "labels.json").read_text())
    test = read_jsonl(DATA / "test.jsonl")
    gold = {task: gold_matrix(test, task, names[task]) for task in comparison["tasks"]}
    runs = {}
    for setting in comparison["settings"]:
        directories = [run_directory(name, setting, seed) for seed in comparison["seeds"]]
        finished = [directory for directory in directories if (directory / "predictions.jsonl").exists()]
        if len(finished) < len(directories):
            sys.exit(f"{name}: {setting} has not run for every seed yet; run bench/settings.py {name} first")
        runs[setting] = mean_over_seeds([run_scores(directory, gold, names) for directory in finished])
    report = {"comparison": name, "seeds": comparison["seeds"], "mean_over_seeds": runs}
    print(json.dumps(write_results(RESULTS / f"{name}_threshold_free.json", report), indent=2))


if __name__ == "__main__":
    main()
