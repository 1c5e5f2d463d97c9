"""Hostile input, one case a row: each either fails before training with a message naming the file and the row,
line, column or label, or is handled and counted in the log. The failing cases run the CLI's data steps directly
(files → label sets → encoded rows); a few of them also run the whole CLI, for exit status 2, no traceback and
nothing written (test_cli.py runs one in a real subprocess). Elsewhere: test_cli.py's wrong and conflicting flags,
test_arguments.py's config-file and range checks, test_resume.py's incompatible checkpoints, test_data.py's parser
properties."""

import json
import logging

import pytest
from helpers import WIDE_HEADER, base_args, list_records, wide_records, write_csv, write_jsonl
from transformers import AutoTokenizer

from mtl_model.data import encode_splits, load_raw_splits, read_label_hierarchy, resolve_tasks
from mtl_model.errors import ArgumentError, DataError
from mtl_model.parsing import parse_arguments
from run_mtl_classification import cli


def jsonl(change, split: str = "train"):
    """Good training data, one split of it (train, or a validation file beside it) changed by `change(records)`."""

    def build(tmp_path):
        records = list_records(8 if split == "train" else 4)
        change(records)
        changed = write_jsonl(tmp_path / f"{split}.jsonl", records)
        other = (
            [] if split == "train" else ["--train_file", str(write_jsonl(tmp_path / "train.jsonl", list_records(8)))]
        )
        return [f"--{split}_file", str(changed), *other, "--task_columns", "mood,topic"]

    return build


def wide_csv(column: int, value):
    def build(tmp_path):
        records = wide_records(8)
        records[3][column] = value  # row 4; column 1 is mood/happy
        return ["--train_file", str(write_csv(tmp_path / "train.csv", WIDE_HEADER, records)), "--wide_tasks", "mood"]

    return build


def raw_file(name: str, content: bytes, *flags: str):
    def build(tmp_path):
        (tmp_path / name).write_bytes(content)
        return ["--train_file", str(tmp_path / name), "--task_columns", "mood", *flags]

    return build


def with_flags(*flags: str):
    return lambda tmp_path: jsonl(lambda records: None)(tmp_path) + list(flags)


def hierarchy_file(content):
    """Good data with a --label_hierarchy file of `content` (a string as it is, else as JSON)."""

    def build(tmp_path):
        path = tmp_path / "hierarchy.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return [*jsonl(lambda records: None)(tmp_path), "--label_hierarchy", str(path)]

    return build


def set_row(row: int, **values):
    return lambda records: records[row - 1].update(values)


