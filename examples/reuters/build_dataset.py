#!/usr/bin/env python
"""Build Reuters-21578's ModApte split (Lewis et al.; "ApteMod" as NLTK ships it): 10,788 newswire stories, each
with one or more of 90 topic categories, as one task `topics` (90 labels). Stories run to 1,600 words: the long-
document dataset of `--long_documents chunk` (BENCHMARKS.md, "Long documents").

Reads NLTK's Reuters corpus, a directory or the zip (`python -m nltk.downloader reuters` puts it in
~/nltk_data/corpora/reuters.zip): `cats.txt` ("training/NNNN cat cat …"), and a file per story, its title on the
first line. Writes train (7,769 stories less a validation share), validation (`--validation_share` of the training
stories, drawn with `--seed`) and test (3,019) JSONL files (columns `text`, `id`, `topics`), plus `labels.json`.

    python examples/reuters/build_dataset.py --source ~/nltk_data/corpora/reuters.zip --output_dir data/reuters
"""

import argparse
import json
import random
import zipfile
from pathlib import Path


class Corpus:
    """NLTK's Reuters corpus in a directory or a zip (whose files sit under a top folder `reuters/`)."""

    def __init__(self, source: Path):
        self.source = source
        self.archive = zipfile.ZipFile(source) if source.suffix == ".zip" else None

    def read(self, name: str) -> str:
        if self.archive is None:
            return (self.source / name).read_text(encoding="latin-1")
        return self.archive.read(f"reuters/{name}").decode("latin-1")


def read_stories(corpus: Corpus) -> list[dict]:
    """Every story of cats.txt with its categories; a line that names no category stops the build, naming it."""
    stories = []
    for number, line in enumerate(corpus.read("cats.txt").splitlines(), start=1):
        name, *topics = line.split()
        if not topics or not name.startswith(("training/", "test/")):
            raise SystemExit(f"{corpus.source}: cats.txt:{number}: expected 'training|test/NNNN category …'")
        text = " ".join(corpus.read(name).split())  # the title line and the body, whitespace made single spaces
        stories.append({"text": text, "id": name, "topics": sorted(topics)})
    return stories


def split_stories(stories: list[dict], validation_share: float, seed: int) -> dict[str, list[dict]]:
    training = [story for story in stories if story["id"].startswith("training/")]
    validation_ids = {
        story["id"] for story in random.Random(seed).sample(training, round(validation_share * len(training)))
    }
    return {
        "train": [story for story in training if story["id"] not in validation_ids],
        "validation": [story for story in training if story["id"] in validation_ids],
        "test": [story for story in stories if story["id"].startswith("test/")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="NLTK's Reuters corpus: its directory or reuters.zip.")
    parser.add_argument("--output_dir", required=True, help="Where to write the JSONL files and labels.json.")
    parser.add_argument("--validation_share", type=float, default=0.1, help="Training stories kept for validation.")
    parser.add_argument("--seed", type=int, default=0, help="Which training stories are kept for validation.")
    args = parser.parse_args()

    stories = read_stories(Corpus(Path(args.source).expanduser()))
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    for split, rows in split_stories(stories, args.validation_share, args.seed).items():
        (output / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        print(f"{split}: {len(rows)} stories → {output / f'{split}.jsonl'}")
    labels = {"topics": sorted({topic for story in stories for topic in story["topics"]})}
    (output / "labels.json").write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
    print(f"{len(labels['topics'])} categories → {output / 'labels.json'}")


if __name__ == "__main__":
    main()
