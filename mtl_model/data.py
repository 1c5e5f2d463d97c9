"""Loading, validation and label encoding of multi-task, multi-label data.

Every task is read from the raw rows in one of three forms:
- a label column (`--task_columns`): a list of label names or ids, a delimited string ("joy,love"), a JSON list
  written as a string ('["joy", "love"]'), or a Hub `ClassLabel` / `Sequence(ClassLabel)` feature;
- wide 0/1 columns (`--wide_tasks`): one column per label, named "<task>/<label>".

What a cell means, for every form:
- a list (possibly empty) or a non-empty string: the example is annotated for the task; `[]` / "[]" means "none of
  this task's labels" (all negative);
- null, a missing key, NaN or an empty string (an empty CSV cell): the task is not annotated for this example; its
  label entries are -100 and are left out of the loss and the metrics.

Bad input raises `DataError` naming the file, row, column or label before any training starts.
"""

import csv
import itertools
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
from datasets import ClassLabel, DatasetDict

from .configuration_mtl import TASK_LABEL_SEPARATOR, task_slices
from .modeling_mtl import IGNORE_INDEX

logger = logging.getLogger(__name__)

FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SPLIT_NAMES = ("train", "validation", "test")
# Tokens per row, stored at tokenization so that length-grouped sampling and length-sorted prediction need not
# read every row's input_ids again (TrainingArguments' default `length_column_name`).
LENGTH_COLUMN = "length"


class DataError(ValueError):
    """Input data that cannot be trained on; the message names the file, row, column or label."""


@dataclass
class TaskSource:
    """Where a task's labels are read from: one label column, or wide 0/1 columns (label name → column)."""

    name: str
    column: str | None = None
    wide_columns: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [self.column] if self.column else list(self.wide_columns.values())


# ---------------------------------------------------------------------------------------------------------------
# Loading


def load_raw_splits(
    data_files: dict[str, str | None],
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    cache_dir: str | None = None,
) -> tuple[DatasetDict, dict[str, str]]:
    """Hub dataset or local files → (DatasetDict with train/validation/test where given, split → source name)."""
    if dataset_name:
        raw = datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)
        raw = DatasetDict({_canonical_split(name): split for name, split in raw.items()})
        return raw, {split: f"{dataset_name} [{split}]" for split in raw}
    files = {split: path for split, path in data_files.items() if path}
    if not files:
        raise DataError("No data given: pass --dataset_name or --train_file/--validation_file/--test_file")
    raw = DatasetDict({split: load_data_file(path, cache_dir) for split, path in files.items()})
    return raw, files


def _canonical_split(name: str) -> str:
    return {"dev": "validation", "valid": "validation", "val": "validation"}.get(name, name)


