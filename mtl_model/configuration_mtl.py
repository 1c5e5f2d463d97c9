"""Configuration of a transformer encoder with one multi-label head per task, and the declaration of every model
option (`option`): its type, default, help, choices and range, from which the command line's flags are made
(`arguments.py`) and against which both a flag and `MultiTaskConfig(...)` are checked (`option_problem`).

Self-contained (imports only transformers and the numpy-only `decoding` next to it) so that `save_pretrained` can
copy it next to the weights for `trust_remote_code=True` loading.
"""

from dataclasses import Field, field, fields

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .decoding import (
    CONSISTENCY_CHOICES,
    TASK_LABEL_SEPARATOR,
    Decoding,
    TaskLayout,
    check_label_hierarchy,
    per_label_vector,
    tasks_in_saved_order,
)

POOLING_CHOICES = ("mean", "cls", "pooler")
LONG_DOCUMENT_CHOICES = ("truncate", "chunk")
CHUNK_POOLING_CHOICES = ("max", "mean", "attention")
LOSS_CHOICES = ("bce", "focal", "asl")
POS_WEIGHT_LOSSES = ("bce", "focal")  # ASL weighs positives by its own exponents instead
HIERARCHY_LOSS_CHOICES = ("none", "mcloss")
# What threshold tuning maximises: each label's own F1, or its task's micro-F1 (one threshold per task).
THRESHOLD_OBJECTIVES = ("label_f1", "micro_f1")
# When an option acts: in training only (so a saved model's value can change only by training it again), or in
# decoding (a model reloaded to predict takes a value given for it).
TRAINING, DECODING = "training", "decoding"
# The label value of an entry whose task is not annotated for that example: left out of the loss and metrics.
IGNORE_INDEX = -100
# Where `get_config_dict` hands on the encoder's model type of a saved flat config.
ENCODER_TYPE_KEY = "encoder_model_type"
# What configs of this recipe saved before the encoder became a sub-config name their (BERT) encoder.
LEGACY_MODEL_TYPES = {"bert_multitask": "bert"}
# Keys of a saved config.json that belong to the outer config, not to the encoder: `PreTrainedConfig.__post_init__`
# reads the first ones from its keyword arguments, `auto_map` names our own classes.
OUTER_KEYWORDS = ("attn_implementation", "experts_implementation", "output_attentions", "torch_dtype", "name_or_path",
                  "_commit_hash", "num_labels", "auto_map")  # fmt: skip


def at_least(low: float) -> tuple:
    return lambda value: value >= low, f"at least {low}"


def in_unit_interval(upper_open: bool = False) -> tuple:
    if upper_open:
        return lambda value: 0 <= value < 1, "in [0, 1)"
    return lambda value: 0 <= value <= 1, "in [0, 1]"


def option(default, help: str, applies: str, choices=None, check=None, flag: str | bool = True, flag_format=None):
    """A model option: a config field declared once, with what the command line makes of it.

    applies: `TRAINING` or `DECODING` (see there). choices: the values allowed. check: (predicate, description) of
    each number the value holds (a scalar, or the numbers of a per-task or per-label mapping). flag: the flag's name
    when not the field's, False for an option no flag sets. flag_format: how the flag's string becomes the value
    when their types differ: "tasks" ('a,b' → ['a', 'b']) or "per_task_numbers" ('0.2' or 'a=0.2,b=1' → {task: n}).
    """
    metadata = {"help": help, "applies": applies, "choices": choices, "check": check, "flag_format": flag_format,
                "flag": None if flag is False else flag}  # fmt: skip
    return field(default=default, metadata=metadata)


