#!/usr/bin/env python
"""Build the three-task GoEmotions dataset: `emotion` (28 labels), `ekman` (7) and `sentiment` (4).

Reads Google's release format (train.tsv/dev.tsv/test.tsv with emotion ids, emotions.txt, ekman_mapping.json,
sentiment_mapping.json) from a local directory, or the Hub dataset google-research-datasets/go_emotions
(config "simplified"), keeps the official splits and writes train/validation/test JSONL files with the columns
`text`, `id`, `emotion`, `ekman` and `sentiment` (lists of label names), plus `labels.json` (label order per task)
and `hierarchy.json` (the three taxonomies as one tree: each parent "task/label" → its children in the next finer
task, `"sentiment/positive": ["ekman/joy"]`, `"ekman/joy": ["emotion/joy", "emotion/amusement", …]`).

    python examples/goemotions/build_dataset.py --source ../shared/data/goemotions --output_dir data/goemotions
    python examples/goemotions/build_dataset.py --source hub --output_dir data/goemotions
"""

import argparse
import csv
import json
from pathlib import Path

HUB_ID = "google-research-datasets/go_emotions"
SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
NEUTRAL = "neutral"

# The Ekman and sentiment groupings of the 27 emotions (Demszky et al., 2020); the same as ekman_mapping.json and
# sentiment_mapping.json in Google's release, used when reading from the Hub, which ships only the 28 emotions.
EKMAN = {
    "anger": ["anger", "annoyance", "disapproval"],
    "disgust": ["disgust"],
    "fear": ["fear", "nervousness"],
    "joy": ["joy", "amusement", "approval", "excitement", "gratitude", "love", "optimism", "relief", "pride",
            "admiration", "desire", "caring"],
    "sadness": ["sadness", "disappointment", "embarrassment", "grief", "remorse"],
    "surprise": ["surprise", "realization", "confusion", "curiosity"],
}  # fmt: skip
SENTIMENT = {
    "positive": ["amusement", "excitement", "joy", "love", "desire", "optimism", "caring", "pride", "admiration",
                 "gratitude", "relief", "approval"],
    "negative": ["fear", "nervousness", "remorse", "embarrassment", "disappointment", "sadness", "grief", "disgust",
                 "anger", "annoyance", "disapproval"],
    "ambiguous": ["realization", "surprise", "curiosity", "confusion"],
}  # fmt: skip


def read_local(source: Path) -> tuple[list[str], dict, dict, dict[str, list[dict]]]:
    """Google's release directory → (emotion names, ekman mapping, sentiment mapping, split → rows)."""
    names = (source / "emotions.txt").read_text(encoding="utf-8").split()
    ekman = json.loads((source / "ekman_mapping.json").read_text(encoding="utf-8"))
    sentiment = json.loads((source / "sentiment_mapping.json").read_text(encoding="utf-8"))
    ekman.setdefault(NEUTRAL, [NEUTRAL])  # "neutral" maps to itself in both taxonomies
    sentiment.setdefault(NEUTRAL, [NEUTRAL])
    splits = {}
    for split, file_name in SPLIT_FILES.items():
        with open(source / file_name, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            splits[split] = [
                {"text": text, "id": comment_id, "emotion": [names[int(i)] for i in ids.split(",")]}
                for text, ids, comment_id in reader
            ]
    return names, ekman, sentiment, splits


def read_hub() -> tuple[list[str], dict, dict, dict[str, list[dict]]]:
    from datasets import load_dataset

    dataset = load_dataset(HUB_ID, "simplified")
    names = dataset["train"].features["labels"].feature.names
    splits = {
        split: [
            {"text": row["text"], "id": row["id"], "emotion": [names[i] for i in row["labels"]]}
            for row in dataset[split]
        ]
        for split in SPLIT_FILES
    }
    return names, {**EKMAN, NEUTRAL: [NEUTRAL]}, {**SENTIMENT, NEUTRAL: [NEUTRAL]}, splits


def group_of(mapping: dict[str, list[str]]) -> dict[str, str]:
    """Invert group → emotions into emotion → group."""
    return {emotion: group for group, emotions in mapping.items() for emotion in emotions}


def add_coarse_tasks(rows: list[dict], ekman: dict, sentiment: dict) -> None:
    """Every example annotated for all three tasks: its emotions mapped to Ekman groups and sentiments."""
    ekman_of, sentiment_of = group_of(ekman), group_of(sentiment)
    for row in rows:
        row["ekman"] = sorted({ekman_of[emotion] for emotion in row["emotion"]})
        row["sentiment"] = sorted({sentiment_of[emotion] for emotion in row["emotion"]})


def hierarchy(ekman: dict[str, list[str]], sentiment: dict[str, list[str]]) -> dict[str, list[str]]:
    """Sentiment → Ekman groups → emotions. Both groupings are of the emotions; an Ekman group sits under the one
    sentiment that all of its emotions share (in GoEmotions each does: the taxonomies form an exact tree)."""
    sentiment_of = group_of(sentiment)
    tree = {f"ekman/{group}": [f"emotion/{emotion}" for emotion in emotions] for group, emotions in ekman.items()}
    for group, emotions in ekman.items():
        sentiments = {sentiment_of[emotion] for emotion in emotions}
        if len(sentiments) != 1:
            raise SystemExit(f"Ekman group {group!r} spans the sentiments {sorted(sentiments)}: no tree")
        tree.setdefault(f"sentiment/{sentiments.pop()}", []).append(f"ekman/{group}")
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="Directory in Google's release format, or 'hub'.")
    parser.add_argument("--output_dir", required=True, help="Where to write the JSONL files and labels.json.")
    args = parser.parse_args()

    names, ekman, sentiment, splits = read_hub() if args.source == "hub" else read_local(Path(args.source))
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        add_coarse_tasks(rows, ekman, sentiment)
        with open(output / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        print(f"{split}: {len(rows)} rows → {output / f'{split}.jsonl'}")
    labels = {"emotion": names, "ekman": list(ekman), "sentiment": list(sentiment)}
    (output / "labels.json").write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
    tree = hierarchy(ekman, sentiment)
    (output / "hierarchy.json").write_text(json.dumps(tree, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
