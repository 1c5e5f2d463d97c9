"""The label hierarchy (validation, C-HMCNN's constraint and MCLoss), the label-correlation loss, and the decoding
options (at least one label per task), each against the published formulation written out by hand."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY_BERT
from helpers import assert_fresh_interpreter_reproduces_logits, base_args, list_records, read_predictions, write_jsonl
from safetensors.torch import load_file
from torch.nn import functional as F
from transformers import AutoTokenizer

from mtl_model import BertMultiTaskConfig
from mtl_model.decoding import check_label_hierarchy, label_decisions, label_scores
from mtl_model.loading import build_config, load_model
from mtl_model.modeling_mtl import multitask_loss
from mtl_model.trainer import WEIGHT_AVERAGE_NAME
from run_mtl_classification import cli

TASKS = {"fine": ["joy", "amusement", "anger", "fear"], "coarse": ["happy", "unhappy"], "polarity": ["pos", "neg"]}
HIERARCHY = {
    "coarse/happy": ["fine/joy", "fine/amusement"],
    "coarse/unhappy": ["fine/anger", "fine/fear"],
    "polarity/pos": ["coarse/happy"],
    "polarity/neg": ["coarse/unhappy"],
}
NAMES = [f"{task}/{label}" for task, labels in TASKS.items() for label in labels]


def config(**options) -> BertMultiTaskConfig:
    return BertMultiTaskConfig(**TINY_BERT, tasks=TASKS, **options)


@pytest.mark.parametrize("hierarchy, message", [
    ({"mood/happy": ["fine/joy"]}, "'mood/happy' → 'mood/happy': no task 'mood'"),
    ({"coarse/happy": ["fine/glee"]}, "'coarse/happy' → 'fine/glee': task 'fine' has no such label"),
    ({"coarse/happy": ["coarse/unhappy"]}, "a parent and its child are in the same task"),
    ({"coarse/happy": ["fine/joy"], "coarse/unhappy": ["fine/joy"]}, "'fine/joy' is under two parents"),
    ({"coarse/happy": ["polarity/pos"], "polarity/pos": ["coarse/happy"]}, "cycle"),
    ({"coarse/happy": "fine/joy"}, "the children must be a list"),
])  # fmt: skip
def test_a_bad_hierarchy_is_refused_naming_the_entry(hierarchy, message):
    with pytest.raises(ValueError, match=message):
        check_label_hierarchy(TASKS, hierarchy)
    with pytest.raises(ValueError, match=message):
        config(label_hierarchy=hierarchy)


def test_hierarchy_and_structure_options_survive_save_and_load(tmp_path):
    options = dict(label_hierarchy=HIERARCHY, hierarchy_loss="mcloss", hierarchy_consistency="drop_orphans",
                   label_correlation={"fine": 0.2}, at_least_one=["fine", "coarse"])  # fmt: skip
    config(**options).save_pretrained(tmp_path)
    loaded = BertMultiTaskConfig.from_pretrained(tmp_path)
    assert {name: getattr(loaded, name) for name in options} == options
    # Grandchildren count as descendants: polarity/pos (index 6) is above coarse/happy (4), fine/joy and amusement.
    assert loaded.decoding.descendants[NAMES.index("polarity/pos")] == [0, 1, 4]


def reference_constrained(values: torch.Tensor, hierarchy: dict) -> torch.Tensor:
    """C-HMCNN's `get_constr_out`: max over R[i, j] · x_j, R[i, j] = 1 where j is i or one of its descendants."""
    R = torch.eye(len(NAMES), dtype=torch.double)
    for parent in hierarchy:
        stack = list(hierarchy[parent])
        while stack:
            child = stack.pop()
            R[NAMES.index(parent), NAMES.index(child)] = 1
            stack += hierarchy.get(child, [])
    batch = values.double().unsqueeze(1).expand(len(values), len(NAMES), len(NAMES))
    return (R.expand_as(batch) * batch).max(dim=2).values