class MultiTaskConfig(TaskLayout, PreTrainedConfig):
    r"""
    The task layout of a multi-task, multi-label classifier around any encoder's own config (`encoder`).

    In memory the encoder's config is a sub-config. On disk it is written flat, the encoder's fields and
    `model_type` at the top level beside ours: `AutoTokenizer.from_pretrained` reads `config.json` and, finding a
    model type transformers knows, needs no `trust_remote_code` (it would stop at a prompt otherwise), and loading
    without remote code gives the encoder's own config, as for any fine-tuned checkpoint.

    Args:
        encoder (`PreTrainedConfig` or `dict`):
            The encoder's config (BERT, RoBERTa, DeBERTa-v2, ModernBERT, …). Built from the flat fields when loaded.
        tasks (`dict[str, list[str]]`):
            Ordered mapping task name → label names. Logits and labels of all tasks are concatenated in this order.
        Every other field is a model option, declared below with its help, choices and range (`option`).
    """

    model_type = "multitask_multilabel"
    default_encoder_type = "bert"
    sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")}
    # Per-task losses are logged by the trainer; they must not be mistaken for predictions at evaluation time.
    keys_to_ignore_at_inference = ["task_losses", "chunk_scores", "hidden_states", "attentions"]

    encoder: PreTrainedConfig | dict | None = None
    tasks: dict[str, list[str]] | None = None
    pooling: str = option(
        "mean",
        "Text vector: mean (masked mean of the last hidden states), cls (the first token's state) or pooler (the "
        "encoder's own pooler, where it has one, e.g. BERT's dense + tanh as BertForSequenceClassification uses it).",
        TRAINING,
        choices=POOLING_CHOICES,
    )
    long_documents: str = option(
        "truncate",
        "A text longer than the chunk length: truncate (its first tokens only) or chunk (all its tokens, in chunks of "
        "chunk_length tokens overlapping by chunk_stride, at most max_chunks, each scored, their logits pooled per "
        "text by chunk_pooling; the text is the unit of the loss, the metrics and the predictions).",
        TRAINING,
        choices=LONG_DOCUMENT_CHOICES,
    )
    chunk_pooling: str = option(
        "max",
        "How a chunked text's chunk logits make its logits: max or mean per label, or attention (per label, a "
        "softmax over the text's chunks of a learned score of each chunk's vector weighs their logits: PLM-ICD's "
        "label attention, over chunks).",
        TRAINING,
        choices=CHUNK_POOLING_CHOICES,
    )
    chunk_length: int | None = option(
        None,
        "Tokens per chunk, special tokens included: the training run's --max_seq_length (set by it).",
        TRAINING,
        check=at_least(2),
        flag=False,
    )
    chunk_stride: int | None = option(
        None,
        "Tokens of overlap between consecutive chunks of a text (the tokenizer's stride), below the chunk length "
        "minus the special tokens. Default: a quarter of the chunk length.",
        DECODING,
        check=at_least(0),
    )
    max_chunks: int = option(
        16,
        "Chunks kept per text, from its start; the rest are dropped and counted in the log, as truncation is.",
        DECODING,
        check=at_least(1),
    )
    classifier_dropout: float | None = option(
        None,
        "Dropout before the heads. Default: as the encoder's own sequence classifier, its classifier_dropout where "
        "set, else its hidden_dropout_prob, else 0.1.",
        TRAINING,
        check=in_unit_interval(upper_open=True),
    )
    task_weights: dict[str, float] | None = option(
        None,
        "Loss weight per task in the summed loss, e.g. 'emotion=1,sentiment=0.5', or one weight for every task "
        "(default 1 each).",
        TRAINING,
        check=at_least(0),
        flag_format="per_task_numbers",
    )
    loss_type: str = option(
        "bce",
        "Per-entry loss: bce, focal (BCE × (1 - p_t)^focal_gamma, Lin et al. 2017) or asl (asymmetric loss, Ridnik "
        "et al. 2021: positives weighted by (1 - p)^asl_gamma_positive, negatives by p_m^asl_gamma_negative with "
        "p_m = max(p - asl_clip, 0)).",
        TRAINING,
        choices=LOSS_CHOICES,
    )
    focal_gamma: float = option(2.0, "Focusing exponent of the focal loss.", TRAINING, check=at_least(0))
    asl_gamma_positive: float = option(0.0, "ASL exponent on positives.", TRAINING, check=at_least(0))
    asl_gamma_negative: float = option(4.0, "ASL exponent on negatives.", TRAINING, check=at_least(0))
    asl_clip: float = option(
        0.05, "ASL probability margin below which negatives cost 0.", TRAINING, check=in_unit_interval(True)
    )
    pos_weight: dict[str, list[float]] | None = option(
        None,
        "Per task, each label's weight of the positive term of the BCE (the flag --pos_weight_cap sets them to the "
        "training negative/positive ratios, capped); none by default.",
        TRAINING,
        check=(lambda value: value > 0, "above 0"),
        flag=False,
    )
    label_correlation: dict[str, float] | None = option(
        None,
        "Mix SpanEmo's label-correlation loss (Alhuzali & Ananiadou, EACL 2021) into each task's loss with this "
        "weight w (0.2 in the paper), or per task, e.g. 'emotion=0.2': (1 - w) · the entry loss + w · the mean over "
        "(absent, present) label pairs of exp(p_absent - p_present); none by default.",
        TRAINING,
        check=in_unit_interval(),
        flag="label_correlation_weight",
        flag_format="per_task_numbers",
    )
    label_hierarchy: dict[str, list[str]] | None = option(
        None,
        'Parent "task/label" → its children "task/label", in other tasks than their parent, each label under one '
        'parent at most, no cycle (e.g. {"ekman/joy": ["emotion/joy", "emotion/amusement"]}); read from the JSON '
        "file of the flag --label_hierarchy.",
        TRAINING,
        flag=False,
    )
    hierarchy_constraint: bool = option(
        True,
        "With a label hierarchy: raise each parent's score to its descendants' highest (C-HMCNN, Giunchiglia & "
        "Lukasiewicz, NeurIPS 2020) and make the decisions agree (hierarchy_consistency), so that no prediction "
        "breaks the hierarchy. False keeps the hierarchy for the violation metric only.",
        DECODING,
    )
    hierarchy_consistency: str = option(
        "add_parents",
        "With the constraint, how per-label decisions are made to agree with the hierarchy: add_parents (predict "
        "the ancestors of every predicted label) or drop_orphans (drop a predicted label whose parent is not "
        "predicted, from the top down; BENCHMARKS.md compares them).",
        DECODING,
        choices=CONSISTENCY_CHOICES,
    )
    hierarchy_loss: str = option(
        "none",
        "With a label hierarchy: none, or mcloss (C-HMCNN's max-constraint loss: a label's entry loss taken on its "
        "constrained score, over its positive descendants only when the label is present).",
        TRAINING,
        choices=HIERARCHY_LOSS_CHOICES,
    )
    at_least_one: list[str] | None = option(
        None,
        "Tasks (comma-separated) where a text with no label over its threshold gets its highest-scoring label "
        "(under a hierarchy, the finest task first, the label with its ancestors), e.g. 'emotion,ekman,sentiment'.",
        DECODING,
        flag="at_least_one_label",
        flag_format="tasks",
    )
    thresholds: dict[str, list[float]] | None = option(
        None,
        "Per task, each label's decision threshold on its score (its sigmoid, constrained under a hierarchy); 0.5 "
        "by default, set by --tune_thresholds.",
        DECODING,
        check=in_unit_interval(),
        flag=False,
    )

    def __post_init__(self, **kwargs):
        if isinstance(self.encoder, dict):
            encoder_fields = dict(self.encoder)
            self.encoder = AutoConfig.for_model(encoder_fields.pop("model_type", self.default_encoder_type),
                                                **encoder_fields)  # fmt: skip
        if self.encoder is None:
            self.encoder, kwargs = self._encoder_from_flat_fields(kwargs)
        if self.classifier_dropout is None:
            self.classifier_dropout = _default_classifier_dropout(self.encoder)
        self.tasks = tasks_in_saved_order(self.tasks or {}, self.id2label)
        _check_tasks(self.tasks)
        if self.pos_weight is not None and self.loss_type not in POS_WEIGHT_LOSSES:
            raise ValueError(
                f"pos_weight applies to loss_type {' and '.join(POS_WEIGHT_LOSSES)} only, not {self.loss_type!r}"
            )
        if self.pos_weight is not None:
            self.pos_weight = _complete_per_label(self.tasks, self.pos_weight, 1.0, "pos_weight")
        self.task_weights = {task: float((self.task_weights or {}).get(task, 1.0)) for task in self.tasks}
        self.label_correlation = {task: float(w) for task, w in (self.label_correlation or {}).items() if w}
        self.at_least_one = list(self.at_least_one or [])
        for name in ("task_weights", "label_correlation", "at_least_one"):
            unknown = sorted(set(getattr(self, name)) - set(self.tasks))
            if unknown:
                raise ValueError(f"{name} names tasks {unknown} that are not among {list(self.tasks)}")
        if self.label_hierarchy:
            check_label_hierarchy(self.tasks, self.label_hierarchy)
        if self.hierarchy_loss != "none" and not self.label_hierarchy:
            raise ValueError(f"hierarchy_loss={self.hierarchy_loss!r} needs a label_hierarchy")
        self.thresholds = _complete_per_label(self.tasks, self.thresholds or {}, 0.5, "thresholds")
        for declared in model_options():
            problem = option_problem(declared, getattr(self, declared.name))
            if problem:
                raise ValueError(f"{declared.name} {problem}")
        if self.tasks:
            # The stock pipeline and AutoModelForSequenceClassification users see every label as "task/label".
            self.id2label = dict(enumerate(self.label_names))
            self.label2id = {name: index for index, name in self.id2label.items()}
            self.problem_type = "multi_label_classification"
        super().__post_init__(**kwargs)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """The saved dict, its `model_type` (the encoder's, see the class docstring) handed on as the encoder's type:
        `from_pretrained` would otherwise warn that the checkpoint holds a model of another type."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if "tasks" in config_dict and "model_type" in config_dict:
            config_dict = {**config_dict, "model_type": cls.model_type, ENCODER_TYPE_KEY: config_dict["model_type"]}
        return config_dict, kwargs

    @classmethod
    def _encoder_from_flat_fields(cls, kwargs: dict) -> tuple[PreTrainedConfig | None, dict]:
        """A flat config (as saved, or BERT fields given as keywords) → (encoder config, the outer keywords left).
        Every keyword that is neither a field of ours nor one of `OUTER_KEYWORDS` is the encoder's."""
        outer = {key: value for key, value in kwargs.items() if key in OUTER_KEYWORDS}
        fields = {key: value for key, value in kwargs.items() if key not in OUTER_KEYWORDS}
        saved_type = fields.pop("model_type", None)
        encoder_type = fields.pop(ENCODER_TYPE_KEY, None) or saved_type
        fields.pop("transformers_version", None)
        if encoder_type is None and not fields:
            return None, outer  # no encoder described: the sub-config's default
        encoder_type = LEGACY_MODEL_TYPES.get(encoder_type, encoder_type or cls.default_encoder_type)
        return AutoConfig.for_model(encoder_type, **fields), outer

    def to_dict(self) -> dict:
        """Flat: the encoder's fields and `model_type`, then ours over them (see the class docstring)."""
        output = super().to_dict()
        encoder = output.pop("encoder")
        return {**encoder, **output, "model_type": encoder["model_type"]}

    def to_diff_dict(self) -> dict:
        # The stock diff drops values equal to the defaults of *this* class, whose default encoder is a BERT; for
        # another encoder those defaults are not its own, so a reload would change them. Every field is written.
        return self.to_dict()

    @property
    def hidden_size(self) -> int:
        return self.encoder.hidden_size

    @property
    def decoding(self) -> Decoding:
        """The tasks, thresholds, hierarchy and rules that turn this model's scores into labels."""
        return Decoding.from_config(self)

    def per_label(self, values: dict[str, list[float]]) -> list[float]:
        """`config.thresholds` or `config.pos_weight` as one value per label, in logit order."""
        return per_label_vector(self.tasks, values)


