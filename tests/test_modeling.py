import json

import pytest
import torch
from conftest import TINY_BERT
from helpers import assert_fresh_interpreter_reproduces_logits, random_batch
from torch.nn import functional as F
from transformers import AutoTokenizer, BertModel

from mtl_model import BertForMultiTaskMultiLabel, BertMultiTaskConfig
from mtl_model.loading import build_config, load_config, load_model
from mtl_model.modeling_mtl import multitask_loss

TASKS = {"emotion": ["joy", "anger", "fear"], "sentiment": ["positive", "negative"], "topic": ["a", "b", "c", "d"]}


def tiny_model(pooling="mean", **config_options) -> BertForMultiTaskMultiLabel:
    torch.manual_seed(0)
    config = BertMultiTaskConfig(**TINY_BERT, tasks=TASKS, pooling=pooling, **config_options)
    return BertForMultiTaskMultiLabel(config).eval()


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_forward_shapes(pooling):
    model = tiny_model(pooling)
    output = model(**random_batch())
    assert output.logits.shape == (4, 9)
    assert output.loss is None and output.task_losses is None
    assert (model.bert.pooler is not None) == (pooling == "pooler")


def test_mean_pooling_ignores_padding():
    model = tiny_model("mean")
    batch = random_batch()
    padded = model(**batch).logits[0]
    trimmed = model(input_ids=batch["input_ids"][:1, :4], attention_mask=batch["attention_mask"][:1, :4]).logits[0]
    torch.testing.assert_close(padded, trimmed, atol=1e-5, rtol=1e-5)


def test_masked_loss_equals_hand_computed_weighted_bce():
    model = tiny_model(task_weights={"emotion": 2.0, "sentiment": 0.5})
    labels = torch.tensor(
        [
            [1, 0, 0, 0, 1, 0, 0, 1, 0],
            [-100, -100, -100, 1, 0, 0, 0, 0, 0],  # emotion not annotated
            [0, 0, 0, -100, -100, 1, 1, 0, 0],  # sentiment not annotated
            [0, 0, 0, 0, 0, 0, 0, 0, 0],  # annotated everywhere, no positive label
        ],
        dtype=torch.float,
    )
    output = model(**random_batch(), labels=labels)
    expected, expected_tasks = 0.0, []
    # (weight, the task's label columns, the rows annotated for it)
    for weight, columns, rows in [
        (2.0, slice(0, 3), [0, 2, 3]),
        (0.5, slice(3, 5), [0, 1, 3]),
        (1.0, slice(5, 9), [0, 1, 2, 3]),
    ]:
        task_loss = F.binary_cross_entropy_with_logits(output.logits[rows, columns], labels[rows, columns])
        expected_tasks.append(task_loss)
        expected = expected + weight * task_loss
    torch.testing.assert_close(output.task_losses, torch.stack(expected_tasks))
    torch.testing.assert_close(output.loss, expected)


def test_loss_with_given_counts_is_sum_over_count():
    model = tiny_model()
    labels = torch.zeros(4, 9)
    output = model(**random_batch(), labels=labels, num_items_in_batch=torch.tensor([24, 16, 32]))
    per_entry = F.binary_cross_entropy_with_logits(output.logits, labels, reduction="none")
    sums = torch.stack([per_entry[:, :3].sum(), per_entry[:, 3:5].sum(), per_entry[:, 5:].sum()])
    torch.testing.assert_close(output.task_losses, sums / torch.tensor([24.0, 16.0, 32.0]))


def test_decode_uses_stored_thresholds():
    model = tiny_model(thresholds={"emotion": [0.5, 0.9, 0.1]})
    logits = torch.zeros(1, 9)  # sigmoid 0.5 everywhere
    logits[0, 3] = -3.0  # sentiment/positive far below 0.5
    decoded = model.decode(logits)
    assert decoded == [{"emotion": ["joy", "fear"], "sentiment": ["negative"], "topic": ["a", "b", "c", "d"]}]


