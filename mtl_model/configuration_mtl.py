"""Configuration of a transformer encoder with one multi-label head per task.

Self-contained (imports only transformers) so that `save_pretrained` can copy it next to the weights for
`trust_remote_code=True` loading.
"""

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

POOLING_CHOICES = ("mean", "cls", "pooler")
LOSS_CHOICES = ("bce", "focal", "asl")
POS_WEIGHT_LOSSES = ("bce", "focal")  # ASL weighs positives by its own exponents instead
HIERARCHY_LOSS_CHOICES = ("none", "mcloss")
# How constrained decoding makes per-label decisions agree with the hierarchy: add the ancestors of every predicted
# label, or drop every predicted label whose parent is not predicted.
CONSISTENCY_CHOICES = ("add_parents", "drop_orphans")
CHOICES = {"pooling": POOLING_CHOICES, "loss_type": LOSS_CHOICES, "hierarchy_loss": HIERARCHY_LOSS_CHOICES,
           "hierarchy_consistency": CONSISTENCY_CHOICES}  # fmt: skip
# What threshold tuning maximises: each label's own F1, or its task's micro-F1 (one threshold per task).
THRESHOLD_OBJECTIVES = ("label_f1", "micro_f1")
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
            Per-label decision thresholds on the label's score (its sigmoid, constrained under a hierarchy; default
            0.5 per label).
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
        label_correlation (`dict[str, float]`, *optional*):
            Per task, the weight w of SpanEmo's label-correlation loss (Alhuzali & Ananiadou, EACL 2021): the task's
            loss is (1 - w) · its entry loss + w · the mean over (absent, present) label pairs of
            exp(p_absent - p_present). Tasks not named: none.
        label_hierarchy (`dict[str, list[str]]`, *optional*):
            Parent "task/label" → its children "task/label", children in other tasks than their parent, each label
            under one parent at most, no cycle (e.g. `{"ekman/joy": ["emotion/joy", "emotion/amusement"]}`).
        hierarchy_constraint (`bool`, *optional*, defaults to `True`):
            With a hierarchy, decode consistently: each label's score is raised to the highest score of its
            descendants (C-HMCNN, Giunchiglia & Lukasiewicz, NeurIPS 2020), and the decisions made to agree as
            `hierarchy_consistency` says. False keeps the hierarchy for the violation metric only.
        hierarchy_consistency (`str`, *optional*, defaults to `"add_parents"`):
            Per-label thresholds can pass a child and not its (higher-scored) parent: `"add_parents"` then predicts
            the ancestors of every predicted label, `"drop_orphans"` drops every predicted label whose parent is not
            predicted, from the top of the hierarchy down.
        hierarchy_loss (`str`, *optional*, defaults to `"none"`):
            `"mcloss"`: C-HMCNN's max-constraint loss: the entry loss of a label is taken on its constrained score,
            over its positive descendants only when the label is present.
        at_least_one (`list[str]`, *optional*):
            Tasks where a row with no label over its threshold gets its highest-scoring label (under a hierarchy,
            the finest task first, the label with its ancestors).
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
    label_correlation: dict[str, float] | None = None
    label_hierarchy: dict[str, list[str]] | None = None
    hierarchy_constraint: bool = True
    hierarchy_consistency: str = "add_parents"
    hierarchy_loss: str = "none"
    at_least_one: list[str] | None = None

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
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.pos_weight is not None and self.loss_type not in POS_WEIGHT_LOSSES:
            raise ValueError(f"pos_weight applies to the {' and '.join(POS_WEIGHT_LOSSES)} losses only")
        if self.pos_weight is not None:
            self.pos_weight = _complete_per_label(self.tasks, self.pos_weight, 1.0, "pos_weight")
        self.task_weights = {task: float((self.task_weights or {}).get(task, 1.0)) for task in self.tasks}
        self.label_correlation = {task: float(w) for task, w in (self.label_correlation or {}).items() if w}
        self.at_least_one = list(self.at_least_one or [])
        for option, named in (("label_correlation", self.label_correlation), ("at_least_one", self.at_least_one)):
            unknown = sorted(set(named) - set(self.tasks))
            if unknown:
                raise ValueError(f"{option} names tasks {unknown} that are not among {list(self.tasks)}")
        if self.label_hierarchy:
            check_label_hierarchy(self.tasks, self.label_hierarchy)
        if self.hierarchy_loss != "none" and not self.label_hierarchy:
            raise ValueError(f"hierarchy_loss={self.hierarchy_loss!r} needs a label_hierarchy")
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

    @property
    def descendants(self) -> dict[int, list[int]]:
        """Logit index of each label with children → the logit indices of all its descendants (children,
        grandchildren, …); empty without a hierarchy."""
        return descendant_indices(self.label_names, self.label_hierarchy or {})

    @property
    def parents_top_down(self) -> list[tuple[int, int]]:
        """(parent, child) logit indices of every edge of the hierarchy, each parent's edges after the edges above
        it: the order in which dropping orphans reaches a whole subtree."""
        index = {name: position for position, name in enumerate(self.label_names)}
        depth = label_depths(self.label_hierarchy or {})
        edges = sorted(((parent, child) for child, parent in child_to_parent(self.label_hierarchy or {}).items()),
                       key=lambda edge: depth[edge[1]])  # fmt: skip
        return [(index[parent], index[child]) for parent, child in edges]

    @property
    def at_least_one_finest_first(self) -> list[str]:
        """`at_least_one`'s tasks, those deepest in the hierarchy first: a label chosen in a finer task brings its
        ancestors, so a coarser task it fills needs no label of its own (which could disagree with them)."""
        depth = label_depths(self.label_hierarchy or {})
        task_depth = {task: max(depth.get(f"{task}{TASK_LABEL_SEPARATOR}{label}", 0) for label in self.tasks[task])
                      for task in self.at_least_one}  # fmt: skip
        return sorted(self.at_least_one, key=lambda task: -task_depth[task])

    @property
    def constrained(self) -> bool:
        """Whether decoding applies the hierarchy (C-HMCNN's max constraint and the ancestors' closure)."""
        return bool(self.label_hierarchy) and self.hierarchy_constraint

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