def load_data_file(path: str, cache_dir: str | None = None) -> datasets.Dataset:
    """One csv/tsv/json/jsonl/parquet file → Dataset, after checking what `datasets` would not name the line of."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{path}: no such file")
    suffix = file.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise DataError(f"{path}: unsupported extension {suffix!r}; use one of {sorted(FILE_FORMATS)}")
    builder, options = FILE_FORMATS[suffix], {}
    if builder == "csv":
        delimiter = "\t" if suffix == ".tsv" else ","
        header = check_csv_file(path, delimiter)
        # Every CSV column is read as a string so that "NA", "None" or "007" stay what they are; labels and 0/1
        # columns are parsed by us, with errors that name the row.
        options = dict(
            delimiter=delimiter,
            keep_default_na=False,
            features=datasets.Features({name: datasets.Value("string") for name in header}),
        )
    elif builder == "json":
        check_json_file(path)
    try:
        return datasets.load_dataset(builder, data_files={"data": path}, split="data", cache_dir=cache_dir, **options)
    except Exception as error:  # datasets/pyarrow/pandas errors carry no file name: add it
        raise DataError(f"{path}: could not be read as {builder}: {error}") from error


def _text_lines(path: str):
    """Yield (line number, line), turning a decoding error into one that names the line."""
    with open(path, "rb") as handle:
        for number, raw_line in enumerate(handle, start=1):
            try:
                yield number, raw_line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path}, line {number}: not valid UTF-8 ({error.reason}); re-save the file as UTF-8"
                ) from None


def check_csv_file(path: str, delimiter: str) -> list[str]:
    """Check encoding and field counts of a CSV/TSV file; return its header."""
    lines = (line for _, line in _text_lines(path))
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the file is empty") from None
    if len(set(header)) != len(header):
        duplicated = sorted(name for name, count in Counter(header).items() if count > 1)
        raise DataError(f"{path}: duplicate column names {duplicated}")
    try:
        for fields in reader:
            if fields and len(fields) != len(header):
                raise DataError(
                    f"{path}, line {reader.line_num}: expected {len(header)} fields ({delimiter!r}-separated), "
                    f"found {len(fields)}"
                )
    except csv.Error as error:
        raise DataError(f"{path}, line {reader.line_num}: malformed CSV ({error})") from error
    return header


def check_json_file(path: str) -> None:
    """Check that a JSON/JSONL file holds objects and that no column mixes value kinds.

    `datasets` reports neither the line of a malformed JSON line nor which rows disagree on a column's type.
    """
    first_kind_seen: dict[str, tuple[str, int]] = {}
    for line_number, row in _json_rows(path):
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {line_number}: expected a JSON object, found {type(row).__name__}")
        for column, value in row.items():
            kind = _value_kind(value)
            if kind == "null":
                continue
            seen = first_kind_seen.setdefault(column, (kind, line_number))
            if seen[0] != kind:
                raise DataError(
                    f"{path}, column {column!r}: mixes value kinds: {seen[0]} (line {seen[1]}) and {kind} "
                    f"(line {line_number}); use one format per column"
                )


def _json_rows(path: str):
    """Yield (line, row) from a JSON-lines file or a file holding one JSON array of objects."""
    lines = _text_lines(path)
    first = next(((number, line) for number, line in lines if line.strip()), None)
    if first is None:
        raise DataError(f"{path}: the file is empty")
    first_number, first_line = first
    if first_line.lstrip().startswith("["):
        text = first_line + "".join(line for _, line in lines)
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}, line {first_number + error.lineno - 1}: malformed JSON ({error.msg})") from None
        # An array's rows have no line of their own: name them by position.
        yield from ((f"{first_number} (array item {index + 1})", row) for index, row in enumerate(rows))
        return
    for number, line in itertools.chain([first], lines):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}, line {number}: malformed JSON ({error.msg})") from None


def _value_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        item_kinds = {_value_kind(item) for item in value}
        return "list" if len(item_kinds) <= 1 else "list of mixed " + "/".join(sorted(item_kinds))
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__ if not isinstance(value, str) else "string"


# ---------------------------------------------------------------------------------------------------------------
# Label cells


def parse_label_cell(value, delimiter: str = ","):
    """One task cell → None (not annotated) or a list of label names (str) / ids (int).

    Raises ValueError with a short reason; the caller adds file, row and column.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected labels, found the boolean {value}")
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [_label_item(item) for item in value]
    if not isinstance(value, str):
        raise ValueError(f"expected a list or a string of labels, found {type(value).__name__} {value!r}")
    text = value.strip()
    if not text:
        return None
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{text!r} starts with '[' but is not a JSON list ({error.msg})") from None
        if not isinstance(items, list):
            raise ValueError(f"{text!r} is not a JSON list")
        return [_label_item(item) for item in items]
    pieces = [piece.strip() for piece in text.split(delimiter)]
    if "" in pieces:
        raise ValueError(f"{text!r} has an empty label between {delimiter!r} delimiters")
    return pieces


def _label_item(item):
    if isinstance(item, bool) or not isinstance(item, (int, str)):
        raise ValueError(f"a label must be a name or an integer id, found {item!r}")
    if isinstance(item, str) and not item.strip():
        raise ValueError("a label name is empty")
    return item.strip() if isinstance(item, str) else item


