#!/usr/bin/env python
"""Preprocessing at scale: a synthetic JSONL training file of `--rows` rows (default one million) with three
multi-label tasks goes through the recipe's data path (file checks, loading into Arrow, label sets, row-by-row
validation, label encoding, tokenization, then the length-sorted order used for batching) in a fresh process,
which reports the wall time of each stage and its peak RSS. The Arrow cache goes to a temporary directory.

    python bench/preprocess.py              # writes bench/results/preprocess_1000000.json
"""

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, RESULTS, write_results

TASKS = {"emotion": 28, "ekman": 7, "sentiment": 4}
WORDS = (
    "i love this so much but the movie was not good and that day felt sad happy angry great awful really what a "
    "thanks lol sure okay never always people think just like you they would make feel"
).split()


def write_synthetic_file(path: Path, rows: int, seed: int = 0) -> None:
    """GoEmotions-like rows: 3 to 40 words; 1 to 3 labels per task, a task missing from one row in 50."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(rows):
            record = {"text": " ".join(rng.choices(WORDS, k=rng.randint(3, 40)))}
            for task, size in TASKS.items():
                if rng.random() >= 0.02:
                    record[task] = [f"{task}_{label}" for label in rng.sample(range(size), rng.randint(1, 3))]
            handle.write(json.dumps(record) + "\n")


def preprocess(train_file: str, cache_dir: str) -> dict:
    """The CLI's data steps, timed one by one."""
    from transformers import AutoTokenizer

    from mtl_model.arguments import DataTrainingArguments, bundled_encoder_path
    from mtl_model.batching import longest_first
    from mtl_model.data import encode_splits, load_raw_splits, resolve_tasks, token_lengths

    seconds, peak_rss_mib = {}, {"imports": peak_rss()}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage], peak_rss_mib[stage] = round(now - clock, 1), peak_rss()
        clock = now

    raw, where = load_raw_splits({"train": train_file}, cache_dir=cache_dir)
    lap("check_and_load")
    spec = DataTrainingArguments(task_columns=",".join(TASKS), max_seq_length=128)
    tasks, sources = resolve_tasks(raw, where, spec)
    lap("label_sets")
    tokenizer = AutoTokenizer.from_pretrained(bundled_encoder_path())
    encoded = encode_splits(raw, where, spec, tasks, sources, tokenizer)
    lap("validate_encode_tokenize")
    longest_first(token_lengths(encoded["train"]))
    lap("length_order")
    return {
        "rows": len(encoded["train"]),
        "seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 1),
        "peak_rss_mib_after": peak_rss_mib,
    }


def peak_rss() -> int:
    """Peak resident memory of this process so far, MiB (it includes touched pages of memory-mapped Arrow files)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--measure", nargs=2, metavar=("TRAIN_FILE", "CACHE_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        figures = preprocess(*args.measure)
        print("RESULT " + json.dumps(figures))
        return

    with tempfile.TemporaryDirectory() as directory:
        train_file = Path(directory) / "train.jsonl"
        write_synthetic_file(train_file, args.rows)
        file_mib = train_file.stat().st_size / 2**20
        command = [sys.executable, __file__, "--measure", str(train_file), str(Path(directory) / "cache")]
        output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO).stdout
    report = {**json.loads(output.rsplit("RESULT ", 1)[1]), "file_mib": round(file_mib)}
    print(json.dumps(write_results(RESULTS / f"preprocess_{args.rows}.json", report), indent=2))


if __name__ == "__main__":
    main()