def check_label_hierarchy(tasks: dict[str, list[str]], hierarchy: dict[str, list[str]]) -> None:
    """A ValueError naming the first bad entry: an unknown task or label, a parent and child in one task, a label
    under two parents, or a cycle."""
    known = {f"{task}{TASK_LABEL_SEPARATOR}{label}" for task, labels in tasks.items() for label in labels}
    parent_of = {}
    for parent, children in hierarchy.items():
        if not isinstance(children, list) or not all(isinstance(child, str) for child in children):
            raise ValueError(f'{parent!r}: the children must be a list of "task/label", got {children!r}')
        for name in (parent, *children):
            task = name.split(TASK_LABEL_SEPARATOR, 1)[0]
            if task not in tasks:
                raise ValueError(f"{parent!r} → {name!r}: no task {task!r} (tasks: {list(tasks)})")
            if name not in known:
                raise ValueError(f"{parent!r} → {name!r}: task {task!r} has no such label")
        for child in children:
            if child.split(TASK_LABEL_SEPARATOR, 1)[0] == parent.split(TASK_LABEL_SEPARATOR, 1)[0]:
                raise ValueError(f"{parent!r} → {child!r}: a parent and its child are in the same task")
            if child in parent_of and parent_of[child] != parent:
                raise ValueError(f"{child!r} is under two parents, {parent_of[child]!r} and {parent!r}")
            parent_of[child] = parent
    for start in parent_of:
        path, label = [start], start
        while label in parent_of:
            label = parent_of[label]
            if label in path:
                raise ValueError(f"the hierarchy has a cycle: {' → '.join(reversed([*path, label]))}")
            path.append(label)


def child_to_parent(hierarchy: dict[str, list[str]]) -> dict[str, str]:
    """Each child "task/label" of the hierarchy → its parent."""
    return {child: parent for parent, children in hierarchy.items() for child in children}


def label_depths(hierarchy: dict[str, list[str]]) -> dict[str, int]:
    """Each "task/label" of the hierarchy → its number of ancestors (a root 0)."""
    parents = child_to_parent(hierarchy)

    def depth(label: str) -> int:
        return 0 if label not in parents else 1 + depth(parents[label])

    return {label: depth(label) for label in {*hierarchy, *parents}}


def descendant_indices(label_names: list[str], hierarchy: dict[str, list[str]]) -> dict[int, list[int]]:
    """Parent → all its descendants, both as logit indices (see `MultiTaskConfig.descendants`)."""
    index = {name: position for position, name in enumerate(label_names)}

    def below(parent: str) -> list[str]:
        return [found for child in hierarchy.get(parent, []) for found in (child, *below(child))]

    return {index[parent]: sorted(index[child] for child in below(parent)) for parent, children in hierarchy.items()
            if children}  # fmt: skip


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


__all__ = ["BertMultiTaskConfig", "MultiTaskConfig", "check_label_hierarchy", "per_label_vector", "task_slices"]
