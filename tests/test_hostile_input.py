"""Hostile input, one case a row: each either fails before training with a message naming the file and the row,
line, column or label, and exit status 2, or is handled and counted in the log. (More cases, each with its own
test: test_cli.py's bad-input tests, test_resume.py's incompatible checkpoints, test_data.py's parser properties.)"""

import json
import logging

import pytest
from helpers import WIDE_HEADER, base_args, list_records, wide_records, write_csv, write_jsonl

from run_mtl_classification import cli


def jsonl(change):
    def build(tmp_path):
        records = list_records(8)
        change(records)
        return write_jsonl(tmp_path / "train.jsonl", records), ["--task_columns", "mood,topic"]

    return build


def wide_csv(value):
    def build(tmp_path):
        records = wide_records(8)
        records[3][1] = value  # row 4, column mood/happy
        return write_csv(tmp_path / "train.csv", WIDE_HEADER, records), ["--wide_tasks", "mood"]

    return build


def raw_file(name: str, content: bytes, *flags: str):
    def build(tmp_path):
        (tmp_path / name).write_bytes(content)
        return tmp_path / name, ["--task_columns", "mood", *flags]

    return build


def set_row(row: int, **values):
    return lambda records: records[row - 1].update(values)


FAILING = {
    "NaN in a wide label column": (
        wide_csv("NaN"),
        "train.csv, row 4, column 'mood/happy': expected 0 or 1, found 'NaN'",
    ),
    "2 in a wide label column": (wide_csv("2"), "train.csv, row 4, column 'mood/happy': expected 0 or 1, found '2'"),
    "unclosed quote in CSV": (
        raw_file("train.csv", b'text,mood\n"unclosed quote,happy\nb,sad\n'),
        "train.csv, line 3: expected 2 fields",
    ),
    "empty file": (raw_file("train.jsonl", b""), "train.jsonl: the file is empty"),
    "JSON line that is not an object": (
        raw_file("train.jsonl", b'{"text": "a", "mood": ["happy"]}\n[1, 2]\n'),
        "train.jsonl, line 2",
    ),
    "null inside a label list": (jsonl(set_row(3, mood=[None])), "train.jsonl, row 3, column 'mood'"),
    "object as a label cell": (jsonl(set_row(3, mood={"happy": 1})), "column 'mood': mixes value kinds"),
    "label id out of the labels file's range": (
        lambda tmp_path: (
            write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "mood": [0, 7]}, {"text": "b", "mood": [1]}]),
            ["--task_columns", "mood", "--labels_file", str(labels_file(tmp_path, ["happy", "sad"]))],
        ),
        "train.jsonl, row 1, column 'mood': unknown label '7'",
    ),
    "label missing from the labels file": (
        lambda tmp_path: (
            write_jsonl(tmp_path / "train.jsonl", list_records(8)),
            ["--task_columns", "mood", "--labels_file", str(labels_file(tmp_path, ["happy", "sad"]))],
        ),
        "train.jsonl, row 2, column 'mood': unknown label 'angry'",
    ),
    "label id among label names": (
        jsonl(set_row(5, mood=[2])),
        "train.jsonl, row 5, column 'mood': holds label ids where ",
    ),
    "label ids and names in one cell": (
        raw_file("train.csv", b'text,mood\na,"[""happy"", 1]"\n', "--label_delimiter", ";"),
        "train.csv, row 1, column 'mood': mixes label ids and label names",
    ),
    "unknown label among thousands": (
        lambda tmp_path: (
            write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "mood": ["happy"]}, {"text": "b", "mood": ["sda"]}]),
            [
                "--task_columns",
                "mood",
                "--labels_file",
                str(labels_file(tmp_path, [f"label{i}" for i in range(3000)] + ["happy", "sad"])),
            ],
        ),  # fmt: skip
        "unknown label 'sda' for task 'mood'; its labels (from training or --labels_file): 3,002 labels, the first "
        "10: ['label0', 'label1', 'label2', 'label3', 'label4', 'label5', 'label6', 'label7', 'label8', 'label9']; "
        "closest to 'sda': ['sad']",
    ),
    "duplicate CSV header": (raw_file("train.csv", b"text,mood,mood\na,happy,sad\n"), "duplicate column names"),
    "same task named twice": (
        lambda tmp_path: (write_jsonl(tmp_path / "train.jsonl", list_records(8)), ["--task_columns", "mood,mood"]),
        "Tasks named twice: ['mood']",
    ),
}