class BertMultiTaskConfig(MultiTaskConfig):
    """`MultiTaskConfig` of a BERT encoder (BERT itself and BERT-architecture checkpoints: MiniLM, E5, BGE…), the
    config of `BertForMultiTaskMultiLabel`. Also reads configs this recipe saved with the BERT fields alone."""

    model_type = "bert_multitask"


def _default_classifier_dropout(encoder: PreTrainedConfig | None) -> float:
    for name in ("classifier_dropout", "hidden_dropout_prob"):
        if getattr(encoder, name, None) is not None:
            return float(getattr(encoder, name))
    return 0.1


def model_options() -> list[Field]:
    """The declared model options (`option`), in declaration order."""
    return [declared for declared in fields(MultiTaskConfig) if "applies" in declared.metadata]


def option_flag(declared: Field) -> str | None:
    """The command-line flag that sets a model option, None for one that no flag sets."""
    flag = declared.metadata["flag"]
    return declared.name if flag is True else flag


def option_problem(declared: Field, value) -> str | None:
    """What is wrong with `value` for the model option `declared`, e.g. "must be at least 0, not -1"; None when it
    is allowed (None always is: the option unset)."""
    choices, check = declared.metadata["choices"], declared.metadata["check"]
    if value is None:
        return None
    if choices and value not in choices:
        return f"must be one of {list(choices)}, not {value!r}"
    if check:
        allowed, description = check
        bad = [number for number in _numbers_in(value) if not allowed(number)]
        if bad:
            return f"must be {description}, not {bad[0]}"
    return None


