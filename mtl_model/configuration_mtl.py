"""Configuration of a BERT encoder with one multi-label head per task.

Self-contained (imports only transformers) so that `save_pretrained` can copy it next to the weights for
`trust_remote_code=True` loading.
"""

from transformers import BertConfig

POOLING_CHOICES = ("mean", "cls", "pooler")
LOSS_CHOICES = ("bce", "focal", "asl")
TASK_LABEL_SEPARATOR = "/"


class BertMultiTaskConfig(BertConfig):
    r"""
    A [`BertConfig`] plus the task layout of a multi-task, multi-label classifier.

    Args:
        tasks (`dict[str, list[str]]`):
            Ordered mapping task name → label names. Logits and labels of all tasks are concatenated in this order.
        task_weights (`dict[str, float]`, *optional*):
            Weight of each task's BCE loss in the summed loss (default 1.0 per task).
        thresholds (`dict[str, list[float]]`, *optional*):
            Per-label decision thresholds on the sigmoid score (default 0.5 per label).
        pooling (`str`, *optional*, defaults to `"mean"`):
            How a text becomes one vector: `"mean"` (masked mean of the last hidden states), `"cls"` (raw [CLS]
            hidden state) or `"pooler"` (BERT's dense + tanh pooler, as `BertForSequenceClassification` uses it).
        loss_type (`str`, *optional*, defaults to `"bce"`):
            Per-entry loss: `"bce"`, `"focal"` (BCE × (1 - p_t)^focal_gamma, Lin et al. 2017) or `"asl"` (asymmetric
            loss, Ridnik et al. 2021: positives weighted by (1 - p)^asl_gamma_positive, negatives by
            p_m^asl_gamma_negative with p_m = max(p - asl_clip, 0)).
        pos_weight (`dict[str, list[float]]`, *optional*):
            Per-label weight of the positive term of the BCE (e.g. capped negative/positive ratios); none by default.
    """

    model_type = "bert_multitask"
    # Per-task losses are logged by the trainer; they must not be mistaken for predictions at evaluation time.
    keys_to_ignore_at_inference = ["task_losses", "hidden_states", "attentions"]

    tasks: dict[str, list[str]] | None = None
    task_weights: dict[str, float] | None = None
    thresholds: dict[str, list[float]] | None = None
    pooling: str = "mean"
    loss_type: str = "bce"
    focal_gamma: float = 2.0
    asl_gamma_positive: float = 0.0
    asl_gamma_negative: float = 4.0
    asl_clip: float = 0.05
    pos_weight: dict[str, list[float]] | None = None

    def __post_init__(self, **kwargs):
        self.tasks = _tasks_in_saved_order(self.tasks or {}, self.id2label)
        _check_tasks(self.tasks)
        if self.pooling not in POOLING_CHOICES:
            raise ValueError(f"pooling must be one of {POOLING_CHOICES}, got {self.pooling!r}")
        if self.loss_type not in LOSS_CHOICES:
            raise ValueError(f"loss_type must be one of {LOSS_CHOICES}, got {self.loss_type!r}")
        if self.pos_weight is not None and self.loss_type == "asl":
            raise ValueError(
                "pos_weight applies to the bce and focal losses; ASL weighs positives by its own exponents"
            )
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

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    @property
    def label_names(self) -> list[str]:
        """Every label as "task/label", in logit order."""
        return [f"{task}{TASK_LABEL_SEPARATOR}{label}" for task, labels in self.tasks.items() for label in labels]

    @property
    def task_slices(self) -> dict[str, slice]:
        """Where each task's labels sit in the concatenated logits."""
        return task_slices(self.tasks)


def task_slices(tasks: dict[str, list[str]]) -> dict[str, slice]:
    """Task → the slice its labels occupy in the concatenated logits (and in every per-label vector)."""
    slices, start = {}, 0
    for task, labels in tasks.items():
        slices[task] = slice(start, start + len(labels))
        start += len(labels)
    return slices


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


def _check_tasks(tasks: dict[str, list[str]]) -> None:
    for task, labels in tasks.items():
        if not task or TASK_LABEL_SEPARATOR in task:
            raise ValueError(f"Task name {task!r} must be non-empty and may not contain {TASK_LABEL_SEPARATOR!r}")
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


__all__ = ["BertMultiTaskConfig", "task_slices"]
