"""From logits to labels, and the label hierarchy's graph: what the model, the metrics, the report and the ONNX
runtime share.

numpy alone: the ONNX runtime decodes with it in an environment without torch or transformers, reading the
settings from a saved `config.json` (`Decoding.from_config`), and `save_pretrained` copies this module beside the
model's files, which import it relatively, for `trust_remote_code` loading.
"""

from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np

TASK_LABEL_SEPARATOR = "/"
# How constrained decoding makes per-label decisions agree with the hierarchy: add the ancestors of every predicted
# label, or drop every predicted label whose parent is not predicted.
CONSISTENCY_CHOICES = ("add_parents", "drop_orphans")


def task_slices(tasks: dict[str, list[str]]) -> dict[str, slice]:
    """Task → the slice its labels occupy in the concatenated logits (and in every per-label vector)."""
    slices, start = {}, 0
    for task, labels in tasks.items():
        slices[task] = slice(start, start + len(labels))
        start += len(labels)
    return slices


def label_names(tasks: dict[str, list[str]]) -> list[str]:
    """Every label as "task/label", in logit order."""
    return [f"{task}{TASK_LABEL_SEPARATOR}{label}" for task, labels in tasks.items() for label in labels]


def per_label_vector(tasks: dict[str, list[str]], values: dict[str, list[float]]) -> list[float]:
    """A per-task mapping of per-label values (thresholds, pos_weight) → one value per label in logit order."""
    return [value for task in tasks for value in values[task]]


def tasks_in_saved_order(tasks: dict, id2label: dict | None) -> dict[str, list[str]]:
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
    known = set(label_names(tasks))
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


def descendant_indices(names: list[str], hierarchy: dict[str, list[str]]) -> dict[int, list[int]]:
    """Logit index of each label with children → the logit indices of all its descendants (children,
    grandchildren, …); empty without a hierarchy."""
    index = {name: position for position, name in enumerate(names)}

    def below(parent: str) -> list[str]:
        return [found for child in hierarchy.get(parent, []) for found in (child, *below(child))]

    return {index[parent]: sorted(index[child] for child in below(parent)) for parent, children in hierarchy.items()
            if children}  # fmt: skip


class TaskLayout:
    """Where each label sits in the logits, for a class with `tasks` (ordered task → label names): the model's config
    and its `Decoding`."""

    @property
    def label_names(self) -> list[str]:
        """Every label as "task/label", in logit order."""
        return label_names(self.tasks)

    @property
    def task_slices(self) -> dict[str, slice]:
        """Where each task's labels sit in the concatenated logits."""
        return task_slices(self.tasks)


@dataclass(frozen=True)
class Decoding(TaskLayout):
    """What turns scores into labels: a model config's tasks, thresholds, hierarchy and decoding rules (see
    `MultiTaskConfig` for each field's meaning)."""

    tasks: dict[str, list[str]]
    thresholds: dict[str, list[float]]
    label_hierarchy: dict[str, list[str]] | None
    hierarchy_constraint: bool
    hierarchy_consistency: str
    at_least_one: list[str]

    @classmethod
    def from_config(cls, config) -> "Decoding":
        """From a `MultiTaskConfig`, or from the mapping a saved `config.json` holds (its `tasks` back in logit
        order, see `tasks_in_saved_order`)."""
        if not isinstance(config, Mapping):
            return cls(**{field.name: getattr(config, field.name) for field in fields(cls)})
        missing = [field.name for field in fields(cls) if field.name not in config]
        if missing:
            raise ValueError(f"the config has no {missing}: not a model of this recipe, or saved by an older version")
        values = {field.name: config[field.name] for field in fields(cls)}
        return cls(**{**values, "tasks": tasks_in_saved_order(config["tasks"], config.get("id2label"))})

    @property
    def threshold_vector(self) -> np.ndarray:
        """Each label's threshold, [total_labels] in logit order."""
        return np.array(per_label_vector(self.tasks, self.thresholds))

    @property
    def constrained(self) -> bool:
        """Whether decoding applies the hierarchy (C-HMCNN's max constraint and the ancestors' closure)."""
        return bool(self.label_hierarchy) and self.hierarchy_constraint

    @cached_property
    def descendants(self) -> dict[int, list[int]]:
        return descendant_indices(self.label_names, self.label_hierarchy or {})

    @cached_property
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


