import dataclasses
import json
import re

import pytest
import torch

from mtl_model.errors import ArgumentError
from mtl_model.parsing import parse_arguments, resolve_early_stopping


def test_json_config_values_get_their_field_types_and_later_flags_override(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"output_dir": str(tmp_path), "learning_rate": "3e-5", "do_train": True,
                                  "num_train_epochs": 2, "task_columns": "a,b", "report_to": ["none"]}))  # fmt: skip
    model_args, data_args, training_args, _, given = parse_arguments([str(config), "--num_train_epochs", "5"])
    assert training_args.learning_rate == 3e-5 and isinstance(training_args.learning_rate, float)
    assert training_args.do_train is True and training_args.num_train_epochs == 5
    assert data_args.task_column_names == ["a", "b"]
    assert {"learning_rate", "do_train", "num_train_epochs"} <= given


def test_yaml_config_values_are_converted_as_flags_are_and_later_flags_override(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 1e-4\nhead_learning_rate: 3e-3\nmax_seq_length: 64\ntune_thresholds: true\n"
                      "lr_scheduler_kwargs: {power: 2.0}\nloss_type: asl\n")  # fmt: skip
    model_args, data_args, training_args, _, given = parse_arguments(
        [str(config), "--output_dir", str(tmp_path), "--max_seq_length", "32"]
    )
    assert training_args.learning_rate == 1e-4 and model_args.head_learning_rate == 3e-3  # YAML: both strings
    assert data_args.max_seq_length == 32 and data_args.tune_thresholds is True and model_args.loss_type == "asl"
    assert training_args.lr_scheduler_kwargs == {"power": 2.0}
    assert {"learning_rate", "max_seq_length", "output_dir", "loss_type"} <= given


@pytest.mark.parametrize(
    "line, message",
    [
        ("learning_rat: 1e-4", "run.yaml: unknown keys ['learning_rat']"),
        ("pooling: maximum", "--pooling must be one of ['mean', 'cls', 'pooler'], not 'maximum'"),
        ("prediction_scores: some", "--prediction_scores must be one of ['all', 'top_k', 'none'], not 'some'"),
        ("max_seq_length: 0", "--max_seq_length must be at least 1, not 0"),
        ("- learning_rate", "run.yaml: expected a mapping of argument names to values"),
    ],
)
def test_bad_config_file_values_are_refused_by_file_or_flag(line, message, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(line + "\n")
    with pytest.raises(ArgumentError, match=re.escape(message)):
        parse_arguments([str(config), "--output_dir", str(tmp_path)])


def test_early_stopping_defaults_to_epoch_evaluation_and_overall_macro_f1(tmp_path):
    _, data_args, training_args, _, given = parse_arguments(
        ["--output_dir", str(tmp_path), "--early_stopping_patience", "2"]
    )
    resolved = resolve_early_stopping(training_args, data_args, given)
    assert (resolved.eval_strategy, resolved.save_strategy) == ("epoch", "epoch")
    assert resolved.load_best_model_at_end and resolved.metric_for_best_model == "macro_f1"
    assert resolved.greater_is_better is True


def test_an_explicit_metric_for_best_model_is_kept(tmp_path):
    argv = ["--output_dir", str(tmp_path), "--early_stopping_patience", "1", "--metric_for_best_model", "eval_loss"]
    _, data_args, training_args, _, given = parse_arguments(argv)
    resolved = resolve_early_stopping(training_args, data_args, given)
    assert resolved.metric_for_best_model == "eval_loss" and resolved.greater_is_better is False


def test_unreadable_config_file_is_named(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: [unclosed\n")
    with pytest.raises(ArgumentError, match="run.yaml: cannot read the config file"):
        parse_arguments([str(config)])


def test_a_retired_flag_names_what_replaced_it(tmp_path):
    with pytest.raises(ArgumentError, match="--int8_inference was retired; use --inference_backend onnx-int8"):
        parse_arguments(["--output_dir", str(tmp_path), "--int8_inference"])
    config = tmp_path / "run.yaml"
    config.write_text("int8_inference: true\n")
    with pytest.raises(ArgumentError, match=f"{config}: --int8_inference was retired"):
        parse_arguments([str(config)])


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--max_seq_length", "0", "--max_seq_length must be at least 1, not 0"),
        ("--per_device_train_batch_size", "0", "--per_device_train_batch_size must be at least 1, not 0"),
        ("--per_device_eval_batch_size", "-4", "--per_device_eval_batch_size must be at least 1, not -4"),
        ("--gradient_accumulation_steps", "0", "--gradient_accumulation_steps must be at least 1, not 0"),
        ("--learning_rate", "-1e-5", "--learning_rate must be at least 0, not -1e-05"),
        ("--validation_split_percentage", "100", "--validation_split_percentage must be from 1 to 99, not 100"),
        ("--max_train_samples", "0", "--max_train_samples must be at least 1, not 0"),
        ("--attention_dropout", "1", "--attention_dropout must be in [0, 1), not 1.0"),
        ("--asl_clip", "-0.1", "--asl_clip must be in [0, 1), not -0.1"),
        ("--pos_weight_cap", "0", "--pos_weight_cap must be above 0, not 0.0"),
        ("--early_stopping_patience", "0", "--early_stopping_patience must be at least 1, not 0"),
        ("--malloc_trim_steps", "-1", "--malloc_trim_steps must be 0 (never) or a positive step count, not -1"),
    ],
)
def test_numeric_flags_out_of_range_are_refused_by_name(flag, value, message, tmp_path):
    with pytest.raises(ArgumentError, match=re.escape(message)):
        parse_arguments(["--output_dir", str(tmp_path), f"{flag}={value}"])  # "=": argparse reads -1e-5 as a flag


def test_every_range_checked_flag_exists():
    """A misspelt name in the table would check nothing."""
    from mtl_model.arguments import ARGUMENT_CLASSES
    from mtl_model.parsing import NUMERIC_RANGES

    fields = {field.name for group in ARGUMENT_CLASSES for field in dataclasses.fields(group)}
    assert set(NUMERIC_RANGES) <= fields


@pytest.mark.skipif(torch.accelerator.is_available(), reason="pinned memory is for machines with an accelerator")
def test_memory_is_not_pinned_without_an_accelerator(tmp_path):
    _, _, training_args, _, _ = parse_arguments(["--output_dir", str(tmp_path)])
    assert training_args.dataloader_pin_memory is False and training_args.malloc_trim_steps == 10


def test_the_count_of_real_tokens_can_be_asked_for_by_flag(tmp_path):
    argv = ["--output_dir", str(tmp_path), "--include_num_input_tokens_seen", "non_padding"]
    assert parse_arguments(argv)[2].include_num_input_tokens_seen == "non_padding"


def test_onnx_runtime_predicts_in_its_own_batch_size_unless_one_is_given(tmp_path):
    from mtl_model.onnx_classifier import ONNX_EVAL_BATCH_SIZE
    from mtl_model.parsing import onnx_batch_size

    _, _, training_args, _, given = parse_arguments(["--output_dir", str(tmp_path)])
    assert onnx_batch_size(training_args, given) == ONNX_EVAL_BATCH_SIZE != training_args.per_device_eval_batch_size
    _, _, training_args, _, given = parse_arguments(
        ["--output_dir", str(tmp_path), "--per_device_eval_batch_size", "8"]
    )
    assert onnx_batch_size(training_args, given) == 8
