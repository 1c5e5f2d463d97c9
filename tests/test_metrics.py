import numpy as np
import pytest
from helpers import METRIC_SLICES as SLICES
from helpers import METRIC_TASKS as TASKS
from helpers import random_case
from sklearn.metrics import f1_score, precision_score, recall_score

from mtl_model.metrics import THRESHOLD_GRID, metric_names, multitask_metrics, tune_thresholds

# A two-level hierarchy over METRIC_TASKS: b's labels are parents of a's, c/u a parent of b/p (grandparent of a/x).
HIERARCHY = {"b/p": ["a/x", "a/y"], "b/q": ["a/z"], "c/u": ["b/p"]}


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_sklearn_with_masks_and_thresholds(seed):
    logits, labels, config = random_case(seed)
    thresholds = config.thresholds
    metrics = multitask_metrics(logits, labels, config)
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
    logits, labels, config = random_case(0)
    labels[:, SLICES["b"]] = -100
    metrics = multitask_metrics(logits, labels, config)
    assert not any(key.startswith("b_") for key in metrics)
    assert set(metrics) <= set(metric_names(TASKS))


def test_metric_names_cover_every_key():
    logits, labels, config = random_case(1)
    assert set(multitask_metrics(logits, labels, config)) == set(metric_names(TASKS))


@pytest.mark.parametrize("seed", range(3))
def test_example_based_metrics_and_average_precision_equal_sklearn_per_task_and_overall(seed):
    from sklearn.metrics import accuracy_score, average_precision_score, hamming_loss, jaccard_score

    logits, labels, config = random_case(seed, rows=80)
    metrics = multitask_metrics(logits, labels, config)
    scores = 1 / (1 + np.exp(-logits))
    predicted = scores >= np.concatenate([config.thresholds[t] for t in TASKS])
    precisions = []
    for task, task_slice in SLICES.items():
        annotated = labels[:, task_slice.start] != -100
        truth, guess = labels[annotated, task_slice] == 1, predicted[annotated, task_slice]
        # A row with neither true nor predicted labels is a perfect match, as SemEval-2018 E-c scores it.
        by_hand = np.mean([(t & g).sum() / (t | g).sum() if (t | g).any() else 1.0 for t, g in zip(truth, guess)])
        assert metrics[f"{task}_jaccard"] == pytest.approx(by_hand)
        assert metrics[f"{task}_hamming_loss"] == pytest.approx((truth != guess).mean())
        assert metrics[f"{task}_subset_accuracy"] == pytest.approx((truth == guess).all(1).mean())
        task_scores = scores[annotated, task_slice]
        aps = [average_precision_score(truth[:, j], task_scores[:, j]) for j in range(truth.shape[1])]
        assert metrics[f"{task}_macro_ap"] == pytest.approx(np.mean(aps))
        precisions += aps
    assert metrics["macro_ap"] == pytest.approx(np.mean(precisions))
    every = (labels != -100).all(1)
    truth, guess = labels[every] == 1, predicted[every]
    assert metrics["jaccard"] == pytest.approx(jaccard_score(truth, guess, average="samples", zero_division=1.0))
    assert metrics["hamming_loss"] == pytest.approx(hamming_loss(truth, guess))
    assert metrics["subset_accuracy"] == pytest.approx(accuracy_score(truth, guess))


def test_tuned_thresholds_maximise_each_labels_f1_on_the_grid_and_rare_labels_take_the_tasks():
    logits, labels, config = random_case(3, rows=400)
    labels[:, 0] = np.where(labels[:, 0] == -100, -100, (logits[:, 0] > 1.0).astype(np.float32))  # learnable label
    annotated_c = np.flatnonzero(labels[:, 5] != -100)
    labels[annotated_c, 5] = np.isin(annotated_c, annotated_c[:3])  # 3 positives: too rare to tune alone
    tuned = tune_thresholds(logits, labels, config, min_positives=5)
    scores = 1 / (1 + np.exp(-logits))
    annotated = labels[:, 0] != -100
    best = max(f1_score(labels[annotated, 0], scores[annotated, 0] >= t) for t in THRESHOLD_GRID)
    assert f1_score(labels[annotated, 0], scores[annotated, 0] >= tuned["a"][0]) == pytest.approx(best)
    assert abs(tuned["a"][0] - 1 / (1 + np.exp(-1.0))) < 0.02  # the true cut-off, sigmoid(1)
    assert tuned["c"][0] == best_micro_f1_threshold(scores, labels, SLICES["c"])  # the rare label: its task's


def best_micro_f1_threshold(scores, labels, task_slice) -> float:
    """By brute force: the grid threshold of the task's best micro-F1 (the median one among ties)."""
    annotated = labels[:, task_slice.start] != -100
    truth, task_scores = labels[annotated, task_slice].ravel(), scores[annotated, task_slice].ravel()
    f1 = np.array([f1_score(truth, task_scores >= t, zero_division=0) for t in THRESHOLD_GRID])
    best = np.flatnonzero(np.isclose(f1, f1.max()))
    return float(THRESHOLD_GRID[best[len(best) // 2]])


def test_micro_f1_objective_gives_each_task_the_threshold_of_its_best_micro_f1():
    logits, labels, config = random_case(4, rows=300)
    tuned = tune_thresholds(logits, labels, config, objective="micro_f1")
    scores = 1 / (1 + np.exp(-logits))
    for task, task_slice in SLICES.items():
        assert tuned[task] == [best_micro_f1_threshold(scores, labels, task_slice)] * len(TASKS[task])


def test_hierarchy_violations_are_counted_without_the_constraint_and_none_with_it():
    logits, labels, config = random_case(5, rows=200, label_hierarchy=HIERARCHY, hierarchy_constraint=False)
    predicted = 1 / (1 + np.exp(-logits)) >= np.concatenate([config.thresholds[t] for t in TASKS])
    names = config.label_names
    orphan = np.zeros(len(predicted), dtype=bool)
    for parent, children in HIERARCHY.items():
        for child in children:
            orphan |= predicted[:, names.index(child)] & ~predicted[:, names.index(parent)]
    assert orphan.any()
    assert multitask_metrics(logits, labels, config)["hierarchy_violations"] == pytest.approx(orphan.mean())
    config.hierarchy_constraint = True
    constrained = multitask_metrics(logits, labels, config)
    assert constrained["hierarchy_violations"] == 0
    assert constrained["hierarchy_violations_unconstrained"] == pytest.approx(orphan.mean())


def test_thresholds_are_tuned_on_the_constrained_scores():
    logits, labels, config = random_case(6, rows=300, label_hierarchy=HIERARCHY)
    tuned = tune_thresholds(logits, labels, config, min_positives=1)
    probabilities = 1 / (1 + np.exp(-logits))
    parent, children = config.label_names.index("b/p"), [config.label_names.index(c) for c in ("a/x", "a/y")]
    constrained = np.maximum(probabilities[:, parent], probabilities[:, children].max(1))
    annotated = labels[:, parent] != -100
    truth = labels[annotated, parent]
    f1 = [f1_score(truth, constrained[annotated] >= t) for t in THRESHOLD_GRID]
    assert f1_score(truth, constrained[annotated] >= tuned["b"][0]) == pytest.approx(max(f1))
