#!/usr/bin/env python
"""Label structure after training: mix each Ekman and sentiment probability with its emotions' probabilities.

GoEmotions' Ekman and sentiment labels are groups of the 28 emotions (the data's hierarchy.json, written by
`examples/goemotions/build_dataset.py`), so the emotion head also scores them: a group's probability is the largest
of its emotions' (`max`) or the chance that any of them holds if they were independent (`noisy_or`). Each variant
mixes that with the task's own head, p = (1 - alpha) · p_head + alpha · p_group, tunes the thresholds on the
validation split as the CLI does, and reports validation and test macro-F1 (and test micro-F1). The choice would
have to be made on validation.

    python bench/goemotions.py --only ours --loss_type asl   # trains the model first, if not there yet
    python bench/label_groups.py                             # writes bench/results/label_groups.json
"""

import argparse
import os
from pathlib import Path

import numpy as np
from goemotions import run_directory
from harness import DATA, REPO, RESULTS, logits_and_labels, read_json, write_results
from transformers import AutoTokenizer

from mtl_model import BertForMultiTaskMultiLabel
from mtl_model.decoding import label_scores
from mtl_model.metrics import multitask_metrics, tune_thresholds

GROUPED_TASKS = ("ekman", "sentiment")
ALPHAS = (0.25, 0.5, 0.75, 1.0)


def emotions_under(hierarchy: dict[str, list[str]], node: str) -> list[str]:
    """The emotions below a "task/label" node of the hierarchy, by name."""
    if node.startswith("emotion/"):
        return [node.removeprefix("emotion/")]
    return [emotion for child in hierarchy[node] for emotion in emotions_under(hierarchy, child)]


def mixed_logits(logits: np.ndarray, config, hierarchy: dict, alpha: float, group_score: str) -> np.ndarray:
    """Each grouped task's probabilities mixed with its groups' emotion scores, back as logits [rows, labels]."""
    probabilities = label_scores(logits, config.decoding)
    emotions = probabilities[:, config.task_slices["emotion"]]  # [rows, 28]
    mixed = logits.astype(np.float64)
    for task in GROUPED_TASKS:
        columns = [
            [config.tasks["emotion"].index(name) for name in emotions_under(hierarchy, f"{task}/{label}")]
            for label in config.tasks[task]
        ]
        if group_score == "max":
            groups = np.stack([emotions[:, group].max(1) for group in columns], 1)
        else:
            groups = np.stack([1 - np.prod(1 - emotions[:, group], 1) for group in columns], 1)
        blend = np.clip((1 - alpha) * probabilities[:, config.task_slices[task]] + alpha * groups, 1e-7, 1 - 1e-7)
        mixed[:, config.task_slices[task]] = np.log(blend / (1 - blend))
    return mixed


def scores(config, validation: tuple, test: tuple) -> dict:
    """Thresholds tuned on validation; macro-F1 on validation and test, micro-F1 on test, per task."""
    thresholds = np.array(config.per_label(tune_thresholds(*validation, config)))
    on_validation = multitask_metrics(*validation, config, thresholds)
    on_test = multitask_metrics(*test, config, thresholds)
    return {
        task: {
            "validation_macro_f1": round(on_validation[f"{task}_macro_f1"], 4),
            "test_macro_f1": round(on_test[f"{task}_macro_f1"], 4),
            "test_micro_f1": round(on_test[f"{task}_micro_f1"], 4),
        }
        for task in config.tasks
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", type=Path, default=run_directory("ours-asl", 3, 1e-4))
    args = parser.parse_args()
    model = BertForMultiTaskMultiLabel.from_pretrained(args.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    hierarchy = read_json(DATA / "hierarchy.json")
    validation, test = (logits_and_labels(model, tokenizer, split) for split in ("validation", "test"))
    variants = {"heads alone": scores(model.config, validation, test)}
    for group_score in ("max", "noisy_or"):
        for alpha in ALPHAS:
            mixed = [
                (mixed_logits(logits, model.config, hierarchy, alpha, group_score), labels)
                for logits, labels in (validation, test)
            ]
            variants[f"{group_score}, alpha {alpha:g}"] = scores(model.config, *mixed)
    report = {"variants": variants, "model_dir": os.path.relpath(args.model_dir, REPO)}
    write_results(RESULTS / "label_groups.json", report)
    for name, by_task in variants.items():
        print(name, {task: tuple(figures.values()) for task, figures in by_task.items() if task != "emotion"})


if __name__ == "__main__":
    main()
