"""Tasks and their label sets: where each task is read from, which labels it has, and the encoding of a row's cells
into a multi-hot vector (-100 where the task is not annotated)."""

import logging
from collections import Counter
from dataclasses import dataclass, field

import datasets
from datasets import ClassLabel, DatasetDict

from ..configuration_mtl import IGNORE_INDEX, check_task_name
from ..decoding import TASK_LABEL_SEPARATOR
from ..errors import DataError, describe_labels
from .cells import parse_label_cell, parse_wide_cell

logger = logging.getLogger(__name__)


@dataclass
class TaskSource:
    """Where a task's labels are read from: one label column, or wide 0/1 columns (label name → column)."""

    name: str
    column: str | None = None
    wide_columns: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [self.column] if self.column else list(self.wide_columns.values())


def task_sources(
    column_names: list[str], task_columns: list[str] | None, wide_tasks: list[str] | None, where: str
) -> list[TaskSource]:
    """The tasks the flags name, checked against the training split's columns."""
    sources = []
    for column in task_columns or []:
        if column not in column_names:
            raise DataError(f"{where}: task column {column!r} not found; columns are {column_names}")
        sources.append(TaskSource(name=column, column=column))
    for task in wide_tasks or []:
        prefix = f"{task}{TASK_LABEL_SEPARATOR}"
        wide = {name[len(prefix) :]: name for name in column_names if name.startswith(prefix)}
        if not wide:
            raise DataError(f"{where}: no wide label columns named '{prefix}<label>' for task {task!r}")
        sources.append(TaskSource(name=task, wide_columns=wide))
    if not sources:
        raise DataError("No tasks given: pass --task_columns and/or --wide_tasks")
    names = [source.name for source in sources]
    duplicated = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicated:
        raise DataError(f"Tasks named twice: {duplicated}")
    for name in names:
        try:
            check_task_name(name)
        except ValueError as error:
            raise DataError(str(error)) from None
    return sources


def feature_label_names(dataset: datasets.Dataset, column: str) -> list[str] | None:
    """Label names of a `ClassLabel` or `Sequence(ClassLabel)` column, else None."""
    feature = dataset.features.get(column)
    feature = getattr(feature, "feature", feature)
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def collect_label_sets(
    train: datasets.Dataset, sources: list[TaskSource], where: str, delimiter: str, given: dict[str, list[str]]
) -> dict[str, list[str]]:
    """Task → ordered label names: given, from the column's ClassLabel feature, or every label seen in training."""
    tasks = {}
    for source in sources:
        names = given.get(source.name) or (feature_label_names(train, source.column) if source.column else None)
        if source.wide_columns:
            names = list(source.wide_columns)
        elif names is None:
            seen = set()
            for labels in _parsed_column(train, source.column, where, delimiter):
                seen.update(str(label) for label in labels or [])
            if not seen:
                raise DataError(f"{where}, column {source.column!r}: no labels found for task {source.name!r}")
            names = _stable_order(seen)
        tasks[source.name] = [str(name) for name in names]
    return tasks


def label_kind(labels: list) -> str | None:
    """ "ids" (integers), "names" (strings), "ids and names" (both in one cell) or None (no label)."""
    kinds = {"ids" if isinstance(label, int) else "names" for label in labels}
    return " and ".join(sorted(kinds)) if kinds else None


def check_label_kinds(raw: DatasetDict, where: dict[str, str], sources: list[TaskSource], delimiter: str) -> None:
    """A task's cells hold label ids or label names, the same in every row of every split: an id among names would
    otherwise become a label of its own ("3"), or a name among ids stand for another label than meant."""
    for source in sources:
        if not source.column:
            continue
        first = None  # (kind, split source, row) of the first labelled cell
        for split, dataset in raw.items():
            if source.column not in dataset.column_names:
                continue
            for row, labels in enumerate(_parsed_column(dataset, source.column, where[split], delimiter), start=1):
                kind = label_kind(labels or [])
                if kind is None:
                    continue
                if kind == "ids and names":
                    raise DataError(
                        f"{where[split]}, row {row}, column {source.column!r}: mixes label ids and label names"
                    )
                if first is None:
                    first = (kind, where[split], row)
                elif kind != first[0]:
                    raise DataError(
                        f"{where[split]}, row {row}, column {source.column!r}: holds label {kind} where "
                        f"{first[1]}, row {first[2]} holds label {first[0]}; a task holds ids or names, not both"
                    )