def test_config_round_trip_keeps_tasks_order_thresholds_and_options(tmp_path):
    tasks = {"zeta": ["z2", "z1"], "alpha": ["a1"], "mid": ["m1", "m2", "m3"]}
    config = BertMultiTaskConfig(
        **TINY_BERT,
        tasks=tasks,
        task_weights={"alpha": 3.0},
        thresholds={"mid": [0.2, 0.3, 0.4]},
        pooling="cls",
        classifier_dropout=0.2,
        loss_type="focal",
        focal_gamma=1.5,
        pos_weight={"alpha": [4.0]},
    )
    config.save_pretrained(tmp_path)
    loaded = load_config(str(tmp_path))
    assert isinstance(loaded, BertMultiTaskConfig) and loaded.encoder.hidden_size == 32
    assert list(loaded.tasks.items()) == list(tasks.items())
    assert loaded.thresholds == {"zeta": [0.5, 0.5], "alpha": [0.5], "mid": [0.2, 0.3, 0.4]}
    assert loaded.task_weights == {"zeta": 1.0, "alpha": 3.0, "mid": 1.0}
    assert (loaded.pooling, loaded.classifier_dropout) == ("cls", 0.2)
    assert (loaded.loss_type, loaded.focal_gamma) == ("focal", 1.5)
    assert loaded.pos_weight == {"zeta": [1.0, 1.0], "alpha": [4.0], "mid": [1.0, 1.0, 1.0]}
    assert loaded.id2label[0] == "zeta/z2" and loaded.label2id["mid/m3"] == 5
    assert loaded.problem_type == "multi_label_classification"


@pytest.mark.parametrize(
    "tasks, message",
    [
        ({"a/b": ["x"]}, "may not contain '/'"),
        ({"a": []}, "has no labels"),
        ({"a": ["x", "x"]}, "lists a label twice"),
    ],
)
def test_config_rejects_bad_tasks(tasks, message):
    with pytest.raises(ValueError, match=message):
        BertMultiTaskConfig(tasks=tasks)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"loss_type": "hinge"}, "loss_type must be one of"),
        ({"loss_type": "asl", "pos_weight": {"a": [2.0]}}, "pos_weight applies to loss_type bce and focal only"),
        ({"pos_weight": {"a": [2.0, 3.0]}}, "1 labels but 2 pos_weight"),
    ],
)
def test_config_rejects_bad_loss_options(options, message):
    with pytest.raises(ValueError, match=message):
        BertMultiTaskConfig(tasks={"a": ["x"]}, **options)


def test_build_from_bert_checkpoint_initialises_fresh_heads(tiny_bert_dir):
    config = build_config(str(tiny_bert_dir), TASKS, {"task_weights": {"topic": 0.3}})
    model = load_model(str(tiny_bert_dir), config)
    assert config.hidden_size == 32 and config.model_type == "bert_multitask"
    assert [head.out_features for head in model.heads] == [3, 2, 4]
    reference = BertModel.from_pretrained(tiny_bert_dir)
    torch.testing.assert_close(
        model.bert.embeddings.word_embeddings.weight, reference.embeddings.word_embeddings.weight
    )


def encoder_dropout(path, **options) -> float:
    return build_config(str(path), TASKS, **options).encoder.attention_probs_dropout_prob


def test_attention_dropout_replaces_the_encoders_and_survives_saving(tiny_bert_dir, tmp_path):
    assert encoder_dropout(tiny_bert_dir) == 0.0  # the encoder's own
    config = build_config(str(tiny_bert_dir), TASKS, attention_dropout=0.25)
    model = load_model(str(tiny_bert_dir), config)
    assert {layer.attention.self.dropout.p for layer in model.bert.encoder.layer} == {0.25}
    model.save_pretrained(tmp_path)
    assert encoder_dropout(tmp_path) == 0.25  # kept on reload
    assert encoder_dropout(tmp_path, attention_dropout=0.1) == 0.1