def raise_to_descendants(values, descendants: dict[int, list[int]], candidates=None, xp=np):
    """C-HMCNN's max constraint (Giunchiglia & Lukasiewicz, NeurIPS 2020): values [batch, labels] → the same, each
    label with descendants raised to the highest value among them (among those marked in `candidates`
    [batch, labels], when given). The sigmoid is monotone, so on logits it is the constraint on probabilities; on
    0/1 decisions it adds the ancestors of every chosen label.

    `xp` is the array library of `values`: numpy for decoding, torch for the loss on the constrained logits
    (`hierarchy_loss="mcloss"`), which needs its gradient; only functions both libraries share are used."""
    if not descendants:
        return values
    pool = values if candidates is None else xp.where(candidates, values, float("-inf"))
    columns = [
        xp.maximum(values[:, label], xp.amax(pool[:, descendants[label]], -1)) if label in descendants
        else values[:, label]
        for label in range(values.shape[-1])
    ]  # fmt: skip
    return xp.stack(columns, -1)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) without overflow for large negative logits: e^-softplus(-x)."""
    return np.exp(-np.logaddexp(0.0, -logits))


def label_scores(logits, decoding: Decoding) -> np.ndarray:
    """Logits [rows, total_labels] (any array) → the scores decoding thresholds, float64 [rows, total_labels]:
    sigmoid probabilities, each parent's raised to its descendants' highest when the hierarchy applies."""
    scores = sigmoid(np.asarray(logits, dtype=np.float64))
    return raise_to_descendants(scores, decoding.descendants) if decoding.constrained else scores


def label_decisions(scores: np.ndarray, decoding: Decoding, thresholds: np.ndarray | None = None) -> np.ndarray:
    """Scores [rows, total_labels] (`label_scores`) → the predicted labels, bool [rows, total_labels]: each label at
    or above its threshold (the decoding's, or `thresholds` [total_labels]); under a hierarchy, those whose parent is
    not chosen dropped (`hierarchy_consistency="drop_orphans"`: per-label thresholds can pass a child and not its
    higher-scored parent) or their ancestors added (`"add_parents"`); then in the tasks of `at_least_one`, finest
    first, a row left with none gets its highest-scoring label, with its ancestors under a hierarchy, so that a
    coarser task is filled by them rather than by a label of its own that could disagree."""
    chosen = scores >= (decoding.threshold_vector if thresholds is None else thresholds)
    if decoding.constrained and decoding.hierarchy_consistency == "drop_orphans":
        chosen = without_orphans(chosen, decoding)
    elif decoding.constrained:
        chosen = with_ancestors(chosen, decoding)
    for task in decoding.at_least_one_finest_first:
        task_slice = decoding.task_slices[task]
        task_chosen = chosen[:, task_slice]  # a view: writing to it writes to `chosen`
        empty = np.flatnonzero(~task_chosen.any(axis=1))
        task_chosen[empty, scores[empty, task_slice].argmax(axis=1)] = True
        if decoding.constrained:
            chosen = with_ancestors(chosen, decoding)
    return chosen


def without_orphans(chosen: np.ndarray, decoding: Decoding) -> np.ndarray:
    """Decisions bool [rows, total_labels] → the same less every label whose parent is not chosen (top down, so that
    a dropped label's whole subtree goes)."""
    chosen = chosen.copy()
    for parent, child in decoding.parents_top_down:
        chosen[:, child] &= chosen[:, parent]
    return chosen


def with_ancestors(chosen: np.ndarray, decoding: Decoding) -> np.ndarray:
    """Decisions bool [rows, total_labels] → the same with the ancestors of every chosen label (the max constraint on
    0/1 decisions)."""
    return raise_to_descendants(chosen, decoding.descendants)


def decode_scores(scores: np.ndarray, decoding: Decoding) -> list[dict[str, list[str]]]:
    """Scores [rows, total_labels] (`label_scores`) → per row, each task's predicted labels (`label_decisions`)."""
    chosen = label_decisions(scores, decoding).tolist()
    slices, tasks = decoding.task_slices, decoding.tasks
    return [
        {task: [label for label, keep in zip(labels, row[slices[task]]) if keep] for task, labels in tasks.items()}
        for row in chosen
    ]
