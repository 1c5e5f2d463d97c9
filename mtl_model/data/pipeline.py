"""From raw splits to model inputs: tasks and label sets resolved, every row validated, labels encoded and texts
tokenized, a validation split carved when none is given."""

import hashlib
import inspect
import logging
import sys
from collections import Counter
from typing import Protocol

import numpy as np
from datasets import Dataset, DatasetDict

from ..batching import Chunking, token_count
from ..decoding import TASK_LABEL_SEPARATOR
from ..errors import DataError
from .cells import parse_label_cell
from .labels import LabelEncoder, TaskSource, check_label_kinds, collect_label_sets, feature_label_names, task_sources
from .statistics import LENGTH_COLUMN, task_label_counts, token_lengths

logger = logging.getLogger(__name__)

# Chunks dropped beyond --max_chunks per row: stored by the encoding for the log, removed after it.
CHUNKS_DROPPED_COLUMN = "chunks_dropped"


def encoding_code() -> str:
    """A digest of the source of the modules whose code encodes a row. datasets fingerprints a module-level function
    by its name, not its code, so a changed encoding would otherwise reuse splits that an older one cached."""
    encoding = (_encode_batch, LabelEncoder, Chunking, parse_label_cell)  # this module's, labels', batching's, cells'
    sources = [inspect.getsource(sys.modules[part.__module__]) for part in encoding]
    return hashlib.sha256("".join(sources).encode()).hexdigest()


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


class DataSpec(Protocol):
    """What the data steps read of the data flags: which columns hold the text and the tasks, and how labels are
    written. `DataTrainingArguments` is one, so the flags reach these steps without a second copy."""

    label_delimiter: str
    max_seq_length: int
    overwrite_cache: bool
    preprocessing_num_workers: int | None

    @property
    def text_columns(self) -> list[str]: ...

    @property
    def task_column_names(self) -> list[str]: ...

    @property
    def wide_task_names(self) -> list[str]: ...

    @property
    def given_label_names(self) -> dict[str, list[str]]: ...  # task → labels, when the user gave them


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
        sources = task_sources(raw["train"].column_names, spec.task_column_names, spec.wide_task_names, where["train"])
        check_label_kinds(raw, where, sources, spec.label_delimiter)
        tasks = collect_label_sets(raw["train"], sources, where["train"], spec.label_delimiter, spec.given_label_names)
        return tasks, sources
    if trained_tasks is None:
        raise DataError("Without training data, --model_name_or_path must be a model trained with this recipe")
    named = set(spec.task_column_names) | set(spec.wide_task_names)
    unknown = sorted(named - set(trained_tasks))
    if unknown:
        raise DataError(f"Tasks {unknown} are not tasks of the model; it has {list(trained_tasks)}")
    # Evaluation or prediction only: every task of the model, read from its column(s) where the data has them.
    wide = set(spec.wide_task_names)
    sources = [
        TaskSource(name=task, wide_columns={label: f"{task}{TASK_LABEL_SEPARATOR}{label}" for label in labels})
        if task in wide
        else TaskSource(name=task, column=task)
        for task, labels in trained_tasks.items()
    ]
    check_label_kinds(raw, where, sources, spec.label_delimiter)
    return trained_tasks, sources


def encode_splits(
    raw: DatasetDict,
    where: dict[str, str],
    spec: DataSpec,
    tasks: dict[str, list[str]],
    sources: list[TaskSource],
    tokenizer,
    chunking: Chunking | None = None,
) -> DatasetDict:
    """Validate every row, encode labels and tokenize, truncated to --max_seq_length or, given `chunking`, in chunks
    (a row's input ids [ids per chunk]); raw columns are dropped (the caller keeps `raw` for output)."""
    encoder = LabelEncoder(
        tasks=tasks, sources=sources, delimiter=spec.label_delimiter, id_names=id_label_names(raw, sources, spec)
    )
    encoded, code = {}, encoding_code()
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
            # Only what the encoding reads, so that other flags leave the cached result valid.
            fn_kwargs=dict(
                text_columns=spec.text_columns,
                max_seq_length=spec.max_seq_length,
                chunking=chunking,
                encoder=encoder,
                tokenizer=tokenizer,
                where=where[split],
                with_labels=has_labels,
                code=code,
            ),
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
            load_from_cache_file=not spec.overwrite_cache,
            num_proc=spec.preprocessing_num_workers,
            desc=f"Validating and tokenizing {split}",
        )
        encoded[split] = log_texts_not_read_whole(encoded[split], where[split], spec.max_seq_length, chunking)
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
        names = next(filter(None, features), None) or spec.given_label_names.get(source.name)
        if names:
            id_names[source.name] = names
    return id_names


def _encode_batch(
    batch: dict,
    indices: list[int],
    text_columns: list[str],
    max_seq_length: int,
    chunking: Chunking | None,
    encoder: LabelEncoder,
    tokenizer,
    where: str,
    with_labels: bool,
    code: str,  # `encoding_code()`: read by the cache's fingerprint only
) -> dict:
    counts = Counter()
    check_texts(batch, indices, text_columns, where, counts)
    texts = [batch[column] for column in text_columns]
    if chunking is None:
        features = dict(tokenizer(*texts, truncation=True, max_length=max_seq_length))
    else:
        features, dropped = chunking.tokenize(tokenizer, texts[0])
        features[CHUNKS_DROPPED_COLUMN] = dropped.tolist()
    features[LENGTH_COLUMN] = [token_count(ids) for ids in features["input_ids"]]
    if with_labels:
        features["labels"] = encoder.encode(batch, indices, where, counts)
    for what, count in counts.items():
        logger.warning("%s, rows %d-%d: %d %s", where, indices[0] + 1, indices[-1] + 1, count, what)
    return features


def log_texts_not_read_whole(dataset: Dataset, where: str, max_seq_length: int, chunking: Chunking | None) -> Dataset:
    """Count in the log the texts cut at --max_seq_length, or read in chunks and cut at --max_chunks, with their
    first rows; the split without its dropped-chunks column. Counted from the stored columns, not while encoding,
    so that a run whose encoded splits come from the cache logs them too."""
    lengths = token_lengths(dataset)  # [rows]: tokens read, every chunk's
    if chunking is None:
        log_rows(where, lengths >= max_seq_length, f"texts at --max_seq_length {max_seq_length} tokens (longer ones "
                 "are truncated)", logging.WARNING)  # fmt: skip
        return dataset
    # A text of several chunks reads more tokens than one chunk holds: its first chunk is full.
    log_rows(where, lengths > chunking.length, f"texts longer than --max_seq_length {chunking.length} tokens (read "
             "in chunks)", logging.INFO)  # fmt: skip
    dropped = dataset.with_format("numpy")[CHUNKS_DROPPED_COLUMN][:]  # [rows]
    log_rows(where, dropped > 0, f"texts of more than --max_chunks {chunking.max_chunks} chunks, {dropped.sum()} "
             "chunks dropped in all (their tokens are not read)", logging.WARNING)  # fmt: skip
    return dataset.remove_columns(CHUNKS_DROPPED_COLUMN)


def log_rows(where: str, rows: np.ndarray, what: str, level: int, shown: int = 5) -> None:
    """Log '`where`: N `what` (rows a, b, …)': the rows where `rows` [rows] is true, the first `shown` by number."""
    count = int(rows.sum())
    if count:
        first = ", ".join(str(row + 1) for row in np.flatnonzero(rows)[:shown]) + (", …" if count > shown else "")
        logger.log(level, "%s: %d %s (rows %s)", where, count, what, first)


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