def parse_wide_cell(value):
    """One wide 0/1 cell → 0, 1 or None (empty / null / NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            return None
        if text in ("0", "1", "0.0", "1.0", "true", "false"):
            return int(text in ("1", "1.0", "true"))
        raise ValueError(f"expected 0 or 1, found {value!r}")
    if isinstance(value, (bool, int, float)) and value in (0, 1):
        return int(value)
    raise ValueError(f"expected 0 or 1, found {value!r}")


# ---------------------------------------------------------------------------------------------------------------
# Tasks and label sets


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
        if TASK_LABEL_SEPARATOR in name or not name:
            raise DataError(f"Task name {name!r} may not be empty or contain {TASK_LABEL_SEPARATOR!r}")
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


# ---------------------------------------------------------------------------------------------------------------
# Encoding


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
                    f"{source.name!r}; its labels (from training or --labels_file) are {self.tasks[source.name]}"
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


def check_texts(batch: dict, rows: list[int], text_columns: list[str], where: str, counts: Counter) -> None:
    for column in text_columns:
        if column not in batch:
            raise DataError(f"{where}: text column {column!r} not found; columns are {sorted(batch)}")
        for row, text in zip(rows, batch[column]):
            if not isinstance(text, str):
                what = "null" if text is None else f"a {type(text).__name__} ({text!r})"
                raise DataError(f"{where}, row {row + 1}, column {column!r}: the text is {what}, expected a string")
            if not text.strip():
                counts[f"{column}: empty texts"] += 1


# ---------------------------------------------------------------------------------------------------------------
# From raw splits to model inputs


@dataclass
class DataSpec:
    """What the data flags say: which columns hold the text and the tasks, and how labels are written."""

    text_column: str = "text"
    text_pair_column: str | None = None
    task_columns: list[str] | None = None
    wide_tasks: list[str] | None = None
    label_delimiter: str = ","
    label_names: dict[str, list[str]] = field(default_factory=dict)  # task → labels, when given by the user
    max_seq_length: int = 128

    @property
    def text_columns(self) -> list[str]:
        return [self.text_column] + ([self.text_pair_column] if self.text_pair_column else [])


def select_first(raw: DatasetDict, max_samples: dict[str, int | None]) -> DatasetDict:
    """Keep the first N rows of a split, as `--max_*_samples` say."""
    return DatasetDict(
        {
            split: dataset.select(range(min(len(dataset), max_samples[split])))
            if max_samples.get(split) is not None
            else dataset
            for split, dataset in raw.items()
        }
    )


def resolve_tasks(
    raw: DatasetDict, where: dict[str, str], spec: DataSpec, trained_tasks: dict[str, list[str]] | None = None
) -> tuple[dict[str, list[str]], list[TaskSource]]:
    """Tasks and their label sets: from the training split, or from an already trained model when there is none."""
    if "train" in raw:
        sources = task_sources(raw["train"].column_names, spec.task_columns, spec.wide_tasks, where["train"])
        tasks = collect_label_sets(raw["train"], sources, where["train"], spec.label_delimiter, spec.label_names)
        return tasks, sources
    if trained_tasks is None:
        raise DataError("Without training data, --model_name_or_path must be a model trained with this recipe")
    named = set(spec.task_columns or []) | set(spec.wide_tasks or [])
    unknown = sorted(named - set(trained_tasks))
    if unknown:
        raise DataError(f"Tasks {unknown} are not tasks of the model; it has {list(trained_tasks)}")
    # Evaluation or prediction only: every task of the model, read from its column(s) where the data has them.
    wide = set(spec.wide_tasks or [])
    sources = [
        TaskSource(name=task, wide_columns={label: f"{task}{TASK_LABEL_SEPARATOR}{label}" for label in labels})
        if task in wide
        else TaskSource(name=task, column=task)
        for task, labels in trained_tasks.items()
    ]
    return trained_tasks, sources


def encode_splits(
    raw: DatasetDict,
    where: dict[str, str],
    spec: DataSpec,
    tasks: dict[str, list[str]],
    sources: list[TaskSource],
    tokenizer,
    overwrite_cache: bool = False,
    num_proc: int | None = None,
) -> DatasetDict:
    """Validate every row, encode labels and tokenize; raw columns are dropped (the caller keeps `raw` for output)."""
    encoder = LabelEncoder(
        tasks=tasks, sources=sources, delimiter=spec.label_delimiter, id_names=id_label_names(raw, sources, spec)
    )
    encoded = {}
    for split, dataset in raw.items():
        if len(dataset) == 0:
            raise DataError(f"{where[split]}: the {split} split is empty")
        has_labels = any(column in dataset.column_names for source in sources for column in source.columns)
        if split == "train":
            _require_task_columns(dataset, sources, where[split])
        elif has_labels:
            _warn_missing_task_columns(dataset, sources, where[split])
        encoded[split] = dataset.map(
            _encode_batch,
            fn_kwargs=dict(
                spec=spec, encoder=encoder, tokenizer=tokenizer, where=where[split], with_labels=has_labels
            ),
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
            load_from_cache_file=not overwrite_cache,
            num_proc=num_proc,
            desc=f"Validating and tokenizing {split}",
        )
    encoded = DatasetDict(encoded)
    log_annotation_counts(encoded, tasks)
    return encoded


def id_label_names(raw: DatasetDict, sources: list[TaskSource], spec: DataSpec) -> dict[str, list[str]]:
    """Task → the names that integer label ids index: a ClassLabel feature's names, else `--labels_file`'s list.
    Tasks with neither read an id 3 as the label "3"."""
    id_names = {}
    for source in sources:
        if not source.column:
            continue
        features = (feature_label_names(dataset, source.column) for dataset in raw.values())
        names = next(filter(None, features), None) or spec.label_names.get(source.name)
        if names:
            id_names[source.name] = names
    return id_names


def _encode_batch(batch: dict, indices: list[int], spec, encoder, tokenizer, where: str, with_labels: bool) -> dict:
    counts = Counter()
    check_texts(batch, indices, spec.text_columns, where, counts)
    texts = [batch[column] for column in spec.text_columns]
    features = dict(tokenizer(*texts, truncation=True, max_length=spec.max_seq_length))
    features[LENGTH_COLUMN] = [len(ids) for ids in features["input_ids"]]
    at_limit = sum(length >= spec.max_seq_length for length in features[LENGTH_COLUMN])
    if at_limit:
        counts[f"texts at --max_seq_length {spec.max_seq_length} tokens (longer ones are truncated)"] += at_limit
    if with_labels:
        features["labels"] = encoder.encode(batch, indices, where, counts)
    for what, count in counts.items():
        logger.warning("%s, rows %d-%d: %d %s", where, indices[0] + 1, indices[-1] + 1, count, what)
    return features


def _require_task_columns(dataset, sources: list[TaskSource], where: str) -> None:
    for source in sources:
        missing = [column for column in source.columns if column not in dataset.column_names]
        if missing:
            raise DataError(f"{where}: task {source.name!r} needs columns {missing}, which are missing")


def _warn_missing_task_columns(dataset, sources: list[TaskSource], where: str) -> None:
    for source in sources:
        if not all(column in dataset.column_names for column in source.columns):
            logger.warning("%s: no columns for task %r; it is not annotated in this split", where, source.name)


def log_annotation_counts(encoded: DatasetDict, tasks: dict[str, list[str]]) -> None:
    """Per split and task: annotated rows, rows left out (not annotated), positives; warn on a task never positive."""
    for split, dataset in encoded.items():
        if "labels" not in dataset.column_names:
            logger.info("%s: %d rows, no labels (prediction only)", split, len(dataset))
            continue
        counts = task_label_counts(dataset, tasks)
        for task, (annotated, positives) in counts.items():
            logger.info(
                "%s / %s: %d of %d rows annotated (%d not annotated), %d positive labels",
                split,
                task,
                annotated,
                len(dataset),
                len(dataset) - annotated,
                positives,
            )
            if split == "train" and positives == 0:
                logger.warning("Task %r has no positive example in the training split", task)


def label_counts(dataset: datasets.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per label: (annotated rows, positive rows), each [total_labels], read from the encoded labels column in
    bounded batches."""
    annotated = positives = 0
    for batch in dataset.select_columns(["labels"]).with_format("numpy").iter(batch_size=10_000):
        labels = batch["labels"]  # [batch, total_labels]
        annotated = annotated + (labels != IGNORE_INDEX).sum(0)
        positives = positives + (labels == 1).sum(0)
    return np.asarray(annotated, dtype=np.int64), np.asarray(positives, dtype=np.int64)


