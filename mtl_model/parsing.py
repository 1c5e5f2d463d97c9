"""From the command line (flags, or a JSON/YAML file and flags that override it) to the argument dataclasses, with
the checks that must run before any data or model loads, and the defaults that depend on what the user gave."""

import dataclasses
import importlib.util
import json
import logging
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainingArguments

from .arguments import (
    ARGUMENT_CLASSES,
    OPTION_FLAGS,
    DataTrainingArguments,
    ModelArguments,
    SearchArguments,
    check_option_flag,
)
from .configuration_mtl import at_least, in_unit_interval
from .errors import ArgumentError
from .onnx_classifier import ONNX_EVAL_BATCH_SIZE

logger = logging.getLogger(__name__)

CONFIG_FILE_SUFFIXES = (".json", ".yaml", ".yml")
DEFAULT_METRIC = "macro_f1"


# Every numeric flag but the model options' (declared with their ranges in the config, see `option`) a bad value of
# which would fail late (a traceback deep in training) or silently mean nothing: its allowed values, checked once
# parsed, before any data or model loads. None (unset) is always allowed.
NUMERIC_RANGES = {
    "max_seq_length": at_least(1),
    "chunk_budget": at_least(1),
    "max_train_samples": at_least(1),
    "max_eval_samples": at_least(1),
    "max_predict_samples": at_least(1),
    "validation_split_percentage": (lambda value: 1 <= value <= 99, "from 1 to 99"),
    "preprocessing_num_workers": at_least(1),
    "min_positives_to_tune": at_least(1),
    "prediction_top_k": at_least(1),
    "early_stopping_patience": at_least(1),
    "early_stopping_threshold": at_least(0),
    "attention_dropout": in_unit_interval(upper_open=True),
    "pos_weight_cap": (lambda value: value > 0, "above 0"),
    "head_learning_rate": at_least(0),
    "learning_rate": at_least(0),
    "weight_decay": at_least(0),
    "max_grad_norm": at_least(0),
    "num_train_epochs": at_least(0),
    "warmup_steps": at_least(0),
    "per_device_train_batch_size": at_least(1),
    "per_device_eval_batch_size": at_least(1),
    "gradient_accumulation_steps": at_least(1),
    "eval_accumulation_steps": at_least(1),
    "save_total_limit": at_least(1),
    "dataloader_num_workers": at_least(0),
    "seed": at_least(0),
    "malloc_trim_steps": (lambda value: value >= 0, "0 (never) or a positive step count"),
    "ema_decay": (lambda value: 0 < value < 1, "in (0, 1)"),
    "hpo_trials": at_least(1),
}


def check_numeric_ranges(arguments) -> None:
    """Each flag of `NUMERIC_RANGES` that an argument dataclass holds, within its range; else name the flag."""
    for name, (allowed, description) in NUMERIC_RANGES.items():
        value = getattr(arguments, name, None)
        if value is not None and not isinstance(value, bool) and not allowed(value):
            raise ArgumentError(f"--{name} must be {description}, not {value}")


def parse_arguments(
    argv: list[str],
) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments, SearchArguments, set[str]]:
    """Flags, or a JSON/YAML file optionally followed by flags that override it, → the four argument dataclasses
    and the set of keys the user gave."""
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    given = given_flags(argv)
    check_retired(given, "")
    if argv and argv[0].endswith(CONFIG_FILE_SUFFIXES):
        file_values = read_config_file(argv[0])
        # HfArgumentParser's own parse_json_file / parse_yaml_file build the dataclasses from the file alone: no
        # flags on top, and no conversion (YAML reads `2e-5` as a string). So, as trl's TrlParser does, the file's
        # values become the parser's defaults: flags after the file override them, and argparse converts a string
        # default with its field's type exactly as it converts the same value given as a flag.
        parser.set_defaults(**file_values)
        given |= set(file_values)
        argv = argv[1:]
    try:
        model_args, data_args, training_args, search_args = parser.parse_args_into_dataclasses(args=argv)
    except ArgumentError:
        raise
    except ValueError as error:  # e.g. TrainingArguments' own consistency checks
        raise ArgumentError(str(error)) from None
    for arguments in (model_args, data_args, training_args, search_args):
        check_choices(arguments)
        check_numeric_ranges(arguments)
    for flag, declared in OPTION_FLAGS.items():
        if not declared.metadata["flag_format"]:  # the others are checked once read (`given_options`)
            check_option_flag(flag, declared, getattr(model_args, flag))
    return model_args, data_args, training_args, search_args, given


def given_flags(argv: list[str]) -> set[str]:
    """The names of the flags on a command line; a boolean's `--no_X` counts as X given."""
    names = {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}
    booleans = {argument.name for group in ARGUMENT_CLASSES for argument in dataclasses.fields(group)
                if argument.type is bool}  # fmt: skip
    return {name.removeprefix("no_") if name.removeprefix("no_") in booleans else name for name in names}


