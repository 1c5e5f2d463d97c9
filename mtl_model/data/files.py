"""Reading data files into `datasets`, after checks that name the file and line of what `datasets` would not:
encoding, CSV field counts, JSON objects and value kinds per column."""

import csv
import itertools
import json
import logging
from collections import Counter
from pathlib import Path

import datasets
from datasets import DatasetDict

from ..errors import DataError

logger = logging.getLogger(__name__)

FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


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