def labels_file(tmp_path, moods):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"mood": moods}))
    return path


@pytest.mark.parametrize("case", list(FAILING))
def test_fails_early_naming_where(case, capsys, tiny_bert_dir, tmp_path):
    build, expected = FAILING[case]
    train, flags = build(tmp_path)
    code = cli(base_args(tiny_bert_dir, tmp_path / "out", "--train_file", str(train), "--do_train", *flags))
    error = capsys.readouterr().err
    assert code == 2, error
    assert expected in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


HANDLED = {
    "empty text": (jsonl(set_row(3, text="")), "1 text: empty texts"),
    "whitespace-only text": (jsonl(set_row(3, text=" \t ")), "1 text: empty texts"),
    "very long text": (
        jsonl(set_row(3, text="i love this movie " * 20_000)),
        "1 texts at --max_seq_length 32 tokens (longer ones are truncated)",
    ),
    "duplicate labels in a row": (jsonl(set_row(3, mood=["happy", "happy"])), "1 mood: duplicate labels ignored"),
    "task missing from some rows": (
        jsonl(lambda records: records[2].pop("topic")),
        "train / topic: 7 of 8 rows annotated (1 not annotated)",
    ),
    "null task cell": (jsonl(set_row(5, topic=None)), "train / topic: 7 of 8 rows annotated (1 not annotated)"),
    "byte-order mark in CSV": (
        raw_file("train.csv", "\ufefftext,mood\ni love it,happy\nso sad,sad\n".encode()),
        "train / mood: 2 of 2 rows annotated",
    ),
    "blank line in JSONL": (
        raw_file("train.jsonl", b'{"text": "a", "mood": ["happy"]}\n\n{"text": "b", "mood": ["sad"]}\n'),
        "train / mood: 2 of 2 rows annotated",
    ),
}


@pytest.mark.parametrize("case", list(HANDLED))
def test_handled_and_counted_in_the_log(case, tiny_bert_dir, tmp_path, caplog):
    build, logged = HANDLED[case]
    train, flags = build(tmp_path)
    args = base_args(tiny_bert_dir, tmp_path / "out", "--train_file", str(train), "--do_train", "--max_steps", "1")
    with caplog.at_level(logging.INFO, logger="mtl_model"):
        assert cli([*args, *flags]) == 0
    assert logged in caplog.text


@pytest.mark.parametrize(
    "labels, flags",
    [
        ([["a,b", "fröhlich 😀"], ["c|d"]], []),  # JSON lists: any string is a label
        (["a,b|fröhlich 😀", "c d"], ["--label_delimiter", "|"]),  # delimited strings: commas are not special
    ],
)
def test_label_names_with_delimiters_and_unicode(labels, flags, tiny_bert_dir, tmp_path):
    records = [{"text": f"text {i}", "mood": labels[i % 2]} for i in range(6)]
    train = write_jsonl(tmp_path / "train.jsonl", records)
    args = base_args(tiny_bert_dir, tmp_path / "out", "--train_file", str(train), "--task_columns", "mood")
    assert cli([*args, "--do_train", "--max_steps", "1", *flags]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text(encoding="utf-8"))
    expected = {"a,b", "fröhlich 😀", "c|d"} if not flags else {"a,b", "fröhlich 😀", "c d"}
    assert set(config["tasks"]["mood"]) == expected
