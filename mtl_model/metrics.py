"""Per-task and overall metrics for multi-task, multi-label predictions with masked (not annotated) entries.

Predictions are decoded as the model decodes them (`label_scores`, `label_decisions`: thresholds, at-least-one,
the label hierarchy). Each task's confusion counts come from scikit-learn, on the rows annotated for that task (each
task masks other rows, so there is no single call for all); precision, recall and F1 are then derived from the
counts, pooled over tasks for the overall micro figures. The example-based metrics and average precision are
scikit-learn's. `evaluate`'s stock metrics load from the Hub, which is why it is not used here.
"""

import dataclasses

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    hamming_loss,
    jaccard_score,
    multilabel_confusion_matrix,
)
from transformers import EvalPrediction

from .configuration_mtl import IGNORE_INDEX
from .decoding import label_decisions, label_scores, per_label_vector, task_slices

# Besides the F1 family: metrics of each task, and overall over the rows annotated for every task.
EXAMPLE_BASED = ("jaccard", "hamming_loss", "subset_accuracy", "macro_ap")


def confusion_counts(
    predicted: np.ndarray, labels: np.ndarray, tasks: dict[str, list[str]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True/false positives and false negatives per label, each [total_labels], over the rows annotated for the
    label's task; predicted (bool) and labels (1/0/-100): [rows, total_labels]."""
    counts = np.zeros((3, labels.shape[1]), dtype=np.int64)  # tp, fp, fn
    for task_slice in task_slices(tasks).values():
        rows = labels[:, task_slice.start] != IGNORE_INDEX  # a task is annotated for a row, or not, as a whole
        if rows.any():
            matrices = multilabel_confusion_matrix(labels[rows, task_slice] == 1, predicted[rows, task_slice])
            counts[:, task_slice] = matrices[:, 1, 1], matrices[:, 0, 1], matrices[:, 1, 0]  # [labels, 2, 2]
    return counts[0], counts[1], counts[2]


def per_label_scores(tp, fp, fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 of each label from its counts; 0 where undefined."""
    return safe_divide(tp, tp + fp), safe_divide(tp, tp + fn), safe_divide(2 * tp, 2 * tp + fp + fn)


def f1_scores(tp, fp, fn) -> dict[str, float]:
    """Macro (mean over labels) and micro (pooled counts) precision, recall and F1; 0 where undefined."""
    precision, recall, f1 = per_label_scores(tp, fp, fn)
    total_tp, total_fp, total_fn = tp.sum(), fp.sum(), fn.sum()
    return {
        "macro_f1": float(f1.mean()),
        "micro_f1": float(safe_divide(2 * total_tp, 2 * total_tp + total_fp + total_fn)),
        "macro_precision": float(precision.mean()),
        "micro_precision": float(safe_divide(total_tp, total_tp + total_fp)),
        "macro_recall": float(recall.mean()),
        "micro_recall": float(safe_divide(total_tp, total_tp + total_fn)),
    }


def safe_divide(numerator, denominator):
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def multitask_metrics(
    logits: np.ndarray, labels: np.ndarray, config, thresholds: np.ndarray | None = None
) -> dict[str, float]:
    """logits, labels: [rows, total_labels] → per task "<task>_macro_f1", …, "<task>_jaccard", …, and overall
    "macro_f1", …, "jaccard", …; with a label hierarchy, "hierarchy_violations" (the share of rows predicting a
    label without its parent) and, when the constraint is on, the same share of the unconstrained scores at the
    same thresholds ("hierarchy_violations_unconstrained"). Decoded at the config's thresholds, or `thresholds`
    [total_labels].

    Entries labelled -100 (task not annotated for that row) count nowhere. A task with no annotated row is left out.
    """
    decoding = config.decoding
    scores = label_scores(logits, decoding)
    predicted = label_decisions(scores, decoding, thresholds)
    tp, fp, fn = confusion_counts(predicted, labels, config.tasks)
    metrics, annotated_labels, precisions = {}, [], []
    for task, task_slice in config.task_slices.items():
        rows = labels[:, task_slice.start] != IGNORE_INDEX
        if not rows.any():
            continue
        annotated_labels.append(np.arange(task_slice.start, task_slice.stop))
        truth = labels[rows, task_slice] == 1
        precisions.append(average_precisions(truth, scores[rows, task_slice]))
        task_metrics = {
            **f1_scores(tp[task_slice], fp[task_slice], fn[task_slice]),
            **example_based_scores(truth, predicted[rows, task_slice]),
            "macro_ap": mean_or_zero(precisions[-1]),
        }
        metrics.update({f"{task}_{name}": value for name, value in task_metrics.items()})
    if annotated_labels:
        kept = np.concatenate(annotated_labels)
        metrics.update(f1_scores(tp[kept], fp[kept], fn[kept]), macro_ap=mean_or_zero(np.concatenate(precisions)))
        every_task = (labels[:, kept] != IGNORE_INDEX).all(axis=1)
        if every_task.any():
            metrics.update(example_based_scores(labels[every_task][:, kept] == 1, predicted[every_task][:, kept]))
    if decoding.label_hierarchy:
        metrics["hierarchy_violations"] = hierarchy_violations(predicted, decoding)
    if decoding.constrained:
        # Each label decoded on its own sigmoid, the hierarchy kept for the violation count only.
        unconstrained = dataclasses.replace(decoding, hierarchy_constraint=False)
        raw = label_decisions(label_scores(logits, unconstrained), unconstrained, thresholds)
        metrics["hierarchy_violations_unconstrained"] = hierarchy_violations(raw, decoding)
    return metrics


def example_based_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """truth, predicted: bool [rows, labels] → example-based Jaccard (the mean over rows of |true ∩ predicted| /
    |true ∪ predicted|, 1 for a row with neither: SemEval-2018 E-c's official metric), Hamming loss and subset
    (exact-match) accuracy."""
    return {
        "jaccard": float(jaccard_score(truth, predicted, average="samples", zero_division=1.0)),
        "hamming_loss": float(hamming_loss(truth, predicted)),
        "subset_accuracy": float(accuracy_score(truth, predicted)),
    }


def average_precisions(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """truth: bool [rows, labels], scores [rows, labels] → the average precision of each label with a positive row
    (undefined without one; scikit-learn would warn and count it as 0)."""
    with_positives = truth.any(axis=0)
    if not with_positives.any():
        return np.zeros(0)
    return np.atleast_1d(average_precision_score(truth[:, with_positives], scores[:, with_positives], average=None))


def mean_or_zero(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else 0.0


def hierarchy_violations(predicted: np.ndarray, decoding) -> float:
    """predicted: bool [rows, total_labels] → the share of rows predicting some label of the hierarchy without its
    parent."""
    edges = np.array(decoding.parents_top_down)  # [edges, 2]: (parent, child) logit indices
    if not len(edges) or not len(predicted):
        return 0.0
    orphans = predicted[:, edges[:, 1]] & ~predicted[:, edges[:, 0]]  # [rows, edges]
    return float(orphans.any(axis=1).mean())


def metrics_at_threshold(
    logits: np.ndarray, labels: np.ndarray, config, prefix: str, threshold: float = 0.5
) -> dict[str, float]:
    """The same metrics with one threshold for every label, keyed "<prefix>_<metric>_at_<threshold>"."""
    uniform = np.full(len(config.label_names), threshold)
    return {
        f"{prefix}_{key}_at_{threshold:g}": value
        for key, value in multitask_metrics(logits, labels, config, uniform).items()
    }


def build_compute_metrics(config, cross_fitting: dict | None = None):
    """A `compute_metrics` for the Trainer that reads the decoding (thresholds, hierarchy, at-least-one) from the
    model config at call time, so thresholds tuned after training are used by later evaluations. With
    `cross_fitting` (`cross_fitted_macro_f1`'s min_positives and objective), the cross-fitted macro-F1 too."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        metrics = multitask_metrics(logits, prediction.label_ids, config)
        if cross_fitting is not None:
            metrics.update(cross_fitted_macro_f1(logits, prediction.label_ids, config, **cross_fitting))
        return metrics

    return compute_metrics


def metric_names(tasks: dict[str, list[str]]) -> list[str]:
    """Every key of `multitask_metrics` that can rank checkpoints (`--metric_for_best_model`), without "eval_"."""
    scores = [*f1_scores(np.zeros(1), np.zeros(1), np.zeros(1)), *EXAMPLE_BASED]
    return scores + [f"{task}_{score}" for task in tasks for score in scores]


def cross_fitted_names(tasks: dict[str, list[str]]) -> list[str]:
    """The keys of `cross_fitted_macro_f1`, without "eval_"."""
    return [CROSS_FITTED] + [f"{task}_{CROSS_FITTED}" for task in tasks]


CROSS_FITTED = "cross_fitted_macro_f1"


def cross_fitted_macro_f1(
    logits: np.ndarray, labels: np.ndarray, config, min_positives: int = 5, objective: str = "label_f1", seed: int = 0
) -> dict[str, float]:
    """Each task's macro-F1 at per-label thresholds tuned on other rows than those it is scored on: the rows split in
    two halves (a fixed shuffle), thresholds tuned on each half (`tune_thresholds`) score the other, and the two
    scores are averaged; "<task>_cross_fitted_macro_f1" and their mean over tasks, "cross_fitted_macro_f1".

    Scoring a model at thresholds fitted to the same rows flatters it, the more so the rarer its labels; a search
    that ranks many models so would pick the one whose thresholds overfit best.
    """
    halves = np.array_split(np.random.default_rng(seed).permutation(len(logits)), 2)
    per_task = {task: [] for task in config.tasks}
    for tuned_on, scored_on in (halves, halves[::-1]):
        tuning, scored = (logits[tuned_on], labels[tuned_on]), (logits[scored_on], labels[scored_on])
        for task, score in task_macro_f1_at_tuned_thresholds(tuning, scored, config, min_positives, objective).items():
            per_task[task].append(score)
    metrics = {f"{task}_{CROSS_FITTED}": float(np.mean(values)) for task, values in per_task.items()}
    metrics[CROSS_FITTED] = float(np.mean(list(metrics.values())))
    return metrics


def task_macro_f1_at_tuned_thresholds(
    tuning: tuple[np.ndarray, np.ndarray],
    scored: tuple[np.ndarray, np.ndarray],
    config,
    min_positives: int = 5,
    objective: str = "label_f1",
) -> dict[str, float]:
    """Per task, macro-F1 on the `scored` (logits, labels) at per-label thresholds tuned on the `tuning` ones: e.g.
    what a model whose thresholds are tuned on the validation split scores on the test split."""
    thresholds = np.array(per_label_vector(config.tasks, tune_thresholds(*tuning, config, min_positives, objective)))
    scores = multitask_metrics(*scored, config, thresholds)
    return {task: scores.get(f"{task}_macro_f1", 0.0) for task in config.tasks}


# Candidate thresholds for tuning: fine enough to matter, coarse enough not to chase noise on rare labels.
THRESHOLD_GRID = np.round(np.arange(0.02, 0.981, 0.01), 2)


def tune_thresholds(
    logits: np.ndarray, labels: np.ndarray, config, min_positives: int = 5, objective: str = "label_f1"
) -> dict[str, list[float]]:
    """Per label, the grid threshold on the decoding's scores (`label_scores`: constrained under a hierarchy) that
    maximises, on the given (validation) rows, the label's own F1 (`objective="label_f1"`, best for macro-F1) or its
    task's micro-F1 (`"micro_f1"`: one threshold for all labels of the task).

    logits, labels: [rows, total_labels], -100 where not annotated. Under "label_f1" a label with fewer than
    `min_positives` positive examples takes its task's micro-F1 threshold: too few to tune alone without
    overfitting. Among equally good thresholds the median one is taken.
    """
    scores, annotated, truth = label_scores(logits, config.decoding), labels != IGNORE_INDEX, labels == 1
    chosen = []
    for task_slice in config.task_slices.values():
        rows = annotated[:, task_slice.start]
        task_scores, task_truth = scores[rows, task_slice], truth[rows, task_slice]  # [rows, labels]
        task_threshold = best_on_grid(*grid_counts(task_scores, task_truth))
        for column in range(task_scores.shape[1]):
            positives = task_truth[:, column]
            if objective == "micro_f1" or positives.sum() < min_positives:
                chosen.append(task_threshold)
            else:
                chosen.append(best_on_grid(*grid_counts(task_scores[:, column], positives)))
    return {task: chosen[task_slice] for task, task_slice in task_slices(config.tasks).items()}


def grid_counts(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """At each grid threshold, the true positives and the predicted positives of `scores` against `truth` (bool,
    same shape: one label's, or all of a task's pooled), each [grid]; and the positives. Counted by binary search
    in the sorted scores (a score passes a threshold unless it sorts before it)."""
    every, of_positives = np.sort(scores, axis=None), np.sort(scores[truth], axis=None)
    predicted = len(every) - np.searchsorted(every, THRESHOLD_GRID, side="left")
    true_positives = len(of_positives) - np.searchsorted(of_positives, THRESHOLD_GRID, side="left")
    return true_positives, predicted, len(of_positives)


def best_on_grid(true_positives: np.ndarray, predicted: np.ndarray, positives: int) -> float:
    """The grid threshold of the highest F1 = 2TP / (predicted + positives); the median one among ties."""
    f1 = safe_divide(2 * true_positives, predicted + positives)
    best = np.flatnonzero(f1 == f1.max())
    return float(THRESHOLD_GRID[best[len(best) // 2]])