def task_label_counts(dataset: datasets.Dataset, tasks: dict[str, list[str]]) -> dict[str, tuple[int, int]]:
    """Task → (annotated rows, positive labels)."""
    annotated, positives = label_counts(dataset)
    return {
        task: (int(annotated[task_slice.start]), int(positives[task_slice].sum()))
        for task, task_slice in task_slices(tasks).items()
    }


def capped_pos_weight(train: datasets.Dataset, tasks: dict[str, list[str]], cap: float) -> dict[str, list[float]]:
    """Per label, negatives / positives among the annotated training rows, at most `cap` (also for a label with no
    positive): the positive term of the BCE then weighs about as much as the negative one, within reason."""
    annotated, positives = label_counts(train)
    ratio = np.divide(annotated - positives, positives, out=np.full(len(positives), float(cap)), where=positives > 0)
    weights = np.minimum(ratio, cap).round(4).tolist()
    return {task: weights[task_slice] for task, task_slice in task_slices(tasks).items()}


def token_lengths(dataset: datasets.Dataset) -> np.ndarray:
    """Tokens per row, shape [rows]: the stored length column (read as one numpy slice: 0.3 s for a million rows,
    where iterating the column takes 15 s), else counted from input_ids."""
    if LENGTH_COLUMN in dataset.column_names:
        return dataset.with_format("numpy")[LENGTH_COLUMN][:]
    return np.array([len(ids) for ids in dataset["input_ids"]])


def longest_first(dataset: datasets.Dataset) -> np.ndarray:
    """Row order by decreasing token count (stable), for batches with little padding: shape [rows]."""
    return np.argsort(-token_lengths(dataset), kind="stable")


def carve_validation(encoded: DatasetDict, percentage: int, seed: int) -> DatasetDict:
    """Split a validation set off the training data when none was given (thresholds and early stopping need one)."""
    if "validation" in encoded or "train" not in encoded or not percentage:
        return encoded
    if not 0 < percentage < 100:
        raise DataError(f"--validation_split_percentage must be between 1 and 99, got {percentage}")
    parts = encoded["train"].train_test_split(test_size=percentage / 100, seed=seed)
    logger.info(
        "No validation data given: using %d%% of train (%d rows) as validation", percentage, len(parts["test"])
    )
    return DatasetDict({**encoded, "train": parts["train"], "validation": parts["test"]})
