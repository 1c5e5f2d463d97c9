"""Per-task and overall F1 for multi-task, multi-label predictions with masked (not annotated) entries.

Each task's confusion counts come from scikit-learn, on the rows annotated for that task (each task masks other
rows, so there is no single call for all); precision, recall and F1 are then derived from the counts, pooled over
tasks for the overall micro figures. `evaluate`'s stock F1 loads from the Hub, which is why it is not used here.
"""

import numpy as np
from sklearn.metrics import multilabel_confusion_matrix
from transformers import EvalPrediction

from .configuration_mtl import IGNORE_INDEX, per_label_vector, task_slices
from .errors import ArgumentError


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def threshold_vector(tasks: dict[str, list[str]], thresholds: dict[str, list[float]]) -> np.ndarray:
    """Per-label thresholds in logit order, shape [total_labels]."""
    return np.array(per_label_vector(tasks, thresholds), dtype=np.float64)


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
    logits: np.ndarray, labels: np.ndarray, tasks: dict[str, list[str]], thresholds: dict[str, list[float]]
) -> dict[str, float]:
    """logits, labels: [rows, total_labels] → "<task>_macro_f1", …, and overall "macro_f1"/"micro_f1" over all labels.

    Entries labelled -100 (task not annotated for that row) count nowhere. A task with no annotated row is left out.
    """
    predicted = sigmoid(logits) >= threshold_vector(tasks, thresholds)
    tp, fp, fn = confusion_counts(predicted, labels, tasks)
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


def check_metric_for_best_model(training_args, names: list[str]) -> None:
    """`metric_for_best_model` must be a metric we compute (or the loss); checked before the model loads."""
    metric = training_args.metric_for_best_model
    if metric is None:
        return
    bare = metric.removeprefix("eval_")
    if bare not in names and bare != "loss":
        raise ArgumentError(
            f"--metric_for_best_model {metric!r} is not computed; choose one of: loss, {', '.join(names)}"
        )
