"""Per-task and overall F1 for multi-task, multi-label predictions with masked (not annotated) entries.

Counts are computed directly with numpy rather than by calling scikit-learn once per task, because each task masks
different rows; the tests check every figure against scikit-learn. `evaluate`'s stock F1 loads from the Hub, which
is why it is not used here.
"""

import numpy as np
from transformers import EvalPrediction

from .configuration_mtl import task_slices
from .modeling_mtl import IGNORE_INDEX


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def threshold_vector(tasks: dict[str, list[str]], thresholds: dict[str, list[float]]) -> np.ndarray:
    """Per-label thresholds in logit order, shape [total_labels]."""
    return np.array([value for task in tasks for value in thresholds[task]], dtype=np.float64)


def confusion_counts(predicted: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True/false positives and false negatives per label over annotated entries; inputs [rows, labels]."""
    annotated = labels != IGNORE_INDEX
    truth = (labels == 1) & annotated
    guess = predicted & annotated
    return (guess & truth).sum(0), (guess & ~truth).sum(0), (~guess & truth).sum(0)


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
    logits: np.ndarray, labels: np.ndarray, tasks: dict[str, list[str]], thresholds: dict[str, list[float]]
) -> dict[str, float]:
    """logits, labels: [rows, total_labels] → "<task>_macro_f1", …, and overall "macro_f1"/"micro_f1" over all labels.

    Entries labelled -100 (task not annotated for that row) count nowhere. A task with no annotated row is left out.
    """
    predicted = sigmoid(logits) >= threshold_vector(tasks, thresholds)
    tp, fp, fn = confusion_counts(predicted, labels)
    metrics, annotated_labels = {}, []
    for task, task_slice in task_slices(tasks).items():
        if not (labels[:, task_slice] != IGNORE_INDEX).any():
            continue
        annotated_labels.append(np.arange(task_slice.start, task_slice.stop))
        for name, value in f1_scores(tp[task_slice], fp[task_slice], fn[task_slice]).items():
            metrics[f"{task}_{name}"] = value
    if annotated_labels:
        kept = np.concatenate(annotated_labels)
        metrics.update(f1_scores(tp[kept], fp[kept], fn[kept]))
    return metrics


def metrics_at_threshold(
    logits: np.ndarray, labels: np.ndarray, tasks: dict[str, list[str]], prefix: str, threshold: float = 0.5
) -> dict[str, float]:
    """The same metrics with one threshold for every label, keyed "<prefix>_<metric>_at_<threshold>"."""
    uniform = {task: [threshold] * len(names) for task, names in tasks.items()}
    return {
        f"{prefix}_{key}_at_{threshold:g}": value
        for key, value in multitask_metrics(logits, labels, tasks, uniform).items()
    }


def build_compute_metrics(config):
    """A `compute_metrics` for the Trainer that reads tasks and thresholds from the model config at call time, so
    thresholds tuned after training are used by later evaluations."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return multitask_metrics(logits, prediction.label_ids, config.tasks, config.thresholds)

    return compute_metrics


def metric_names(tasks: dict[str, list[str]]) -> list[str]:
    """Every key `multitask_metrics` can return, without the "eval_" prefix."""
    scores = list(f1_scores(np.zeros(1), np.zeros(1), np.zeros(1)))
    return scores + [f"{task}_{score}" for task in tasks for score in scores]


# Candidate thresholds for tuning: fine enough to matter, coarse enough not to chase noise on rare labels.
THRESHOLD_GRID = np.round(np.arange(0.02, 0.981, 0.01), 2)


def tune_thresholds(
    logits: np.ndarray, labels: np.ndarray, tasks: dict[str, list[str]], min_positives: int = 5
) -> dict[str, list[float]]:
    """Per label, the grid threshold that maximises the label's F1 on the given (validation) rows.

    logits, labels: [rows, total_labels], -100 where not annotated. A label with fewer than `min_positives` positive
    examples keeps 0.5: too few to tune without overfitting. Among equally good thresholds the median one is taken.
    """
    scores, annotated, truth = sigmoid(logits), labels != IGNORE_INDEX, labels == 1
    chosen = []
    for column in range(scores.shape[1]):
        rows = annotated[:, column]
        positives, column_scores = truth[rows, column], scores[rows, column]
        if positives.sum() < min_positives:
            chosen.append(0.5)
            continue
        predicted = column_scores[None, :] >= THRESHOLD_GRID[:, None]  # [grid, rows]
        tp = (predicted & positives).sum(1)
        f1 = safe_divide(2 * tp, predicted.sum(1) + positives.sum())  # 2TP / (2TP + FP + FN)
        best = np.flatnonzero(f1 == f1.max())
        chosen.append(float(THRESHOLD_GRID[best[len(best) // 2]]))
    return {task: chosen[task_slice] for task, task_slice in task_slices(tasks).items()}
