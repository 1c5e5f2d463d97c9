#!/usr/bin/env python
"""Build XED's English data (Öhman et al., COLING 2020): 17,528 movie-subtitle lines, each with one or more of
Plutchik's eight emotions, as one task `emotion` (8 labels).

Reads `AnnotatedData/en-annotated.tsv` of the XED repository (github.com/Helsinki-NLP/XED): `text<TAB>ids`, ids
1–8 in alphabetical order of the emotions. XED has no official splits: the lines are shuffled with `--seed` and cut
80 / 10 / 10 into train / validation / test JSONL files (columns `text`, `id`, `emotion`), plus `labels.json`.

    python examples/xed/build_dataset.py --source XED/AnnotatedData/en-annotated.tsv --output_dir data/xed
"""

import argparse
import json
import random
from pathlib import Path

EMOTIONS = ["anger", "anticipation", "disgust", "fear", "joy", "sadness", "surprise", "trust"]
SHARES = {"train": 0.8, "validation": 0.1, "test": 0.1}


def read_lines(path: Path) -> list[dict]:
    """The annotated lines as rows; a line that is not `text<TAB>ids` with ids 1–8 stops the build, naming it."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text, _, ids = line.rpartition("\t")
        indices = [index.strip() for index in ids.split(",")]
        if not text.strip() or not all(index.isdigit() and 1 <= int(index) <= len(EMOTIONS) for index in indices):
            raise SystemExit(f"{path}:{number}: expected text<TAB>emotion ids 1-8, got {line!r}")
        rows.append({"text": text.strip(), "id": number, "emotion": sorted({EMOTIONS[int(i) - 1] for i in indices})})
    return rows


def split_rows(rows: list[dict], seed: int) -> dict[str, list[dict]]:
    shuffled = random.Random(seed).sample(rows, len(rows))
    train_end = round(SHARES["train"] * len(rows))
    validation_end = train_end + round(SHARES["validation"] * len(rows))
    return {
        "train": shuffled[:train_end],
        "validation": shuffled[train_end:validation_end],
        "test": shuffled[validation_end:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="XED's AnnotatedData/en-annotated.tsv.")
    parser.add_argument("--output_dir", required=True, help="Where to write the JSONL files and labels.json.")
    parser.add_argument("--seed", type=int, default=0, help="The shuffle before the 80/10/10 split.")
    args = parser.parse_args()

    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    for split, rows in split_rows(read_lines(Path(args.source)), args.seed).items():
        with open(output / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        print(f"{split}: {len(rows)} rows → {output / f'{split}.jsonl'}")
    (output / "labels.json").write_text(json.dumps({"emotion": EMOTIONS}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
