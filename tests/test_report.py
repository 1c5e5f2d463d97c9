import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY_BERT
from helpers import METRIC_SLICES as SLICES
from helpers import METRIC_TASKS as TASKS
from helpers import random_case
from huggingface_hub import ModelCard
from PIL import Image
from sklearn.metrics import f1_score

from mtl_model import BertMultiTaskConfig
from mtl_model.model_card import CardFacts, build_model_card
from mtl_model.report import CHART_LABELS, chart_rows, per_label_rows, write_evaluation_report, write_predictions


def test_per_label_rows_match_sklearn_and_count_support():
    logits, labels, config = random_case(7)
    thresholds = config.thresholds
    rows = per_label_rows(logits, labels, config)
    predicted = 1 / (1 + np.exp(-logits)) >= np.concatenate([thresholds[t] for t in TASKS])
    for task, task_slice in SLICES.items():
        annotated = labels[:, task_slice.start] != -100
        expected = f1_score(labels[annotated, task_slice], predicted[annotated, task_slice], average=None)
        assert [row["f1"] for row in rows[task]] == pytest.approx(expected, abs=1e-4)
        assert [row["support"] for row in rows[task]] == (labels[annotated, task_slice] == 1).sum(0).tolist()
        assert [row["threshold"] for row in rows[task]] == pytest.approx(thresholds[task])


def test_card_metadata_has_an_eval_result_per_task_split_and_average_and_a_table_per_split(tmp_path):
    config = BertMultiTaskConfig(**TINY_BERT, tasks=TASKS)
    metrics = {
        f"{split}_{task}_{avg}_f1": 0.5 for split in ("eval", "test") for task in TASKS for avg in ("macro", "micro")
    }
    metrics.update(eval_macro_f1=0.4, eval_micro_f1=0.6, test_macro_f1=0.3, test_micro_f1=0.7)
    training_args = SimpleNamespace(hub_model_id="me/m", output_dir=str(tmp_path), seed=3, learning_rate=1e-4)
    facts = CardFacts(base_model="bert-base-uncased", training_data="some/data", dataset_name="some/data",
                      report_files=["evaluation/test_emotion.md", "evaluation/test_emotion.png"])  # fmt: skip
    build_model_card(config, metrics, training_args, facts).save(tmp_path / "README.md")
    card = ModelCard.load(tmp_path / "README.md")  # the Hub's own parser: raises on an invalid model-index
    results = card.data.eval_results
    assert len(results) == len(TASKS) * 2 * 2
    assert {(r.task_name, r.dataset_split, r.metric_name) for r in results} == {
        (f"{task} (multi-label)", hub_split, f"{split} {avg} F1")
        for task in TASKS
        for split, hub_split in (("eval", "validation"), ("test", "test"))
        for avg in ("macro", "micro")
    }
    assert all(r.dataset_name == "some/data" and r.metric_value == 0.5 for r in results)
    assert card.data.base_model == "bert-base-uncased" and card.data.datasets == ["some/data"]
    assert "| all labels | 0.4000 | 0.6000 | 0.3000 | 0.7000 |" in card.text
    assert "[F1 chart](evaluation/test_emotion.png)" in card.text and "Seed: 3" in card.text
    assert "- learning_rate: 0.0001" in card.text


@pytest.mark.parametrize("scores, expected", [
    ("all", {"mood": {"happy": 0.731059, "sad": 0.5, "angry": 0.268941}}),
    ("top_k", {"mood": {"happy": 0.731059, "sad": 0.5}}),
    ("none", {}),
])  # fmt: skip
def test_predictions_hold_every_score_the_top_k_or_none(scores, expected, tmp_path):
    config = BertMultiTaskConfig(**TINY_BERT, tasks={"mood": ["happy", "sad", "angry"]})
    path = tmp_path / "predictions.jsonl"
    write_predictions(path, [["a text"]], np.array([[1.0, 0.0, -1.0]]), config, scores=scores, top_k=2)
    record = json.loads(path.read_text())
    assert record["mood"]["labels"] == ["happy", "sad"]  # at the thresholds 0.5, whatever the scores kept
    assert record["mood"].get("scores") == expected.get("mood")
    if scores == "top_k":
        assert list(record["mood"]["scores"]) == ["happy", "sad"]  # highest first


def test_a_chart_of_thousands_of_labels_shows_the_most_and_least_frequent(tmp_path):
    labels = [f"label{i}" for i in range(3000)]
    config = BertMultiTaskConfig(**TINY_BERT, tasks={"topic": labels})
    rng = np.random.default_rng(0)
    support = (36 * (1 - np.arange(3000) / 3000)).astype(int)  # label0 the most frequent, the last ones never
    truth = (np.arange(40)[:, None] < support[None, :]).astype(np.float32)
    written = write_evaluation_report(tmp_path, "test", rng.normal(size=(40, 3000)), truth, config)
    with open(tmp_path / "evaluation" / "test_topic.csv", encoding="utf-8") as handle:
        assert sum(1 for _ in handle) == 3001  # every label in the table
    width, height = Image.open(tmp_path / "evaluation" / "test_topic.png").size
    assert width <= 2000 and len(written) == 3
    shown = chart_rows([{"label": label, "support": int(truth[:, i].sum())} for i, label in enumerate(labels)])
    assert len(shown) == CHART_LABELS and shown[0]["label"] == "label0" and shown[-1]["support"] == 0