def test_constrained_scores_are_c_hmcnns_and_decisions_never_break_the_hierarchy():
    torch.manual_seed(0)
    logits = torch.randn(50, len(NAMES)) * 2
    thresholds = {"fine": [0.3, 0.4, 0.5, 0.6], "coarse": [0.9, 0.95], "polarity": [0.97, 0.99]}
    constrained = config(label_hierarchy=HIERARCHY, thresholds=thresholds)
    scores = label_scores(logits, constrained.decoding)
    np.testing.assert_allclose(scores, reference_constrained(torch.sigmoid(logits.double()), HIERARCHY).numpy())
    chosen = label_decisions(scores, constrained.decoding)
    edges = [(NAMES.index(parent), NAMES.index(child)) for parent, children in HIERARCHY.items() for child in children]
    assert not any((chosen[:, child] & ~chosen[:, parent]).any() for parent, child in edges)
    independent_decoding = config(thresholds=thresholds).decoding
    independent = label_decisions(label_scores(logits, independent_decoding), independent_decoding)
    assert any((independent[:, child] & ~independent[:, parent]).any() for parent, child in edges)
    # The closure only adds parents: whatever passed its threshold on the constrained scores stays chosen.
    passed = scores >= np.concatenate(list(thresholds.values()))
    assert (chosen >= passed).all()
    # Dropping orphans instead only removes labels: those whose parent, after its own parent's check, is not chosen.
    constrained.hierarchy_consistency = "drop_orphans"
    pruned = label_decisions(scores, constrained.decoding)
    assert not any((pruned[:, child] & ~pruned[:, parent]).any() for parent, child in edges)
    assert (pruned <= passed).all() and (pruned != passed).any()
    polarity, coarse, fine = (slice(6, 8), slice(4, 6), slice(0, 4))
    np.testing.assert_array_equal(pruned[:, polarity], passed[:, polarity])  # the top is never dropped
    kept_coarse = passed[:, coarse] & passed[:, polarity]  # coarse/happy under polarity/pos, unhappy under neg
    np.testing.assert_array_equal(pruned[:, coarse], kept_coarse)
    np.testing.assert_array_equal(pruned[:, fine], passed[:, fine] & np.repeat(kept_coarse, 2, axis=1))


def test_mcloss_equals_c_hmcnns_training_loss():
    """C-HMCNN's train step: h = sigmoid(logits); constr = MCM(h); train = MCM(y · h);
    train = (1 - y) · constr + y · train; BCE(train, y), here per task and summed over tasks."""
    generator = torch.Generator().manual_seed(1)
    logits = (torch.randn(8, len(NAMES), generator=generator) * 2).requires_grad_()
    labels = (torch.rand(8, len(NAMES), generator=generator) < 0.4).double()
    h = torch.sigmoid(logits.double())
    train = (1 - labels) * reference_constrained(h, HIERARCHY) + labels * reference_constrained(labels * h, HIERARCHY)
    expected = sum(F.binary_cross_entropy(train[:, s], labels[:, s]) for s in config().task_slices.values())
    loss, _ = multitask_loss(logits.double(), labels, config(label_hierarchy=HIERARCHY, hierarchy_loss="mcloss"))
    torch.testing.assert_close(loss, expected)
    ours = torch.autograd.grad(loss, logits)[0]
    torch.testing.assert_close(ours, torch.autograd.grad(expected, logits)[0])
    plain, _ = multitask_loss(logits.double(), labels, config(label_hierarchy=HIERARCHY))
    assert not torch.isclose(plain, loss)  # without the option: the plain entry loss