def _stable_order(names: set[str]) -> list[str]:
    """Numeric ids in numeric order, anything else alphabetically: the same order for the same label set."""
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def _parsed_column(dataset: datasets.Dataset, column: str, where: str, delimiter: str, batch_size: int = 10_000):
    """Yield the parsed cells of one column, in Arrow-backed batches (bounded memory)."""
    row = 0
    for batch in dataset.select_columns([column]).iter(batch_size=batch_size):
        for value in batch[column]:
            try:
                yield parse_label_cell(value, delimiter)
            except ValueError as error:
                raise DataError(f"{where}, row {row + 1}, column {column!r}: {error}") from None
            row += 1


@dataclass
class LabelEncoder:
    """Turns a batch of raw rows into float multi-hot label vectors [total_labels], -100 where not annotated."""

    tasks: dict[str, list[str]]
    sources: list[TaskSource]
    delimiter: str = ","
    # Task → the names integer ids index (see `id_label_names`).
    id_names: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        self.label_index = {task: {label: i for i, label in enumerate(labels)} for task, labels in self.tasks.items()}

    def encode(self, batch: dict, rows: list[int], where: str, counts: Counter) -> list[list[float]]:
        vectors = [[] for _ in rows]
        for source in self.sources:
            present = all(column in batch for column in source.columns)
            for position, row in enumerate(rows):
                hot = self._task_vector(source, batch, position, row, where, counts) if present else None
                width = len(self.tasks[source.name])
                vectors[position].extend(hot if hot is not None else [float(IGNORE_INDEX)] * width)
        return vectors

    def _task_vector(self, source, batch, position, row, where, counts) -> list[float] | None:
        if source.wide_columns:
            return self._wide_vector(source, batch, position, row, where)
        try:
            labels = parse_label_cell(batch[source.column][position], self.delimiter)
        except ValueError as error:
            raise DataError(f"{where}, row {row + 1}, column {source.column!r}: {error}") from None
        if labels is None:
            return None
        hot = [0.0] * len(self.tasks[source.name])
        for label in labels:
            name = self._label_name(source, label)
            index = self.label_index[source.name].get(name)
            if index is None:
                raise DataError(
                    f"{where}, row {row + 1}, column {source.column!r}: unknown label {name!r} for task "
                    f"{source.name!r}; its labels (from training or --labels_file): "
                    f"{describe_labels(self.tasks[source.name], name)}"
                )
            if hot[index]:
                counts[f"{source.name}: duplicate labels ignored"] += 1
            hot[index] = 1.0
        return hot

    def _label_name(self, source: TaskSource, label) -> str:
        names = self.id_names.get(source.name)
        if isinstance(label, int) and names is not None:
            if not 0 <= label < len(names):
                return str(label)  # reported as unknown by the caller
            return names[label]
        return str(label)

    def _wide_vector(self, source, batch, position, row, where) -> list[float] | None:
        values = {}
        for column in source.wide_columns.values():
            try:
                values[column] = parse_wide_cell(batch[column][position])
            except ValueError as error:
                raise DataError(f"{where}, row {row + 1}, column {column!r}: {error}") from None
        missing = [column for column, value in values.items() if value is None]
        if len(missing) == len(values):
            return None
        if missing:
            raise DataError(
                f"{where}, row {row + 1}: task {source.name!r} is partly annotated; empty/NaN in columns {missing}. "
                "Leave all of a task's columns empty to mark it not annotated."
            )
        return [float(values[column]) for column in source.wide_columns.values()]