def read_config_file(path: str) -> dict:
    """The JSON or YAML mapping of a config file, every key an argument of ours; else an error naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise ArgumentError(f"{path}: cannot read the config file: {error}") from None
    if not isinstance(values, dict):
        raise ArgumentError(f"{path}: expected a mapping of argument names to values")
    check_retired(set(values), f"{path}: ")
    known = {argument.name for group in ARGUMENT_CLASSES for argument in dataclasses.fields(group) if argument.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ArgumentError(f"{path}: unknown keys {unknown}; see `run_mtl_classification.py --help`")
    return values


# Flags of earlier versions, and what replaced them.
RETIRED_FLAGS = {
    "int8_inference": "--inference_backend onnx-int8 (ONNX Runtime's int8, faster at no worse F1 than torch.ao's "
    'deprecated dynamic quantisation: BENCHMARKS.md, "Deploy")',
}


def check_retired(names: set[str], where: str) -> None:
    for name in sorted(names & RETIRED_FLAGS.keys()):
        raise ArgumentError(f"{where}--{name} was retired; use {RETIRED_FLAGS[name]}")


def check_choices(arguments) -> None:
    """Each field with `choices` holds one of them. argparse checks the choices of flags only, not of the defaults
    that a config file sets."""
    for argument in dataclasses.fields(arguments):
        choices = argument.metadata.get("choices")
        value = getattr(arguments, argument.name)
        if choices and value is not None and value not in choices:
            raise ArgumentError(f"--{argument.name} must be one of {list(choices)}, not {value!r}")


def onnx_batch_size(training_args, given: set[str]) -> int:
    """Prediction through ONNX Runtime: --per_device_eval_batch_size when given, else ONNX Runtime's own default
    (evaluation, in PyTorch, keeps the other)."""
    return training_args.per_device_eval_batch_size if "per_device_eval_batch_size" in given else ONNX_EVAL_BATCH_SIZE


def resolve_early_stopping(
    training_args: TrainingArguments, data_args: DataTrainingArguments, given: set[str]
) -> TrainingArguments:
    """Make early stopping and best-model loading work from one flag, instead of assertions once training starts.

    With `--early_stopping_patience`, evaluation and saving default to every epoch and the best model is loaded at
    the end. When the user named no `metric_for_best_model`, TrainingArguments quietly picks `loss`; we pick the
    overall macro F1 instead.
    """
    changes = {}
    if data_args.early_stopping_patience is not None:
        if training_args.eval_strategy == "no":
            if "eval_strategy" in given:
                raise ArgumentError("--early_stopping_patience needs evaluations: --eval_strategy must not be 'no'")
            changes.update(eval_strategy="epoch", save_strategy="epoch")
            logger.info("Early stopping: evaluating and saving every epoch")
        elif training_args.save_strategy != training_args.eval_strategy and "save_strategy" not in given:
            changes.update(save_strategy=training_args.eval_strategy.value)
        changes["load_best_model_at_end"] = True
    if (changes.get("load_best_model_at_end") or training_args.load_best_model_at_end) and (
        "metric_for_best_model" not in given
    ):
        changes.update(metric_for_best_model=DEFAULT_METRIC, greater_is_better=True)
    try:
        resolved = dataclasses.replace(training_args, **changes) if changes else training_args
    except ValueError as error:
        raise ArgumentError(f"Early stopping / best model flags: {error}") from None
    if resolved.ema_decay is not None and resolved.load_best_model_at_end:
        # The checkpoints hold the trained weights, not their average: the "best" one would replace the average.
        raise ArgumentError("--ema_decay saves the weights' average as the model; it does not combine with "
                            "--load_best_model_at_end (or --early_stopping_patience, which sets it)")  # fmt: skip
    return resolved


def check_inference_backend(model_args, training_args) -> None:
    """ONNX Runtime predicts the test split, in one process, with the `onnx` extra installed: refuse it before
    training where it would not run."""
    if model_args.inference_backend == "torch":
        return
    flag = f"--inference_backend {model_args.inference_backend}"
    if not training_args.do_predict:
        raise ArgumentError(f"{flag} applies to the test predictions: add --do_predict")
    if training_args.world_size > 1:
        raise ArgumentError(f"{flag} predicts in one process; run the prediction alone, without data parallelism")
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None:
        raise ArgumentError(f'{flag} needs ONNX Runtime and the ONNX exporter: pip install ".[onnx]"')


def check_metric_for_best_model(training_args, names: list[str]) -> None:
    """`metric_for_best_model` must be a metric we compute (or the loss); checked before the model loads."""
    if training_args.metric_for_best_model is not None:
        check_metric_name("--metric_for_best_model", training_args.metric_for_best_model, names)


def check_search_arguments(search_args, training_args, given: set[str]) -> None:
    """A search runs one process per worker (several workers share a study through --hpo_storage), needs its
    engine installed, and its flags mean nothing without --hpo_trials: refuse before any data loads."""
    if not search_args.hpo_trials:
        stray = sorted(name for name in given if name.startswith("hpo_") and name != "hpo_trials")
        if stray:
            raise ArgumentError(f"--{stray[0]} sets up a search: add --hpo_trials N")
        return
    if training_args.world_size > 1:
        raise ArgumentError("--hpo_trials runs its trials one process each: start several workers on one "
                            "--hpo_storage and --hpo_study_name instead of a distributed launch")  # fmt: skip
    if search_args.hpo_score_test and search_args.hpo_backend != "optuna":
        raise ArgumentError("--hpo_score_test keeps each trial's test score in its Optuna study: --hpo_backend optuna")
    engine = {"optuna": ("optuna", "search"), "ray": ("ray.tune", "ray")}[search_args.hpo_backend]
    if importlib.util.find_spec(engine[0].split(".")[0]) is None:
        raise ArgumentError(f'--hpo_backend {search_args.hpo_backend} needs {engine[0]}: pip install ".[{engine[1]}]"')


def check_search_objective(objective: str, names: list[str]) -> None:
    """`--hpo_objective` must be a metric the trials compute (or the loss), as `--metric_for_best_model`."""
    check_metric_name("--hpo_objective", objective, names)


def check_metric_name(flag: str, metric: str, names: list[str]) -> None:
    if metric.removeprefix("eval_") not in [*names, "loss"]:
        raise ArgumentError(f"{flag} {metric!r} is not computed; choose one of: loss, {', '.join(names)}")
