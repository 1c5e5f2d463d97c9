"""Configuration of a transformer encoder with one multi-label head per task.

Self-contained (imports only transformers) so that `save_pretrained` can copy it next to the weights for
`trust_remote_code=True` loading.
"""

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

POOLING_CHOICES = ("mean", "cls", "pooler")
LOSS_CHOICES = ("bce", "focal", "asl")
POS_WEIGHT_LOSSES = ("bce", "focal")  # ASL weighs positives by its own exponents instead
TASK_LABEL_SEPARATOR = "/"
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


class MultiTaskConfig(PreTrainedConfig):
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
        task_weights (`dict[str, float]`, *optional*):
            Weight of each task's loss in the summed loss (default 1.0 per task).
        thresholds (`dict[str, list[float]]`, *optional*):
            Per-label decision thresholds on the sigmoid score (default 0.5 per label).
        pooling (`str`, *optional*, defaults to `"mean"`):
            How a text becomes one vector: `"mean"` (masked mean of the last hidden states), `"cls"` (the first
            token's hidden state) or `"pooler"` (the encoder's own pooler, for encoders that have one, e.g. BERT's
            dense + tanh as `BertForSequenceClassification` uses it).
        classifier_dropout (`float`, *optional*):
            Dropout before the heads. Default: as the encoder's own sequence classifier, its `classifier_dropout`
            where set, else its `hidden_dropout_prob`, else 0.1. Always a number once built (ModernBERT's config,
            which shares the field on disk, accepts no null).
        loss_type (`str`, *optional*, defaults to `"bce"`):
            Per-entry loss: `"bce"`, `"focal"` (BCE × (1 - p_t)^focal_gamma, Lin et al. 2017) or `"asl"` (asymmetric
            loss, Ridnik et al. 2021: positives weighted by (1 - p)^asl_gamma_positive, negatives by
            p_m^asl_gamma_negative with p_m = max(p - asl_clip, 0)).
        pos_weight (`dict[str, list[float]]`, *optional*):
            Per-label weight of the positive term of the BCE (e.g. capped negative/positive ratios); none by default.
    """

    model_type = "multitask_multilabel"
    default_encoder_type = "bert"
    sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")}
    # Per-task losses are logged by the trainer; they must not be mistaken for predictions at evaluation time.
    keys_to_ignore_at_inference = ["task_losses", "hidden_states", "attentions"]

    encoder: PreTrainedConfig | dict | None = None
    tasks: dict[str, list[str]] | None = None
    task_weights: dict[str, float] | None = None
    thresholds: dict[str, list[float]] | None = None
    pooling: str = "mean"
    classifier_dropout: float | None = None
    loss_type: str = "bce"
    focal_gamma: float = 2.0
    asl_gamma_positive: float = 0.0
    asl_gamma_negative: float = 4.0
    asl_clip: float = 0.05
    pos_weight: dict[str, list[float]] | None = None

    def __post_init__(self, **kwargs):
        if isinstance(self.encoder, dict):
            fields = dict(self.encoder)
            self.encoder = AutoConfig.for_model(fields.pop("model_type", self.default_encoder_type), **fields)
        if self.encoder is None:
            self.encoder, kwargs = self._encoder_from_flat_fields(kwargs)
        if self.classifier_dropout is None:
            self.classifier_dropout = _default_classifier_dropout(self.encoder)
        self.tasks = _tasks_in_saved_order(self.tasks or {}, self.id2label)
        _check_tasks(self.tasks)
        if self.pooling not in POOLING_CHOICES:
            raise ValueError(f"pooling must be one of {POOLING_CHOICES}, got {self.pooling!r}")
        if self.loss_type not in LOSS_CHOICES:
            raise ValueError(f"loss_type must be one of {LOSS_CHOICES}, got {self.loss_type!r}")
        if self.pos_weight is not None and self.loss_type not in POS_WEIGHT_LOSSES:
            raise ValueError(f"pos_weight applies to the {' and '.join(POS_WEIGHT_LOSSES)} losses only")
        if self.pos_weight is not None:
            self.pos_weight = _complete_per_label(self.tasks, self.pos_weight, 1.0, "pos_weight")
        self.task_weights = {task: float((self.task_weights or {}).get(task, 1.0)) for task in self.tasks}
        self.thresholds = _complete_per_label(self.tasks, self.thresholds or {}, 0.5, "thresholds")
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
    def label_names(self) -> list[str]:
        """Every label as "task/label", in logit order."""
        return [f"{task}{TASK_LABEL_SEPARATOR}{label}" for task, labels in self.tasks.items() for label in labels]

    @property
    def task_slices(self) -> dict[str, slice]:
        """Where each task's labels sit in the concatenated logits."""
        return task_slices(self.tasks)

    def per_label(self, values: dict[str, list[float]]) -> list[float]:
        """`config.thresholds` or `config.pos_weight` as one value per label, in logit order."""
        return per_label_vector(self.tasks, values)


class BertMultiTaskConfig(MultiTaskConfig):
    """`MultiTaskConfig` of a BERT encoder (BERT itself and BERT-architecture checkpoints: MiniLM, E5, BGE…), the
    config of `BertForMultiTaskMultiLabel`. Also reads configs this recipe saved with the BERT fields alone."""

    model_type = "bert_multitask"


def task_slices(tasks: dict[str, list[str]]) -> dict[str, slice]:
    """Task → the slice its labels occupy in the concatenated logits (and in every per-label vector)."""
    slices, start = {}, 0
    for task, labels in tasks.items():
        slices[task] = slice(start, start + len(labels))
        start += len(labels)
    return slices


def _default_classifier_dropout(encoder: PreTrainedConfig | None) -> float:
    for name in ("classifier_dropout", "hidden_dropout_prob"):
        if getattr(encoder, name, None) is not None:
            return float(getattr(encoder, name))
    return 0.1


def _tasks_in_saved_order(tasks: dict, id2label: dict | None) -> dict[str, list[str]]:
    """Restore the task order after a JSON round trip.

    `PreTrainedConfig.to_json_string` sorts keys, so a saved `tasks` mapping comes back alphabetically. `id2label`
    (keyed by logit index) still holds the true order, so follow it when it describes exactly these tasks.
    """
    tasks = {str(task): [str(label) for label in labels] for task, labels in tasks.items()}
    if not id2label:
        return tasks
    order = []
    for _, name in sorted(id2label.items(), key=lambda item: int(item[0])):
        task = str(name).split(TASK_LABEL_SEPARATOR, 1)[0]
        if task not in order:
            order.append(task)
    if sorted(order) != sorted(tasks):
        return tasks
    return {task: tasks[task] for task in order}


def per_label_vector(tasks: dict[str, list[str]], values: dict[str, list[float]]) -> list[float]:
    """A per-task mapping of per-label values (thresholds, pos_weight) → one value per label in logit order."""
    return [value for task in tasks for value in values[task]]


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


__all__ = ["BertMultiTaskConfig", "MultiTaskConfig", "per_label_vector", "task_slices"]