def _numbers_in(value) -> list:
    """The numbers of a scalar, a list or a (per-task) mapping of either."""
    if isinstance(value, dict):
        return [number for item in value.values() for number in _numbers_in(item)]
    if isinstance(value, list | tuple):
        return [number for item in value for number in _numbers_in(item)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


def check_task_name(task: str) -> None:
    if not task or TASK_LABEL_SEPARATOR in task:
        raise ValueError(f"Task name {task!r} must be non-empty and may not contain {TASK_LABEL_SEPARATOR!r}")


def _check_tasks(tasks: dict[str, list[str]]) -> None:
    for task, labels in tasks.items():
        check_task_name(task)
        if not labels:
            raise ValueError(f"Task {task!r} has no labels")
        if len(set(labels)) != len(labels):
            raise ValueError(f"Task {task!r} lists a label twice: {labels}")


def _complete_per_label(
    tasks: dict[str, list[str]], values: dict, default: float, what: str
) -> dict[str, list[float]]:
    """One float per label for every task; a task not given gets `default` for each of its labels."""
    completed = {}
    for task, labels in tasks.items():
        task_values = [float(value) for value in values.get(task, [default] * len(labels))]
        if len(task_values) != len(labels):
            raise ValueError(f"Task {task!r} has {len(labels)} labels but {len(task_values)} {what}")
        completed[task] = task_values
    return completed


__all__ = ["BertMultiTaskConfig", "MultiTaskConfig", "model_options", "option_flag", "option_problem"]
