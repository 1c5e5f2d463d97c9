"""The GoEmotions builder on a miniature of Google's release format, and on a stand-in for the Hub dataset."""

import importlib.util
import json
import sys
from pathlib import Path

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

BUILDER = Path(__file__).resolve().parents[1] / "examples" / "goemotions" / "build_dataset.py"
EMOTIONS = ["admiration", "anger", "curiosity", "joy", "sadness", "neutral"]


def load_builder():
    spec = importlib.util.spec_from_file_location("build_goemotions", BUILDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def release_directory(tmp_path: Path) -> Path:
    source = tmp_path / "release"
    source.mkdir()
    (source / "emotions.txt").write_text("\n".join(EMOTIONS) + "\n")
    (source / "ekman_mapping.json").write_text(
        json.dumps(
            {"anger": ["anger"], "joy": ["joy", "admiration"], "sadness": ["sadness"], "surprise": ["curiosity"]}
        )
    )
    (source / "sentiment_mapping.json").write_text(
        json.dumps({"positive": ["joy", "admiration"], "negative": ["anger", "sadness"], "ambiguous": ["curiosity"]})
    )
    rows = {
        "train.tsv": ['I "love" it\t3,0\tc1', "why?\t2\tc2", "meh\t5\tc3"],
        "dev.tsv": ["so sad\t4\tc4"],
        "test.tsv": ["grr and yay\t1,3\tc5"],
    }
    for name, lines in rows.items():
        (source / name).write_text("\n".join(lines) + "\n")
    return source


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_builds_three_tasks_from_the_release_format(tmp_path, monkeypatch):
    output = tmp_path / "out"
    argv = ["build", "--source", str(release_directory(tmp_path)), "--output_dir", str(output)]
    monkeypatch.setattr(sys, "argv", argv)
    load_builder().main()
    train = read_jsonl(output / "train.jsonl")
    assert train[0] == {
        "text": 'I "love" it',  # quotes are text, not CSV quoting
        "id": "c1",
        "emotion": ["joy", "admiration"],
        "ekman": ["joy"],
        "sentiment": ["positive"],
    }
    assert train[2]["ekman"] == ["neutral"] and train[2]["sentiment"] == ["neutral"]
    assert read_jsonl(output / "test.jsonl")[0]["sentiment"] == ["negative", "positive"]
    assert len(read_jsonl(output / "validation.jsonl")) == 1
    labels = json.loads((output / "labels.json").read_text())
    assert labels["emotion"] == EMOTIONS and labels["ekman"][-1] == "neutral" and len(labels["sentiment"]) == 4
    assert json.loads((output / "hierarchy.json").read_text()) == {
        "sentiment/negative": ["ekman/anger", "ekman/sadness"],
        "sentiment/positive": ["ekman/joy"],
        "sentiment/ambiguous": ["ekman/surprise"],
        "sentiment/neutral": ["ekman/neutral"],
        "ekman/anger": ["emotion/anger"],
        "ekman/joy": ["emotion/joy", "emotion/admiration"],
        "ekman/sadness": ["emotion/sadness"],
        "ekman/surprise": ["emotion/curiosity"],
        "ekman/neutral": ["emotion/neutral"],
    }


def test_builds_from_the_hub_dataset(tmp_path, monkeypatch):
    names = load_builder().EKMAN["joy"] + ["anger", "neutral"]
    features = Features({"text": Value("string"), "labels": List(ClassLabel(names=names)), "id": Value("string")})
    split = Dataset.from_list([{"text": "yay", "labels": [0, len(names) - 2], "id": "x"}], features=features)
    requested = []

    def fake_load_dataset(name, config):
        requested.append((name, config))
        return DatasetDict({"train": split, "validation": split, "test": split})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(sys, "argv", ["build", "--source", "hub", "--output_dir", str(tmp_path / "out")])
    load_builder().main()
    assert requested == [("google-research-datasets/go_emotions", "simplified")]
    row = read_jsonl(tmp_path / "out" / "train.jsonl")[0]
    assert row["emotion"] == ["joy", "anger"] and row["ekman"] == ["anger", "joy"]
    assert row["sentiment"] == ["negative", "positive"]