FAILING = {
    "NaN in a wide label column": (
        wide_csv(1, "NaN"),
        "train.csv, row 4, column 'mood/happy': expected 0 or 1, found 'NaN'",
    ),
    "2 in a wide label column": (
        wide_csv(1, "2"),
        "train.csv, row 4, column 'mood/happy': expected 0 or 1, found '2'",
    ),
    "partly annotated wide row": (
        wide_csv(2, ""),
        "train.csv, row 4: task 'mood' is partly annotated; empty/NaN in columns ['mood/sad']",
    ),
    "missing text column": (with_flags("--text_column_name", "body"), "train.jsonl: text column 'body' not found"),
    "missing task column": (
        lambda tmp_path: jsonl(lambda records: None)(tmp_path) + ["--task_columns", "mood,colour"],
        "train.jsonl: task column 'colour' not found",
    ),
    "empty validation split": (
        lambda tmp_path: (
            jsonl(lambda records: None)(tmp_path)
            + ["--validation_file", str(write_csv(tmp_path / "dev.csv", ["text", "mood"], []))]
        ),
        "dev.csv",
    ),
    "null text": (jsonl(set_row(3, text=None)), "train.jsonl, row 3, column 'text': the text is null"),
    "list as a text": (jsonl(set_row(3, text=["a list"])), "mixes value kinds: string (line 1) and list (line 3)"),
    "numbers as texts": (
        raw_file("train.jsonl", b'{"text": 1, "mood": ["happy"]}\n{"text": 2, "mood": ["sad"]}\n'),
        "train.jsonl, row 1, column 'text': the text is a int (1), expected a string",
    ),
    "unknown validation label": (
        jsonl(set_row(2, mood=["happy", "furious"]), split="validation"),
        "validation.jsonl, row 2, column 'mood': unknown label 'furious'",
    ),
    "malformed JSON line": (
        raw_file("train.jsonl", b'{"text": "a", "mood": ["happy"]}\n{"text": "b", "mood": ["sa\n'),
        "train.jsonl, line 2: malformed JSON",
    ),
    "label list and delimited string in one column": (
        jsonl(set_row(7, mood="happy,sad")),
        "column 'mood': mixes value kinds: list (line 1) and string (line 7)",
    ),
    "CSV row with a field too many": (
        raw_file("train.csv", b"text,mood\na,happy\nb,sad,extra\n"),
        "train.csv, line 3: expected 2 fields (','-separated), found 3",
    ),
    "file not in UTF-8": (
        raw_file("train.csv", "text,mood\ncaf\xe9 ok,happy\n".encode("latin-1")),
        "train.csv, line 2: not valid UTF-8",
    ),  # fmt: skip
    "empty label between delimiters": (
        raw_file("train.csv", b'text,mood\na,happy\nb,"sad,,angry"\n'),
        "train.csv, row 2, column 'mood'",
    ),
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
        lambda tmp_path: [
            "--train_file",
            str(write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "mood": [0, 7]}, {"text": "b", "mood": [1]}])),
            *("--task_columns", "mood", "--labels_file", str(labels_file(tmp_path, ["happy", "sad"]))),
        ],
        "train.jsonl, row 1, column 'mood': unknown label '7'",
    ),
    "label missing from the labels file": (
        lambda tmp_path: (
            jsonl(lambda records: None)(tmp_path)
            + ["--task_columns", "mood", "--labels_file", str(labels_file(tmp_path, ["happy", "sad"]))]
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
        lambda tmp_path: [
            "--train_file",
            str(
                write_jsonl(
                    tmp_path / "train.jsonl", [{"text": "a", "mood": ["happy"]}, {"text": "b", "mood": ["sda"]}]
                )
            ),
            *("--task_columns", "mood", "--labels_file"),
            str(labels_file(tmp_path, [f"label{i}" for i in range(3000)] + ["happy", "sad"])),
        ],
        "unknown label 'sda' for task 'mood'; its labels (from training or --labels_file): 3,002 labels, the first "
        "10: ['label0', 'label1', 'label2', 'label3', 'label4', 'label5', 'label6', 'label7', 'label8', 'label9']; "
        "closest to 'sda': ['sad']",
    ),
    "duplicate CSV header": (raw_file("train.csv", b"text,mood,mood\na,happy,sad\n"), "duplicate column names"),
    "same task named twice": (
        lambda tmp_path: jsonl(lambda records: None)(tmp_path) + ["--task_columns", "mood,mood"],
        "Tasks named twice: ['mood']",
    ),
    "hierarchy file not JSON": (
        hierarchy_file("{'topic/movie': ['mood/happy']}"),
        "hierarchy.json: Expecting property name enclosed in double quotes: line 1 column 2",
    ),
    "hierarchy names an unknown label": (
        hierarchy_file({"topic/movie": ["mood/hapy"]}),
        "hierarchy.json: 'topic/movie' → 'mood/hapy': task 'mood' has no such label",
    ),
    "label under two parents": (
        hierarchy_file({"topic/movie": ["mood/happy"], "topic/day": ["mood/sad", "mood/happy"]}),
        "'mood/happy' is under two parents, 'topic/movie' and 'topic/day'",
    ),
    "hierarchy with a cycle": (
        hierarchy_file({"topic/movie": ["mood/happy"], "mood/happy": ["topic/movie"]}),
        "the hierarchy has a cycle: mood/happy → topic/movie → mood/happy",
    ),
}


def labels_file(tmp_path, moods):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"mood": moods}))
    return path


def prepare_data(flags: list[str], tokenizer_dir, tmp_path) -> None:
    """The CLI's data steps, up to the encoded splits the Trainer would get."""
    _, data_args, _, _, _ = parse_arguments([*flags, "--output_dir", str(tmp_path / "out")])
    files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
    raw, where = load_raw_splits(files, cache_dir=str(tmp_path / "cache"))
    tasks, sources = resolve_tasks(raw, where, data_args)
    read_label_hierarchy(data_args.label_hierarchy, tasks)
    encode_splits(raw, where, data_args, tasks, sources, AutoTokenizer.from_pretrained(tokenizer_dir))


@pytest.mark.parametrize("case", list(FAILING))
def test_fails_early_naming_where(case, tiny_bert_dir, tmp_path):
    build, expected = FAILING[case]
    with pytest.raises((DataError, ArgumentError)) as raised:
        prepare_data(build(tmp_path), tiny_bert_dir, tmp_path)
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    "case", ["NaN in a wide label column", "unknown validation label", "file not in UTF-8", "label under two parents"]
)
def test_the_cli_exits_2_before_training_and_writes_nothing(case, capsys, tiny_bert_dir, tmp_path):
    build, expected = FAILING[case]
    code = cli(base_args(tiny_bert_dir, tmp_path / "out", "--do_train", *build(tmp_path)))
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
    args = base_args(tiny_bert_dir, tmp_path / "out", "--do_train", "--max_steps", "1", *build(tmp_path))
    with caplog.at_level(logging.INFO, logger="mtl_model"):
        assert cli(args) == 0
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
