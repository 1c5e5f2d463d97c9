import numpy as np
import pytest
from helpers import METRIC_SLICES as SLICES
from helpers import METRIC_TASKS as TASKS
from helpers import random_case
from sklearn.metrics import f1_score, precision_score, recall_score

from mtl_model.metrics import metric_names, multitask_metrics


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_sklearn_with_masks_and_thresholds(seed):
    logits, labels, thresholds = random_case(seed)
    metrics = multitask_metrics(logits, labels, TASKS, thresholds)
    scores = 1 / (1 + np.exp(-logits))
    predicted = (scores >= np.concatenate([thresholds[t] for t in TASKS])).astype(int)

    per_label_f1, pooled_truth, pooled_guess = [], [], []
    for task, task_slice in SLICES.items():
        annotated = labels[:, task_slice.start] != -100
        truth, guess = labels[annotated, task_slice].astype(int), predicted[annotated, task_slice]
        for average in ("macro", "micro"):
            options = dict(average=average, zero_division=0)
            assert metrics[f"{task}_{average}_f1"] == pytest.approx(f1_score(truth, guess, **options))
            assert metrics[f"{task}_{average}_precision"] == pytest.approx(precision_score(truth, guess, **options))
            assert metrics[f"{task}_{average}_recall"] == pytest.approx(recall_score(truth, guess, **options))
        per_label_f1.extend(f1_score(truth, guess, average=None, zero_division=0))
        pooled_truth.append(truth.ravel())
        pooled_guess.append(guess.ravel())
    assert metrics["macro_f1"] == pytest.approx(np.mean(per_label_f1))
    assert metrics["micro_f1"] == pytest.approx(
        f1_score(np.concatenate(pooled_truth), np.concatenate(pooled_guess), zero_division=0)
    )


def test_task_without_annotation_is_left_out():
    logits, labels, thresholds = random_case(0)
    labels[:, SLICES["b"]] = -100
    metrics = multitask_metrics(logits, labels, TASKS, thresholds)
    assert not any(key.startswith("b_") for key in metrics)
    assert set(metrics) <= set(metric_names(TASKS))


def test_metric_names_cover_every_key():
    logits, labels, thresholds = random_case(1)
    assert set(multitask_metrics(logits, labels, TASKS, thresholds)) == set(metric_names(TASKS))


def test_tuned_thresholds_maximise_each_labels_f1_on_the_grid():
    from mtl_model.metrics import THRESHOLD_GRID, tune_thresholds

    logits, labels, _ = random_case(3, rows=400)
    labels[:, 0] = np.where(labels[:, 0] == -100, -100, (logits[:, 0] > 1.0).astype(np.float32))  # learnable label
    labels[:, 5] = np.where(np.arange(400) < 3, 1, 0)  # 3 positives: too rare to tune
    tuned = tune_thresholds(logits, labels, TASKS, min_positives=5)
    assert tuned["c"][0] == 0.5
    scores = 1 / (1 + np.exp(-logits))
    annotated = labels[:, 0] != -100
    best = max(f1_score(labels[annotated, 0], scores[annotated, 0] >= t) for t in THRESHOLD_GRID)
    assert f1_score(labels[annotated, 0], scores[annotated, 0] >= tuned["a"][0]) == pytest.approx(best)
    assert abs(tuned["a"][0] - 1 / (1 + np.exp(-1.0))) < 0.02  # the true cut-off, sigmoid(1)