def spanemo_lca(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """SpanEmo's `inter_corr_loss`, row by row (a row without a present or an absent label scores 0)."""
    losses = []
    for y, y_h in zip(y_true, torch.sigmoid(y_pred)):
        y_z, y_o = (y == 0).nonzero(), y.nonzero()
        if y_o.nelement() == 0 or y_z.nelement() == 0:
            losses.append(torch.zeros((), dtype=y_pred.dtype))
            continue
        pairs = torch.exp(torch.sub(y_h[y_z], y_h[y_o][:, None]).squeeze(-1)).sum()
        losses.append(pairs / (y_z.size(0) * y_o.size(0)))
    return torch.stack(losses)


def test_label_correlation_loss_equals_spanemos_mixed_per_task_and_leaves_unannotated_rows_out():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(6, len(NAMES), generator=generator, dtype=torch.double)
    labels = (torch.rand(6, len(NAMES), generator=generator) < 0.4).double()
    labels[0, :4] = 0  # no present emotion: a row of 0
    labels[1, :4] = 1  # no absent one: a row of 0
    labels[2, :4] = -100  # fine not annotated for this row
    weight = 0.3
    _, task_losses = multitask_loss(logits, labels, config(label_correlation={"fine": weight}))
    rows = [0, 1, 3, 4, 5]
    bce = F.binary_cross_entropy_with_logits(logits[rows, :4], labels[rows, :4])
    expected = (1 - weight) * bce + weight * spanemo_lca(labels[rows, :4], logits[rows, :4]).mean()
    torch.testing.assert_close(task_losses[0], expected)
    _, without = multitask_loss(logits, labels, config())
    torch.testing.assert_close(task_losses[1:], without[1:])  # the other tasks untouched


def test_at_least_one_label_takes_the_highest_score_of_a_task_with_none_over_its_threshold():
    scores = np.array([[0.1, 0.3, 0.2, 0.05, 0.2, 0.1, 0.9, 0.2], [0.6, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]])
    chosen = label_decisions(scores, config(at_least_one=["fine", "coarse"]).decoding)
    assert chosen[0].tolist() == [False, True, False, False, True, False, True, False]
    assert chosen[1].tolist() == [True, False, False, False, True, False, False, False]  # coarse: a tie, the first
    assert label_decisions(scores, config().decoding)[0, :6].sum() == 0


def test_at_least_one_label_holds_after_orphans_are_dropped_and_brings_its_ancestors():
    # Constrained scores (each parent at least its children): fine/anger passes its threshold, its parent
    # coarse/unhappy does not (0.65 < 0.9), so anger is dropped as an orphan, which leaves fine empty; at least one
    # fine label then takes the highest fine score, anger, with its ancestors.
    scores = np.array([[0.1, 0.2, 0.6, 0.3, 0.3, 0.65, 0.35, 0.7]])
    thresholds = {"fine": [0.5] * 4, "coarse": [0.9, 0.9], "polarity": [0.5, 0.5]}
    options = dict(label_hierarchy=HIERARCHY, hierarchy_consistency="drop_orphans", thresholds=thresholds)
    assert label_decisions(scores, config(**options).decoding)[0].tolist() == [False] * 7 + [True]
    chosen = label_decisions(scores, config(**options, at_least_one=["fine"]).decoding)
    assert chosen[0].tolist() == [False, False, True, False, False, True, False, True]


def test_at_least_one_label_of_a_coarser_task_agrees_with_the_finer_tasks_labels():
    # Constrained scores, nothing over its 0.5 threshold; fine's best is joy, coarse's own best unhappy. Filled
    # finest first (whatever the order given), joy brings happy and pos, and coarse and polarity need no label of
    # their own, which would have been unhappy and neg beside them.
    scores = np.array([[0.4, 0.1, 0.1, 0.1, 0.4, 0.45, 0.4, 0.45]])
    options = dict(label_hierarchy=HIERARCHY, hierarchy_consistency="drop_orphans")
    chosen = label_decisions(scores, config(**options, at_least_one=["polarity", "coarse", "fine"]).decoding)
    assert chosen[0].tolist() == [True, False, False, False, True, False, True, False]
    # add_parents: fine/anger passes, coarse none (thresholds 0.9) though happy scores higher than unhappy; anger's
    # ancestors are added before coarse is asked for a label, so it has unhappy alone.
    scores = np.array([[0.1, 0.2, 0.6, 0.3, 0.7, 0.65, 0.7, 0.65]])
    thresholds = {"fine": [0.5] * 4, "coarse": [0.9, 0.9], "polarity": [0.9, 0.9]}
    options = dict(label_hierarchy=HIERARCHY, thresholds=thresholds, at_least_one=["coarse"])
    chosen = label_decisions(scores, config(**options, hierarchy_consistency="add_parents").decoding)
    assert chosen[0].tolist() == [False, False, True, False, False, True, False, True]


def test_a_saved_model_with_a_hierarchy_predicts_the_same_with_remote_code(tiny_bert_dir, tmp_path):
    torch.manual_seed(0)
    structured = build_config(str(tiny_bert_dir), TASKS, {"label_hierarchy": HIERARCHY, "at_least_one": ["fine"]})
    structured.thresholds.update(coarse=[0.99, 0.99], polarity=[0.99, 0.99])
    model = load_model(str(tiny_bert_dir), structured).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model.save_pretrained(tmp_path / "saved")
    tokenizer.save_pretrained(tmp_path / "saved")
    expected = model.predict(["i love this movie"], tokenizer)
    # At least one fine label, and its parent and grandparent, though no coarse or polarity score passes 0.99.
    assert len(expected[0]["fine"]) >= 1 and expected[0]["coarse"] and expected[0]["polarity"]
    results = assert_fresh_interpreter_reproduces_logits(tmp_path / "saved", model, tmp_path)
    assert json.loads(json.dumps(results["predict"])) == expected


# ---------------------------------------------------------------------------------------------------------------
# The CLI: every option on a tiny run, and the weight average against its formula over the checkpoints.


def run_files(tmp_path) -> list[str]:
    train = write_jsonl(tmp_path / "train.jsonl", list_records(16))
    dev = write_jsonl(tmp_path / "dev.jsonl", list_records(16, offset=2))
    test = write_jsonl(tmp_path / "test.jsonl", list_records(8, offset=5))
    return ["--train_file", str(train), "--validation_file", str(dev), "--test_file", str(test),
            "--task_columns", "mood,topic"]  # fmt: skip


def test_every_structure_option_reaches_the_config_the_metrics_and_the_predictions(tiny_bert_dir, tmp_path):
    hierarchy = {"topic/movie": ["mood/happy"], "topic/day": ["mood/sad", "mood/angry"]}
    (tmp_path / "hierarchy.json").write_text(json.dumps(hierarchy))
    out = tmp_path / "out"
    args = base_args(tiny_bert_dir, out, *run_files(tmp_path), "--do_train", "--do_eval", "--do_predict")
    args += ["--label_hierarchy", str(tmp_path / "hierarchy.json"), "--hierarchy_loss", "mcloss"]
    args += ["--label_correlation_weight", "mood=0.2", "--at_least_one_label", "mood", "--ema_decay", "0.9"]
    args += ["--tune_thresholds", "--threshold_objective", "micro_f1", "--min_positives_to_tune", "1"]
    args += ["--eval_strategy", "epoch", "--metric_for_best_model", "jaccard"]
    assert cli(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["label_hierarchy"] == hierarchy and config["hierarchy_loss"] == "mcloss"
    assert config["label_correlation"] == {"mood": 0.2} and config["at_least_one"] == ["mood"]
    assert all(len(set(values)) == 1 for values in config["thresholds"].values())  # one per task: micro-F1
    results = json.loads((out / "all_results.json").read_text())
    for name in ("jaccard", "hamming_loss", "subset_accuracy", "macro_ap", "mood_jaccard", "topic_macro_ap"):
        assert 0 <= results[f"test_{name}"] <= 1 and f"eval_{name}" in results, name
    assert results["test_hierarchy_violations"] == 0 and "test_hierarchy_violations_unconstrained" in results
    parent = {child: parent.split("/")[1] for parent, children in hierarchy.items() for child in children}
    for row in read_predictions(out):
        assert row["mood"]["labels"]  # at least one
        assert all(parent[f"mood/{label}"] in row["topic"]["labels"] for label in row["mood"]["labels"])
        # The scores written are the constrained ones: a parent at least as high as its children.
        for child, topic in parent.items():
            assert row["topic"]["scores"][topic] >= row["mood"]["scores"][child.split("/")[1]]


def test_the_saved_model_is_the_weights_moving_average_and_a_resumed_run_continues_it(tiny_bert_dir, tmp_path):
    decay = 0.5
    out = tmp_path / "out"
    args = base_args(tiny_bert_dir, out, *run_files(tmp_path)[:2], "--task_columns", "mood,topic", "--do_train")
    args += ["--max_steps", "3", "--save_strategy", "steps", "--save_steps", "1", "--ema_decay", str(decay)]
    assert cli(args) == 0
    raw = [load_file(out / f"checkpoint-{step}" / "model.safetensors") for step in (1, 2, 3)]
    saved = load_file(out / "model.safetensors")
    assert all((out / f"checkpoint-{step}" / WEIGHT_AVERAGE_NAME).is_file() for step in (1, 2, 3))
    for name, value in saved.items():
        # W_avg after step 1 is W1; then W_avg ← decay · W_avg + (1 - decay) · W.
        average = raw[0][name]
        for weights in raw[1:]:
            average = decay * average + (1 - decay) * weights[name]
        torch.testing.assert_close(value, average, msg=name)
    assert any(not torch.equal(saved[name], raw[2][name]) for name in saved)
    # Cut the run short after step 2: the resumed run picks the average up from checkpoint-2's state.
    for path in out.iterdir():
        if path.name != "checkpoint-2":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert cli(args) == 0
    for name, value in load_file(out / "model.safetensors").items():
        torch.testing.assert_close(value, saved[name], msg=name)


def test_the_model_card_says_how_the_model_was_trained_and_decodes(tmp_path):
    from types import SimpleNamespace

    from mtl_model.model_card import CardFacts, build_model_card

    structured = config(label_hierarchy=HIERARCHY, hierarchy_loss="mcloss", label_correlation={"fine": 0.2},
                        at_least_one=["fine"])  # fmt: skip
    training_args = SimpleNamespace(hub_model_id=None, output_dir=str(tmp_path), seed=1)
    text = build_model_card(structured, {}, training_args, CardFacts(None, "data", None)).text
    assert "on C-HMCNN's max-constrained scores (MCLoss)" in text
    assert "fine: (1 − 0.2) · that + 0.2 · SpanEmo's label-correlation loss" in text
    assert "(`label_hierarchy` in `config.json`, 4 parent labels)" in text
    assert "the parents of every predicted label are predicted too" in text
    assert "In fine, a text with no label over its threshold gets its best one." in text
    plain = build_model_card(config(), {}, training_args, CardFacts(None, "data", None)).text
    assert "C-HMCNN" not in plain and "SpanEmo" not in plain
