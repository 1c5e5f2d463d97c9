"""The Reuters builder on a miniature of NLTK's corpus, as a directory and as the zip NLTK downloads."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

BUILDER = Path(__file__).resolve().parents[1] / "examples" / "reuters" / "build_dataset.py"
STORIES = {
    "training/1": ("COCOA REVIEW\n  Showers continued\n  in the zone.", "cocoa"),
    "training/2": ("GRAIN AND OIL\n  Wheat rose.", "grain crude"),
    "training/3": ("OIL\n  Crude fell.", "crude"),
    "training/4": ("MORE GRAIN\n  Corn rose.", "grain"),
    "test/10": ("OIL PRICES\n  Crude steady.", "crude"),
}


def write_corpus(directory: Path) -> Path:
    for name, (text, _) in STORIES.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text, encoding="latin-1")
    (directory / "cats.txt").write_text("".join(f"{name} {topics}\n" for name, (_, topics) in STORIES.items()))
    return directory


def build(source: Path, output: Path) -> dict[str, list[dict]]:
    subprocess.run([sys.executable, str(BUILDER), "--source", str(source), "--output_dir", str(output),
                    "--validation_share", "0.25"], check=True, capture_output=True)  # fmt: skip
    return {split: [json.loads(line) for line in (output / f"{split}.jsonl").read_text().splitlines()]
            for split in ("train", "validation", "test")}  # fmt: skip


@pytest.mark.parametrize("as_zip", [False, True])
def test_the_builder_reads_stories_and_categories_into_modapte_splits(tmp_path, as_zip):
    corpus = write_corpus(tmp_path / "reuters")
    source = corpus
    if as_zip:  # NLTK's reuters.zip holds the corpus under a top folder reuters/
        source = tmp_path / "reuters.zip"
        with zipfile.ZipFile(source, "w") as archive:
            for path in corpus.rglob("*"):
                archive.write(path, f"reuters/{path.relative_to(corpus)}")
    splits = build(source, tmp_path / "out")
    assert [len(splits[split]) for split in ("train", "validation", "test")] == [3, 1, 1]
    assert splits["test"] == [{"text": "OIL PRICES Crude steady.", "id": "test/10", "topics": ["crude"]}]
    training = {row["id"]: row for row in splits["train"] + splits["validation"]}
    assert training["training/2"]["topics"] == ["crude", "grain"]
    assert training["training/1"]["text"] == "COCOA REVIEW Showers continued in the zone."
    labels = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert labels == {"topics": ["cocoa", "crude", "grain"]}


def test_a_line_without_categories_stops_the_build_naming_it(tmp_path):
    corpus = write_corpus(tmp_path / "reuters")
    (corpus / "cats.txt").write_text("training/1\n")
    result = subprocess.run([sys.executable, str(BUILDER), "--source", str(corpus), "--output_dir",
                             str(tmp_path / "out")], capture_output=True, text=True)  # fmt: skip
    assert result.returncode != 0 and "cats.txt:1: expected 'training|test/NNNN category …'" in result.stderr
