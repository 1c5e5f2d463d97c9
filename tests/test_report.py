import numpy as np
import pytest
import yaml
from conftest import TINY_BERT
from sklearn.metrics import f1_score
from test_metrics import SLICES, TASKS, random_case

from mtl_model import BertMultiTaskConfig
from mtl_model.report import card_metadata, metrics_table, per_label_rows


def test_per_label_rows_match_sklearn_and_count_support():
    logits, labels, thresholds = random_case(7)
    config = BertMultiTaskConfig(**TINY_BERT, tasks=TASKS, thresholds=thresholds)
    rows = per_label_rows(logits, labels, config)
    predicted = 1 / (1 + np.exp(-logits)) >= np.concatenate([thresholds[t] for t in TASKS])
    for task, task_slice in SLICES.items():
        annotated = labels[:, task_slice.start] != -100
        expected = f1_score(labels[annotated, task_slice], predicted[annotated, task_slice], average=None)
        assert [row["f1"] for row in rows[task]] == pytest.approx(expected, abs=1e-4)
        assert [row["support"] for row in rows[task]] == (labels[annotated, task_slice] == 1).sum(0).tolist()
        assert [row["threshold"] for row in rows[task]] == pytest.approx(thresholds[task])


def test_card_metadata_has_model_index_per_task_and_table_per_split():
    config = BertMultiTaskConfig(**TINY_BERT, tasks=TASKS)
    metrics = {
        f"{split}_{task}_{avg}_f1": 0.5 for split in ("eval", "test") for task in TASKS for avg in ("macro", "micro")
    }
    metrics.update(eval_macro_f1=0.4, eval_micro_f1=0.6, test_macro_f1=0.3, test_micro_f1=0.7)
    metadata = yaml.safe_load(card_metadata(config, metrics, "m", "bert-base-uncased", "some/data"))
    results = metadata["model-index"][0]["results"]
    assert [r["task"]["name"] for r in results] == [f"{task} (multi-label)" for task in TASKS]
    assert {m["name"] for m in results[0]["metrics"]} == {
        "eval macro F1",
        "eval micro F1",
        "test macro F1",
        "test micro F1",
    }
    assert metadata["base_model"] == "bert-base-uncased" and metadata["datasets"] == ["some/data"]
    table = metrics_table(config, metrics)
    assert "| all labels | 0.4000 | 0.6000 | 0.3000 | 0.7000 |" in table
