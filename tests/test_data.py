import math

import pytest
from datasets import Dataset, DatasetDict
from hypothesis import given
from hypothesis import strategies as st
from transformers import AutoTokenizer

from mtl_model.arguments import DataTrainingArguments
from mtl_model.data import encode_splits, pipeline, resolve_tasks
from mtl_model.data.cells import parse_label_cell, parse_wide_cell
from mtl_model.data.labels import TaskSource, check_label_kinds
from mtl_model.errors import DataError

label_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=',[]"'), min_size=1
).filter(lambda name: name.strip() == name and name)


@pytest.mark.parametrize(
    "cell, expected",
    [
        (None, None),
        (float("nan"), None),
        ("", None),
        ("   ", None),
        ("[]", []),
        ([], []),
        ("joy", ["joy"]),
        ("joy, love", ["joy", "love"]),
        ('["joy", "love"]', ["joy", "love"]),
        ("[3, 5]", [3, 5]),
        ([3, 5], [3, 5]),
        (7, [7]),
        (["NA", "None"], ["NA", "None"]),
    ],
)
def test_parse_label_cell_forms(cell, expected):
    assert parse_label_cell(cell) == expected


@pytest.mark.parametrize(
    "cell, message",
    [
        ("joy,,love", "empty label"),
        ("[joy", "not a JSON list"),
        ('{"a": 1}', None),
        (True, "boolean"),
        ([1.5], "name or an integer id"),
        ([""], "empty"),
        (3.5, "expected a list or a string"),
    ],
)
def test_parse_label_cell_rejects(cell, message):
    if message is None:  # a string that is not a list is a single label name, braces and all
        assert parse_label_cell(cell) == ['{"a": 1}']
        return
    with pytest.raises(ValueError, match=message):
        parse_label_cell(cell)


@given(st.lists(label_names, min_size=1, max_size=6))
def test_delimited_string_round_trips(labels):
    assert parse_label_cell(",".join(labels)) == [label.strip() for label in labels]


@given(st.lists(st.one_of(label_names, st.integers(min_value=0, max_value=10**6)), max_size=6))
def test_list_cells_round_trip(labels):
    assert parse_label_cell(labels) == labels


@given(st.lists(label_names, min_size=1, max_size=6), st.sampled_from([";", "|", "\t"]))
def test_custom_delimiter(labels, delimiter):
    labels = [label for label in labels if delimiter not in label] or ["x"]
    assert parse_label_cell(delimiter.join(labels), delimiter) == [label.strip() for label in labels]


@pytest.mark.parametrize(
    "cell, expected",
    [(0, 0), (1, 1), (True, 1), (False, 0), (1.0, 1), ("1", 1), ("0", 0), ("true", 1), ("", None), (None, None)],
)
def test_parse_wide_cell(cell, expected):
    assert parse_wide_cell(cell) == expected


@pytest.mark.parametrize("cell", [2, "yes", 0.5, "x"])
def test_parse_wide_cell_rejects(cell):
    with pytest.raises(ValueError, match="expected 0 or 1"):
        parse_wide_cell(cell)


def test_parse_wide_cell_nan_is_missing():
    assert parse_wide_cell(math.nan) is None


def test_label_ids_in_one_split_and_names_in_another_are_refused_naming_the_row():
    raw = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["a", "b"], "mood": [["happy"], []]}),
            "validation": Dataset.from_dict({"text": ["c", "d"], "mood": [[], [1]]}),
        }
    )
    where = {"train": "train.jsonl", "validation": "validation.jsonl"}
    with pytest.raises(
        DataError, match=r"validation.jsonl, row 2, column 'mood': holds label ids where train.jsonl, row 1"
    ):
        check_label_kinds(raw, where, [TaskSource(name="mood", column="mood")], ",")
    check_label_kinds(DatasetDict({"train": raw["train"]}), where, [TaskSource(name="mood", column="mood")], ",")


def encoded_train(tiny_bert_dir, rows: dict, spec: DataTrainingArguments):
    raw = DatasetDict({"train": Dataset.from_list(rows)})
    where = {"train": "train.jsonl"}
    tasks, sources = resolve_tasks(raw, where, spec)
    return tasks, encode_splits(raw, where, spec, tasks, sources, AutoTokenizer.from_pretrained(tiny_bert_dir))[
        "train"
    ]


def test_a_text_pair_reaches_the_tokenizer_as_the_second_segment(tiny_bert_dir):
    rows = [{"text": "good day", "context": "bad movie", "mood": ["happy"]}]
    _, with_pair = encoded_train(
        tiny_bert_dir, rows, DataTrainingArguments(text_pair_column_name="context", task_columns="mood")
    )
    _, alone = encoded_train(tiny_bert_dir, rows, DataTrainingArguments(task_columns="mood"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    assert with_pair[0]["input_ids"] == tokenizer("good day", "bad movie")["input_ids"] != alone[0]["input_ids"]
    assert 1 in with_pair[0]["token_type_ids"] and 1 not in alone[0]["token_type_ids"]


def test_integer_ids_are_encoded_as_the_labels_files_names(tiny_bert_dir, tmp_path):
    rows = [{"text": "a", "mood": [0, 2]}, {"text": "b", "mood": []}, {"text": "c", "mood": None}]
    (tmp_path / "labels.json").write_text('{"mood": ["angry", "happy", "sad"]}')
    spec = DataTrainingArguments(task_columns="mood", labels_file=str(tmp_path / "labels.json"))
    tasks, encoded = encoded_train(tiny_bert_dir, rows, spec)
    assert tasks == {"mood": ["angry", "happy", "sad"]}
    assert encoded["labels"] == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [-100.0, -100.0, -100.0]]


def test_the_encodings_cache_fingerprint_follows_its_code(tiny_bert_dir, monkeypatch):
    """datasets fingerprints a module-level function by its name, not its code: the encoding's source is hashed into
    its fingerprint, so that splits cached by other code are not reused."""
    raw = DatasetDict({"train": Dataset.from_list([{"text": "good day", "mood": ["happy"]}])})
    where, spec = {"train": "train.jsonl"}, DataTrainingArguments(task_columns="mood")
    tasks, sources = resolve_tasks(raw, where, spec)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)

    def fingerprint() -> str:
        return encode_splits(raw, where, spec, tasks, sources, tokenizer)["train"]._fingerprint

    first = fingerprint()
    assert fingerprint() == first
    monkeypatch.setattr(pipeline, "encoding_code", lambda: "the code of another version")
    assert fingerprint() != first