def test_saved_model_loads_with_remote_code_in_a_fresh_interpreter(tiny_bert_dir, tmp_path):
    config = build_config(str(tiny_bert_dir), TASKS)
    config.thresholds["emotion"] = [0.1, 0.2, 0.3]
    model = load_model(str(tiny_bert_dir), config).eval()
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(saved)
    saved_config = json.loads((saved / "config.json").read_text())
    assert set(saved_config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForSequenceClassification"}
    assert {"modeling_mtl.py", "configuration_mtl.py", "model.safetensors"} <= {p.name for p in saved.iterdir()}

    results = assert_fresh_interpreter_reproduces_logits(saved, model, tmp_path)
    assert results["config"] == {"class": "BertMultiTaskConfig", "tasks": TASKS, "thresholds": config.thresholds}
    labels = {item["label"] for item in results["pipeline"][0]}
    assert labels == set(config.label_names) and all(0 < item["score"] < 1 for item in results["pipeline"][0])
    assert set(results["predict"][0]) == set(TASKS)


def hand_entry_losses(logits, targets, loss_type, pos_weight=None, gamma=2.0, gamma_pos=1.0, gamma_neg=4.0, clip=0.05):
    """The published formulas, entry by entry, written independently of the model code."""
    p = torch.sigmoid(logits.double())
    y = targets.double()
    w = torch.ones_like(p) if pos_weight is None else pos_weight.double().expand_as(p)
    if loss_type == "bce":
        return -(w * y * torch.log(p) + (1 - y) * torch.log(1 - p))
    if loss_type == "focal":
        p_true = torch.where(y == 1, p, 1 - p)
        return -((1 - p_true) ** gamma) * (w * y * torch.log(p) + (1 - y) * torch.log(1 - p))
    p_margin = torch.clamp(p - clip, min=0)
    return -(y * (1 - p) ** gamma_pos * torch.log(p) + (1 - y) * p_margin**gamma_neg * torch.log(1 - p_margin))


@pytest.mark.parametrize(
    "loss_type, with_pos_weight", [("bce", False), ("bce", True), ("focal", False), ("focal", True), ("asl", False)]
)
def test_loss_options_match_their_formulas(loss_type, with_pos_weight):
    tasks = {"t": ["a", "b", "c"]}
    pos_weight = {"t": [1.0, 3.0, 10.0]} if with_pos_weight else None
    config = BertMultiTaskConfig(
        **TINY_BERT, tasks=tasks, loss_type=loss_type, pos_weight=pos_weight, asl_gamma_positive=1.0
    )
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=generator) * 3
    labels = (torch.rand(6, 3, generator=generator) < 0.4).float()
    labels[1] = -100
    loss, _ = multitask_loss(logits, labels, config)
    weights = torch.tensor(pos_weight["t"]) if with_pos_weight else None
    rows = [0, 2, 3, 4, 5]
    expected = hand_entry_losses(logits[rows], labels[rows], loss_type, weights, gamma_pos=1.0).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_predict_batches_longest_first_and_keeps_input_order(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    # Thresholds between this random model's scores, so that the texts get different labels.
    model = tiny_model(thresholds={"emotion": [0.520, 0.488, 0.502]}).eval()
    texts = ["i love this", "sad", "i hate that bad movie so much", "good day", "not happy not sad not good"]
    with torch.no_grad():
        one_by_one = [model.decode(model(**tokenizer(text, return_tensors="pt")).logits)[0] for text in texts]
    assert len({json.dumps(labels) for labels in one_by_one}) == len(texts)  # a reordering would show
    batch_lengths = []
    model.register_forward_pre_hook(lambda _, args, kwargs: batch_lengths.append(kwargs["input_ids"].shape[1]),
                                    with_kwargs=True)  # fmt: skip
    assert model.predict(texts, tokenizer, batch_size=2) == one_by_one
    longest = max(len(tokenizer(text)["input_ids"]) for text in texts)
    assert batch_lengths[0] == longest and batch_lengths == sorted(batch_lengths, reverse=True)
