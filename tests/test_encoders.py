"""Every encoder architecture the recipe supports, each a tiny random checkpoint saved as transformers saves a Hub
model: loaded for real (every encoder weight is the checkpoint's), trained end to end by the CLI, reloaded with
remote code in a fresh interpreter; and the checkpoints it must refuse, refused by name before training."""

import json
import re

import pytest
import torch
from conftest import TINY_ENCODERS, build_tiny_bert, build_tiny_encoder, tiny_encoder_config, tiny_vocab
from helpers import (
    assert_fresh_interpreter_reproduces_logits,
    base_args,
    list_records,
    random_batch,
    read_predictions,
    write_jsonl,
)
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, BertTokenizer
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from mtl_model import BertForMultiTaskMultiLabel, EncoderForMultiTaskMultiLabel
from mtl_model.errors import ArgumentError
from mtl_model.loading import build_config, freeze_word_embeddings, load_config, load_model
from run_mtl_classification import cli

TASKS = {"mood": ["angry", "happy", "sad"], "topic": ["day", "movie"]}
ENCODERS = list(TINY_ENCODERS)


def tiny_model(directory, attention_dropout=None, **options) -> EncoderForMultiTaskMultiLabel:
    config = build_config(str(directory), TASKS, options, attention_dropout=attention_dropout)
    return load_model(str(directory), config)


@pytest.mark.parametrize("model_type", ENCODERS)
def test_every_encoder_weight_is_the_checkpoints(model_type, tiny_encoder_dirs):
    directory = tiny_encoder_dirs[model_type]
    model = tiny_model(directory)
    expected_class = BertForMultiTaskMultiLabel if model_type == "bert" else EncoderForMultiTaskMultiLabel
    assert type(model) is expected_class
    assert type(model.base_model) is MODEL_MAPPING[type(model.config.encoder)]  # the architecture's own code
    prefix = model.base_model.base_model_prefix + "."
    checkpoint = {
        key.removeprefix(prefix): tensor
        for key, tensor in load_file(directory / "model.safetensors").items()
        if key.startswith(prefix) and not key.startswith(prefix + "pooler.")
    }
    encoder = model.base_model.state_dict()
    assert set(name for name, _ in model.base_model.named_parameters()) <= set(checkpoint)
    for name, tensor in checkpoint.items():
        assert torch.equal(encoder[name], tensor), name
    freeze_word_embeddings(model)
    assert not model.base_model.get_input_embeddings().weight.requires_grad


