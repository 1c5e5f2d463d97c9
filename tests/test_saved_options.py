"""A saved model predicts as it was trained: reloaded to predict, evaluate, export or train on, it keeps every model
option it was saved with but those the user gives (a flag or a config-file key); an option of training given with
another value than the model's is refused, naming both. Each option is declared once, and checked the same from a
flag, a config file and `MultiTaskConfig(...)`."""

import json
from pathlib import Path

import pytest
from helpers import base_args, list_records, read_predictions, write_jsonl
from huggingface_hub import ModelCard

from mtl_model import MultiTaskConfig
from mtl_model.configuration_mtl import model_options, option_flag
from mtl_model.loading import build_config, load_config
from run_mtl_classification import cli

TASKS = {"mood": ["angry", "happy", "sad"], "topic": ["day", "movie"]}
# Each mood under the topic it goes with in the data; a parent in another task than its children.
HIERARCHY = {"topic/day": ["mood/sad", "mood/angry"], "topic/movie": ["mood/happy"]}

# One non-default value of every model option (and the flags it needs beside it).
TRAINED_WITH = {
    "pooling": ["--pooling", "cls"],
    "classifier_dropout": ["--classifier_dropout", "0.3"],
    "attention_dropout": ["--attention_dropout", "0.2"],
    "task_weights": ["--task_weights", "mood=2,topic=0.5"],
    "focal": ["--loss_type", "focal", "--focal_gamma", "1.5"],
    "asl": ["--loss_type", "asl", "--asl_gamma_positive", "1", "--asl_gamma_negative", "2", "--asl_clip", "0.1"],
    "pos_weight": ["--pos_weight_cap", "3"],
    "label_correlation": ["--label_correlation_weight", "0.3"],
    "hierarchy": ["--label_hierarchy", "HIERARCHY"],
    "unconstrained": ["--label_hierarchy", "HIERARCHY", "--hierarchy_constraint", "false"],
    "drop_orphans": ["--label_hierarchy", "HIERARCHY", "--hierarchy_consistency", "drop_orphans"],
    "mcloss": ["--label_hierarchy", "HIERARCHY", "--hierarchy_loss", "mcloss"],
    "at_least_one": ["--at_least_one_label", "mood,topic"],
    "thresholds": ["--tune_thresholds", "--min_positives_to_tune", "1"],
    # Chunks of 2 tokens besides [CLS] and [SEP]: "i love this movie" is read in 3, the last dropped by --max_chunks.
    "chunks": ["--long_documents", "chunk", "--max_seq_length", "4", "--chunk_stride", "1", "--max_chunks", "2"],
    "chunk_attention": ["--long_documents", "chunk", "--max_seq_length", "4", "--chunk_pooling", "attention"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("data")
    (directory / "hierarchy.json").write_text(json.dumps(HIERARCHY), encoding="utf-8")
    return {
        "train": write_jsonl(directory / "train.jsonl", list_records(24)),
        "validation": write_jsonl(directory / "dev.jsonl", list_records(8, offset=3)),
        "test": write_jsonl(directory / "test.jsonl", list_records(12, offset=5)),
        "hierarchy": directory / "hierarchy.json",
    }


def with_files(flags: list[str], data: dict[str, Path]) -> list[str]:
    return [str(data["hierarchy"]) if flag == "HIERARCHY" else flag for flag in flags]


def train(tiny_bert_dir, output_dir: Path, data, *flags) -> Path:
    args = base_args(tiny_bert_dir, output_dir, "--train_file", str(data["train"]), "--validation_file",
                     str(data["validation"]), "--test_file", str(data["test"]), "--task_columns", "mood,topic",
                     "--do_train", "--do_eval", "--do_predict", *with_files(list(flags), data))  # fmt: skip
    assert cli(args) == 0
    return output_dir


def predict_alone(model_dir: Path, output_dir: Path, data, *flags) -> int:
    """Prediction and evaluation from the saved folder alone, with the data of the trained run but no train file."""
    args = base_args(model_dir, output_dir, "--validation_file", str(data["validation"]), "--test_file",
                     str(data["test"]), "--do_eval", "--do_predict", *with_files(list(flags), data))  # fmt: skip
    return cli(args)


def exit_status(args: list[str]) -> int:
    """The CLI's exit status; argparse itself exits (status 2, naming the flag) on a value outside a flag's choices."""
    try:
        return cli(args)
    except SystemExit as exit:
        return exit.code


def all_results(directory: Path) -> dict:
    return json.loads((directory / "all_results.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("option", list(TRAINED_WITH))
def test_prediction_alone_predicts_as_the_trained_run(option, tiny_bert_dir, data, tmp_path):
    flags = TRAINED_WITH[option]
    trained = train(tiny_bert_dir, tmp_path / "trained", data, *flags)
    # A chunking model reads chunks of its own length: the trained run's --max_seq_length, given again.
    same_length = flags[flags.index("--max_seq_length") :][:2] if "--max_seq_length" in flags else []
    assert predict_alone(trained, tmp_path / "alone", data, *same_length) == 0
    alone = tmp_path / "alone"
    assert (alone / "predictions.jsonl").read_bytes() == (trained / "predictions.jsonl").read_bytes()
    assert all_results(alone)["eval_macro_f1"] == all_results(trained)["eval_macro_f1"]
    # Nothing was changed, so no model is saved beside the predictions; the config the run used is the saved one.
    assert not (alone / "config.json").exists()
    assert build_config(str(trained), TASKS).to_dict() == load_config(str(trained)).to_dict()


def test_the_model_options_under_test_cover_every_declared_option():
    """A new option must join TRAINED_WITH: every declared one is set by some case there."""
    flags = {flag.removeprefix("--") for case in TRAINED_WITH.values() for flag in case if flag.startswith("--")}
    set_by = {"thresholds": "tune_thresholds", "pos_weight": "pos_weight_cap", "label_hierarchy": "label_hierarchy",
              "chunk_length": "long_documents"}  # fmt: skip
    for declared in model_options():
        assert set_by.get(declared.name, option_flag(declared)) in flags, declared.name


def test_a_decoding_option_given_takes_effect_and_is_saved_with_the_model(tiny_bert_dir, data, tmp_path):
    trained = train(tiny_bert_dir, tmp_path / "trained", data)
    assert predict_alone(trained, tmp_path / "alone", data, "--at_least_one_label", "topic") == 0
    alone = tmp_path / "alone"
    assert all(row["topic"]["labels"] for row in read_predictions(alone))
    assert json.loads((alone / "config.json").read_text())["at_least_one"] == ["topic"]
    assert (alone / "model.safetensors").exists()  # a whole model, not a config without weights
    card = ModelCard.load(alone / "README.md").text
    assert "In topic, a text with no label over its threshold gets its best one." in card
    assert load_config(str(trained)).at_least_one == []  # the model given was left as it was


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--pooling", "cls"], "--pooling 'cls': --model_name_or_path {trained} was trained with pooling='mean'"),
        (["--loss_type", "focal"], "--loss_type 'focal': --model_name_or_path {trained} was trained with loss_type="),
        (["--label_hierarchy", "HIERARCHY"], "was trained with label_hierarchy=None"),
    ],
)  # fmt: skip
def test_an_option_of_training_given_another_value_without_training_is_refused(
    flags, message, tiny_bert_dir, data, tmp_path, capsys
):
    trained = train(tiny_bert_dir, tmp_path / "trained", data)
    capsys.readouterr()
    assert predict_alone(trained, tmp_path / "alone", data, *flags) == 2
    assert message.format(trained=trained) in capsys.readouterr().err
    assert not (tmp_path / "alone" / "predictions.jsonl").exists()


def test_an_option_given_with_the_models_own_value_is_accepted(tiny_bert_dir, data, tmp_path):
    trained = train(tiny_bert_dir, tmp_path / "trained", data, "--pooling", "cls")
    assert predict_alone(trained, tmp_path / "alone", data, "--pooling", "cls", "--loss_type", "bce") == 0
    assert not (tmp_path / "alone" / "config.json").exists()


def test_continued_training_keeps_the_saved_options_but_those_given(tiny_bert_dir, data, tmp_path):
    trained = train(tiny_bert_dir, tmp_path / "trained", data, "--pooling", "cls", "--at_least_one_label", "mood",
                    "--loss_type", "focal", "--attention_dropout", "0.2")  # fmt: skip
    again = train(trained, tmp_path / "again", data, "--focal_gamma", "1")
    config = load_config(str(again))
    assert (config.pooling, config.at_least_one, config.loss_type, config.focal_gamma) == ("cls", ["mood"], "focal", 1)
    assert config.encoder.attention_probs_dropout_prob == 0.2
    # Training again may change an option of training.
    assert load_config(str(train(trained, tmp_path / "mean", data, "--pooling", "mean"))).pooling == "mean"


def test_prediction_alone_reads_only_the_data_it_predicts(tiny_bert_dir, data, tmp_path, caplog):
    """A train split beside the test data is neither tokenised nor carved into a "validation" split, and an
    unlabelled test file gets no evaluation report of a training slice."""
    trained = train(tiny_bert_dir, tmp_path / "trained", data)
    unlabelled = write_jsonl(tmp_path / "unlabelled.jsonl", [{"text": row["text"]} for row in list_records(5)])
    broken_train = tmp_path / "train.jsonl"
    broken_train.write_text('{"text": "a row without its labels"}\nnot json at all\n', encoding="utf-8")
    args = base_args(trained, tmp_path / "alone", "--train_file", str(broken_train), "--test_file", str(unlabelled),
                     "--do_predict")  # fmt: skip
    assert cli(args) == 0
    assert len(read_predictions(tmp_path / "alone")) == 5
    assert not list((tmp_path / "alone").glob("*report*")) and not list((tmp_path / "alone").glob("*validation*"))
    assert "using 10% of train" not in caplog.text


def test_thresholds_tuned_without_training_save_a_whole_model(tiny_bert_dir, data, tmp_path):
    trained = train(tiny_bert_dir, tmp_path / "trained", data)
    args = base_args(trained, tmp_path / "tuned", "--validation_file", str(data["validation"]), "--tune_thresholds",
                     "--min_positives_to_tune", "1")  # fmt: skip
    assert cli(args) == 0
    tuned = tmp_path / "tuned"
    assert (tuned / "model.safetensors").exists()
    assert load_config(str(tuned)).thresholds != load_config(str(trained)).thresholds
    # The folder holds a finished model: prediction from it works, and training into it is refused.
    assert predict_alone(tuned, tmp_path / "from-tuned", data) == 0
    args = base_args(tiny_bert_dir, tuned, "--train_file", str(data["train"]), "--task_columns", "mood,topic")
    assert cli([*args, "--do_train"]) == 2


def test_a_run_that_changes_a_model_does_not_save_it_over_another(tiny_bert_dir, data, tmp_path, capsys):
    first = train(tiny_bert_dir, tmp_path / "first", data)
    second = train(tiny_bert_dir, tmp_path / "second", data, "--pooling", "cls")
    args = base_args(first, second, "--validation_file", str(data["validation"]), "--tune_thresholds")
    assert cli(args) == 2
    assert f"{second} holds another model than --model_name_or_path {first}" in capsys.readouterr().err
    assert load_config(str(second)).pooling == "cls"


# A value each declared option refuses, as a flag gives it and as MultiTaskConfig takes it (None: no flag sets it).
BAD_VALUES = {
    "pooling": ("max", "max"),
    "classifier_dropout": ("1.0", 1.0),
    "task_weights": ("mood=-1", {"mood": -1.0}),
    "loss_type": ("hinge", "hinge"),
    "focal_gamma": ("-1", -1.0),
    "asl_gamma_positive": ("-0.5", -0.5),
    "asl_gamma_negative": ("-2", -2.0),
    "asl_clip": ("1", 1.0),
    "pos_weight": (None, {"mood": [1.0, 0.0, 1.0]}),
    "label_correlation": ("1.5", {"mood": 1.5}),
    "hierarchy_consistency": ("keep_all", "keep_all"),
    "hierarchy_loss": ("max", "max"),
    "thresholds": (None, {"mood": [0.5, 1.2, 0.5]}),
    "long_documents": ("window", "window"),
    "chunk_pooling": ("sum", "sum"),
    "chunk_length": (None, 1),
    "chunk_stride": ("-1", -1),
    "max_chunks": ("0", 0),
}


def test_bad_values_cover_every_option_with_a_range_or_choices():
    metadata = {declared.name: declared.metadata for declared in model_options()}
    assert {name for name, about in metadata.items() if about["check"] or about["choices"]} == set(BAD_VALUES)


@pytest.mark.parametrize("name", list(BAD_VALUES))
def test_a_bad_option_value_is_refused_by_the_config_by_the_flag_and_by_the_config_file(
    name, tiny_bert_dir, data, tmp_path, capsys
):
    flag_value, config_value = BAD_VALUES[name]
    with pytest.raises(ValueError, match=name):
        MultiTaskConfig(tasks=TASKS, **{name: config_value})
    if flag_value is None:
        return
    declared = next(declared for declared in model_options() if declared.name == name)
    flag = option_flag(declared)
    args = ["--train_file", str(data["train"]), "--task_columns", "mood,topic", "--do_train"]
    assert exit_status(base_args(tiny_bert_dir, tmp_path / "out", *args, f"--{flag}", flag_value)) == 2
    assert f"--{flag}" in capsys.readouterr().err
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps({flag: flag_value}), encoding="utf-8")
    assert exit_status([str(config_file), *base_args(tiny_bert_dir, tmp_path / "out", *args)]) == 2
    assert f"--{flag}" in capsys.readouterr().err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_the_onnx_export_of_a_reloaded_model_carries_its_saved_options(tiny_bert_dir, data, tmp_path):
    trained = train(tiny_bert_dir, tmp_path / "trained", data, "--pooling", "cls", "--at_least_one_label", "mood")
    assert predict_alone(trained, tmp_path / "alone", data, "--inference_backend", "onnx") == 0
    exported = json.loads((tmp_path / "alone" / "onnx" / "config.json").read_text())
    assert (exported["pooling"], exported["at_least_one"]) == ("cls", ["mood"])
    labels = [{task: row[task]["labels"] for task in TASKS} for row in read_predictions(tmp_path / "alone")]
    assert labels == [{task: row[task]["labels"] for task in TASKS} for row in read_predictions(trained)]
