import json
import re
from types import SimpleNamespace

import pytest
import torch

from mtl_model.arguments import ArgumentError, check_int8_inference, parse_arguments, resolve_early_stopping


def test_json_config_values_get_their_field_types_and_later_flags_override(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"output_dir": str(tmp_path), "learning_rate": "3e-5", "do_train": True,
                                  "num_train_epochs": 2, "task_columns": "a,b", "report_to": ["none"]}))  # fmt: skip
    model_args, data_args, training_args, given = parse_arguments([str(config), "--num_train_epochs", "5"])
    assert training_args.learning_rate == 3e-5 and isinstance(training_args.learning_rate, float)
    assert training_args.do_train is True and training_args.num_train_epochs == 5
    assert data_args.split_list(data_args.task_columns) == ["a", "b"]
    assert {"learning_rate", "do_train", "num_train_epochs"} <= given


def test_early_stopping_defaults_to_epoch_evaluation_and_overall_macro_f1(tmp_path):
    _, data_args, training_args, given = parse_arguments(
        ["--output_dir", str(tmp_path), "--early_stopping_patience", "2"]
    )
    resolved = resolve_early_stopping(training_args, data_args, given)
    assert (resolved.eval_strategy, resolved.save_strategy) == ("epoch", "epoch")
    assert resolved.load_best_model_at_end and resolved.metric_for_best_model == "macro_f1"
    assert resolved.greater_is_better is True


def test_an_explicit_metric_for_best_model_is_kept(tmp_path):
    argv = ["--output_dir", str(tmp_path), "--early_stopping_patience", "1", "--metric_for_best_model", "eval_loss"]
    _, data_args, training_args, given = parse_arguments(argv)
    resolved = resolve_early_stopping(training_args, data_args, given)
    assert resolved.metric_for_best_model == "eval_loss" and resolved.greater_is_better is False


def test_unreadable_config_file_is_named(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: [unclosed\n")
    with pytest.raises(ArgumentError, match="run.yaml: cannot read the config file"):
        parse_arguments([str(config)])


@pytest.mark.parametrize(
    "do_predict, device, message",
    [(False, "cpu", "add --do_predict"), (True, "cuda:0", "runs on the CPU only; this run uses cuda:0")],
)
def test_int8_inference_is_refused_where_it_would_not_apply(do_predict, device, message):
    model_args = SimpleNamespace(int8_inference=True)
    training_args = SimpleNamespace(do_predict=do_predict, device=torch.device(device))
    with pytest.raises(ArgumentError, match=re.escape(message)):
        check_int8_inference(model_args, training_args)
    check_int8_inference(SimpleNamespace(int8_inference=False), training_args)  # off: nothing to refuse


def test_a_negative_malloc_trim_step_count_is_refused(tmp_path):
    with pytest.raises(ArgumentError, match="--malloc_trim_steps must be 0 .* not -1"):
        parse_arguments(["--output_dir", str(tmp_path), "--malloc_trim_steps", "-1"])


@pytest.mark.skipif(torch.accelerator.is_available(), reason="pinned memory is for machines with an accelerator")
def test_memory_is_not_pinned_without_an_accelerator(tmp_path):
    _, _, training_args, _ = parse_arguments(["--output_dir", str(tmp_path)])
    assert training_args.dataloader_pin_memory is False and training_args.malloc_trim_steps == 10