@pytest.mark.parametrize("model_type", ENCODERS)
def test_cli_trains_tunes_and_predicts_with_each_encoder(model_type, tiny_encoder_dirs, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    files = {split: write_jsonl(data / f"{split}.jsonl", list_records(n, offset)) for split, n, offset in
             [("train", 16, 0), ("validation", 8, 3), ("test", 5, 1)]}  # fmt: skip
    output_dir = tmp_path / "out"
    args = base_args(
        tiny_encoder_dirs[model_type], output_dir,
        *(item for split, path in files.items() for item in (f"--{split}_file", str(path))),
        "--task_columns", "mood,topic", "--do_train", "--do_eval", "--do_predict",
        "--tune_thresholds", "--min_positives_to_tune", "1", "--learning_rate", "3e-2",
    )  # fmt: skip
    assert cli(args) == 0
    saved = json.loads((output_dir / "config.json").read_text())
    assert saved["model_type"] == model_type and saved["tasks"] == TASKS
    assert any(value != 0.5 for values in saved["thresholds"].values() for value in values)  # tuned
    results = json.loads((output_dir / "all_results.json").read_text())
    assert {"eval_macro_f1", "test_macro_f1", "test_mood_micro_f1", "predict_samples_per_second"} <= set(results)
    predictions = read_predictions(output_dir)
    assert [row["text"] for row in predictions] == [record["text"] for record in list_records(5, 1)]

    # The saved model predicts the labels the CLI wrote, from the same tuned thresholds.
    reloaded = load_model(str(output_dir), load_config(str(output_dir)))
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    labels = reloaded.predict([row["text"] for row in predictions], tokenizer)
    assert labels == [{task: row[task]["labels"] for task in TASKS} for row in predictions]


@pytest.mark.parametrize("model_type", ENCODERS)
def test_saved_model_reloads_with_remote_code_for_each_encoder(model_type, tiny_encoder_dirs, tmp_path):
    model = tiny_model(tiny_encoder_dirs[model_type]).eval()
    model.config.thresholds["mood"] = [0.1, 0.5, 0.9]
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    AutoTokenizer.from_pretrained(tiny_encoder_dirs[model_type]).save_pretrained(saved)

    results = assert_fresh_interpreter_reproduces_logits(saved, model, tmp_path)
    assert results["config"] == {
        "class": type(model.config).__name__,
        "tasks": TASKS,
        "thresholds": model.config.thresholds,
    }
    assert {item["label"] for item in results["pipeline"][0]} == set(model.config.label_names)
    assert results["predict"] == model.predict(["i love this movie"], AutoTokenizer.from_pretrained(saved))


@pytest.mark.parametrize(
    "model_type, pooling",
    [(model_type, "mean") for model_type in ENCODERS] + [("roberta", "pooler"), ("mpnet", "cls")],
)
def test_every_trained_parameter_gets_a_gradient(model_type, pooling, tiny_encoder_dirs):
    """What `ddp_find_unused_parameters=False` (our default) relies on, for every architecture."""
    checkpoint = tiny_encoder_dirs[model_type]
    if pooling == "pooler":  # masked-LM checkpoints carry no trained pooler: build one from a base-model checkpoint
        checkpoint = checkpoint.parent / f"{model_type}-base"
        if not checkpoint.exists():
            AutoModel.from_pretrained(tiny_encoder_dirs[model_type], add_pooling_layer=True).save_pretrained(
                checkpoint
            )
            AutoTokenizer.from_pretrained(tiny_encoder_dirs[model_type]).save_pretrained(checkpoint)
    model = tiny_model(checkpoint, pooling=pooling).train()
    freeze_word_embeddings(model)
    labels = torch.randint(0, 2, (4, 5)).float()
    model(**random_batch(), token_type_ids=torch.zeros(4, 7, dtype=torch.long), labels=labels).loss.backward()
    without_gradient = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert without_gradient == []


@pytest.mark.parametrize("model_type", ["modernbert", "distilbert"])
def test_token_type_ids_go_only_to_encoders_that_use_them(model_type, tiny_encoder_dirs):
    model = tiny_model(tiny_encoder_dirs[model_type]).eval()
    batch = random_batch()
    with torch.no_grad():
        without = model(**batch).logits
        with_types = model(**batch, token_type_ids=torch.ones_like(batch["input_ids"])).logits
    assert torch.equal(without, with_types)
    bert = tiny_model(tiny_encoder_dirs["bert"]).eval()
    with torch.no_grad():
        assert not torch.equal(
            bert(**batch).logits, bert(**batch, token_type_ids=torch.ones_like(batch["input_ids"])).logits
        )


def attention_dropouts(model) -> set[float]:
    """The dropout rates applied to attention probabilities, wherever the architecture keeps them."""
    return {
        module.p
        for name, module in model.base_model.named_modules()
        if isinstance(module, torch.nn.Dropout) and "attention" in name.lower() and "output" not in name
    } | {
        module.attention_dropout
        for module in model.base_model.modules()
        if isinstance(getattr(module, "attention_dropout", None), float)
    }


@pytest.mark.parametrize("model_type, field", [("bert", "attention_probs_dropout_prob"),
                                               ("deberta-v2", "attention_probs_dropout_prob"),
                                               ("modernbert", "attention_dropout"),
                                               ("distilbert", "attention_dropout")])  # fmt: skip
def test_attention_dropout_reaches_each_architectures_own_field(model_type, field, tiny_encoder_dirs):
    model = tiny_model(tiny_encoder_dirs[model_type], attention_dropout=0.25)
    assert getattr(model.config.encoder, field) == 0.25
    assert 0.25 in attention_dropouts(model)


def test_pooler_pooling_uses_the_encoders_own_trained_pooler_or_is_refused(tiny_bert_dir, tiny_encoder_dirs):
    model = tiny_model(tiny_bert_dir, pooling="pooler")  # a BertModel checkpoint: its pooler is trained
    pooler = load_file(tiny_bert_dir / "model.safetensors")["pooler.dense.weight"]
    assert torch.equal(model.base_model.pooler.dense.weight, pooler)
    assert tiny_model(tiny_encoder_dirs["roberta"]).base_model.pooler is None  # not built unless used
    with pytest.raises(ArgumentError, match="the checkpoint has no trained pooler"):  # a masked-LM checkpoint
        tiny_model(tiny_encoder_dirs["roberta"], pooling="pooler")
    with pytest.raises(ArgumentError, match="--pooling pooler: the modernbert encoder has no pooler"):
        build_config(str(tiny_encoder_dirs["modernbert"]), TASKS, {"pooling": "pooler"})


def test_attention_implementation_is_passed_to_the_encoder(tiny_encoder_dirs):
    directory = str(tiny_encoder_dirs["roberta"])
    model = load_model(directory, build_config(directory, TASKS), attn_implementation="eager")
    assert model.base_model.config._attn_implementation == "eager"
    model = load_model(directory, build_config(directory, TASKS))
    assert model.base_model.config._attn_implementation == "sdpa"  # transformers' default where supported
    deberta = str(tiny_encoder_dirs["deberta-v2"])
    assert load_model(deberta, build_config(deberta, TASKS)).base_model.config._attn_implementation == "eager"
    with pytest.raises(ArgumentError, match="--attn_implementation sdpa: DebertaV2Model does not support"):
        load_model(deberta, build_config(deberta, TASKS), attn_implementation="sdpa")


def save_config_only(directory, config, tokenizer: bool = False):
    directory.mkdir(parents=True)
    config.save_pretrained(directory)
    if tokenizer:
        BertTokenizer(vocab={t: i for i, t in enumerate(tiny_vocab())}).save_pretrained(directory)
    return directory


def edit_config(directory, **changes):
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return directory


def refused_checkpoint(kind: str, root):
    """A checkpoint the recipe must refuse: built in code, saved as transformers saves it."""
    directory = root / kind
    if kind == "encoder-decoder":
        config = AutoConfig.for_model("bart", vocab_size=99, d_model=32, encoder_layers=1, decoder_layers=1,
                                      encoder_attention_heads=2, decoder_attention_heads=2,
                                      encoder_ffn_dim=37, decoder_ffn_dim=37)  # fmt: skip
        AutoModel.from_config(config).save_pretrained(directory)
    elif kind == "decoder-only":
        config = AutoConfig.for_model("gpt2", vocab_size=99, n_embd=32, n_layer=1, n_head=2)
        AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    elif kind == "vision":
        save_config_only(directory, AutoConfig.for_model("vit", hidden_size=32, num_hidden_layers=1))
    elif kind == "config without weights":
        save_config_only(directory, tiny_encoder_config("roberta"), tokenizer=True)
    elif kind == "weights missing from the checkpoint":
        edit_config(build_tiny_encoder(directory, "roberta"), num_hidden_layers=3)
    elif kind == "checkpoint weights unused":
        edit_config(build_tiny_encoder(directory, "electra"), num_hidden_layers=1)
    elif kind == "base-model weights unused":  # a BertModel checkpoint: its weights carry no `bert.` prefix
        edit_config(build_tiny_bert(directory), num_hidden_layers=1)
    return directory


REFUSALS = {
    "encoder-decoder": "is an encoder-decoder model (bart)",
    "decoder-only": "is a decoder-only language model (gpt2), which this recipe does not support",
    "vision": "is a 'vit' model, not a text encoder this recipe can use",
    "config without weights": "no weights to load",
    "weights missing from the checkpoint": "roberta encoder are newly initialised, e.g. ['encoder.encoder.layer.2.",
    "checkpoint weights unused": "electra encoder are in the checkpoint but unused, e.g. ['encoder.encoder.layer.1.",
    "base-model weights unused": "bert encoder are in the checkpoint but unused, e.g. ['encoder.layer.1.",
}


@pytest.mark.parametrize("kind", REFUSALS)
def test_checkpoints_without_a_usable_encoder_are_refused_before_training(kind, tmp_path, capsys):
    directory = refused_checkpoint(kind, tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    train = write_jsonl(data / "train.jsonl", list_records(8))
    output_dir = tmp_path / "out"
    args = base_args(directory, output_dir, "--train_file", str(train), "--task_columns", "mood,topic", "--do_train")
    assert cli(args) == 2
    error = capsys.readouterr().err
    assert f"--model_name_or_path {directory}" in error and REFUSALS[kind] in error, error
    assert "Traceback" not in error and not (output_dir / "model.safetensors").exists()


def test_a_model_saved_before_encoders_became_a_sub_config_loads_unchanged(tiny_bert_dir, tmp_path):
    """Earlier versions saved `model_type: bert_multitask` beside the flat BERT fields, and `auto_map` naming the
    BERT classes: such a folder loads as `BertForMultiTaskMultiLabel` with the same weights, tasks and thresholds."""
    model = tiny_model(tiny_bert_dir).eval()
    model.config.thresholds["topic"] = [0.3, 0.7]
    model.save_pretrained(tmp_path)
    edit_config(tmp_path, model_type="bert_multitask")
    config = load_config(str(tmp_path))
    assert type(config).__name__ == "BertMultiTaskConfig" and config.encoder.model_type == "bert"
    assert config.tasks == TASKS and config.thresholds == model.config.thresholds
    reloaded = load_model(str(tmp_path), config).eval()
    batch = random_batch()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, model(**batch).logits)


def test_a_model_of_ours_given_its_tasks_in_another_order_is_refused(tiny_bert_dir, tmp_path):
    tiny_model(tiny_bert_dir).save_pretrained(tmp_path)
    reordered = {"topic": TASKS["topic"], "mood": TASKS["mood"]}
    with pytest.raises(ArgumentError, match=r"holds the tasks \['mood', 'topic'\] in this order"):
        build_config(str(tmp_path), reordered)


def test_a_model_of_ours_is_refused_for_other_label_sets_by_name(tiny_bert_dir, tmp_path):
    tiny_model(tiny_bert_dir).save_pretrained(tmp_path)
    other = {"mood": [*TASKS["mood"], "bored"], "topic": TASKS["topic"]}
    expected = "model of this recipe with other label sets (task 'mood': labels only in the checkpoint [], only in "
    with pytest.raises(ArgumentError, match=re.escape(expected + "this run's data ['bored'])")):
        build_config(str(tmp_path), other)
