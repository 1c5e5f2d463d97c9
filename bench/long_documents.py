#!/usr/bin/env python
"""Long documents (`--long_documents chunk`): training and prediction throughput, in documents/s and tokens/s, and
the peak RSS of the whole run, at 1, 4 and 16 chunks of 128 tokens per document, against truncation at 128 tokens;
and what the chunk budget (`--chunk_budget`, gradient checkpointing over groups of chunks) saves at 16 chunks.

Documents are GoEmotions training comments joined until they fill exactly N chunks (chunks of 128 tokens with the
default stride of 32), with one task of five random labels: speed alone is measured. Each run trains the bundled
MiniLM one epoch over the same number of chunks (512: 512 one-chunk documents, 128 of 4, 32 of 16) in batches of 8
documents, then predicts the same documents; truncation reads the 16-chunk documents' first 128 tokens. Each run is
a process of its own, its peak RSS read from the kernel (`os.wait4`); each run --repeats times, taking turns, and
the medians kept. Results in bench/results/long_documents.json.

With --reuters: test micro- and macro-F1 on Reuters-21578 (examples/reuters, its config: the bundled MiniLM,
thresholds tuned on validation) of truncation at 128 and at 512 tokens against chunks of 128 tokens with each
pooling, over seeds 42 and 1; on all test stories and, separately, on those longer than 512 tokens (MiniLM's
tokenizer), predicted alone from each trained model. --rows N: N stories of each split (a smoke test).

    python bench/long_documents.py --speed      # 3 repeats: about 17 minutes on 2 cores
    python examples/reuters/build_dataset.py --source ~/nltk_data/corpora/reuters.zip --output_dir data/reuters
    python bench/long_documents.py --reuters
    python bench/long_documents.py --reuters --readings truncate-512 chunks-128-max   # those two first
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
from pathlib import Path

import numpy as np
from harness import (
    DATA,
    REPO,
    RESULTS,
    cli_command,
    f1_scores,
    mean_over_seeds,
    read_json,
    run_cli,
    run_directory,
    write_results,
)

CHUNK_LENGTH, CHUNKS_PER_RUN, BATCH = 128, 512, 8
CHUNK_COUNTS = (1, 4, 16)
LABELS = ["a", "b", "c", "d", "e"]


def documents_of(chunks: int, count: int, tokenizer) -> list[dict]:
    """`count` documents of exactly `chunks` chunks each: GoEmotions comments joined, in order, until one more
    comment would make another chunk."""
    from mtl_model.batching import Chunking

    chunking = Chunking(CHUNK_LENGTH, CHUNK_LENGTH // 4, max_chunks=10_000)
    comments = iter(json.loads(line)["text"] for line in (DATA / "train.jsonl").read_text().splitlines())
    rng, documents, text = np.random.default_rng(0), [], ""
    while len(documents) < count:
        longer = f"{text} {next(comments)}".strip()
        if len(chunking.tokenize(tokenizer, [longer])[0]["input_ids"][0]) > chunks:
            labels = [label for label in LABELS if rng.random() < 0.3]
            documents.append({"text": text, "topic": labels})
            text = ""
        else:
            text = longer
    return documents


def run_measured(directory, *arguments) -> dict:
    """One CLI run in a process of its own: its all_results.json, and the process's peak RSS (MiB)."""
    process = subprocess.Popen(cli_command(*arguments, "--output_dir", directory), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the run in {directory} failed; run it again by hand to see why")
    return {**read_json(directory / "all_results.json"), "peak_rss_mib": round(usage.ru_maxrss / 1024)}


def speed(repeats: int) -> dict:
    """Each run `repeats` times, the runs taking turns (so that a slower spell of a shared machine slows them alike),
    and each figure's median."""
    from transformers import AutoTokenizer

    from mtl_model.arguments import bundled_encoder_path

    tokenizer = AutoTokenizer.from_pretrained(bundled_encoder_path())
    group = run_directory("long_documents", "speed")
    group.mkdir(parents=True, exist_ok=True)
    runs = {f"chunk-{n}": (n, ["--long_documents", "chunk"]) for n in CHUNK_COUNTS}
    runs["truncate-16"] = (16, [])
    runs["chunk-16-all-chunks-at-once"] = (16, ["--long_documents", "chunk", "--chunk_budget", str(16 * BATCH)])
    figures = {name: [] for name in runs}
    for repeat in range(repeats):
        for name, (chunks, flags) in runs.items():
            figures[name].append(measure(group, f"{name}-{repeat}", chunks, flags, tokenizer))
            print(name, figures[name][-1], flush=True)
    medians = {name: {key: statistics.median(run[key] for run in measured) for key in measured[0]}
               for name, measured in figures.items()}  # fmt: skip
    return {"repeats": repeats, "median": medians, "runs": figures,
            "command": f"python bench/long_documents.py --speed --repeats {repeats}"}  # fmt: skip


def measure(group: Path, name: str, chunks: int, flags: list[str], tokenizer) -> dict:
    """One run of documents of `chunks` chunks: its throughput and peak RSS."""
    path = group / f"documents-{chunks}.jsonl"
    if not path.exists():
        documents = documents_of(chunks, CHUNKS_PER_RUN // chunks, tokenizer)
        path.write_text("".join(json.dumps(document) + "\n" for document in documents))
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    read = tokens_read(texts, tokenizer, chunked=bool(flags))
    shutil.rmtree(group / name, ignore_errors=True)  # a run of its own each time
    measured = run_measured(
        group / name, "--train_file", path, "--validation_file", path, "--test_file", path,
        "--labels_file", labels_file(group), "--task_columns", "topic", "--max_seq_length", CHUNK_LENGTH,
        "--per_device_train_batch_size", BATCH, "--per_device_eval_batch_size", BATCH, "--num_train_epochs", 1,
        "--do_train", "--do_predict", "--save_strategy", "no", "--report_to", "none", *flags,
    )  # fmt: skip
    return {
        "documents": len(texts),
        "tokens_read_per_document": round(read / len(texts), 1),
        "train_documents_per_s": round(measured["train_samples_per_second"], 2),
        "train_tokens_per_s": round(measured["train_samples_per_second"] * read / len(texts)),
        "predict_documents_per_s": round(measured["test_samples_per_second"], 2),
        "predict_tokens_per_s": round(measured["test_samples_per_second"] * read / len(texts)),
        "peak_rss_mib": measured["peak_rss_mib"],
    }


def labels_file(group) -> str:
    path = group / "labels.json"
    path.write_text(json.dumps({"topic": LABELS}))
    return str(path)


def tokens_read(texts: list[str], tokenizer, chunked: bool) -> int:
    """Tokens the model reads of `texts`: every chunk's (overlaps counted twice), or the first CHUNK_LENGTH."""
    from mtl_model.batching import Chunking, token_count

    if not chunked:
        return sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=CHUNK_LENGTH)["input_ids"])
    chunked_ids = Chunking(CHUNK_LENGTH, CHUNK_LENGTH // 4, max_chunks=16).tokenize(tokenizer, texts)[0]["input_ids"]
    return sum(token_count(ids) for ids in chunked_ids)


REUTERS = REPO / "data" / "reuters"
REUTERS_CONFIG = REPO / "examples" / "reuters" / "config.yaml"
SEEDS = (42, 1)
LONG = 512  # tokens: the stories truncation at 512 cuts, scored apart
READINGS = {
    "truncate-128": ["--long_documents", "truncate", "--max_seq_length", 128],
    "truncate-512": ["--long_documents", "truncate", "--max_seq_length", LONG],
    **{f"chunks-128-{pooling}": ["--long_documents", "chunk", "--max_seq_length", 128, "--chunk_pooling", pooling]
       for pooling in ("max", "mean", "attention")},
}  # fmt: skip


def longer_test_stories(directory: Path, tokenizer) -> Path:
    """The Reuters test stories longer than LONG tokens, as a test file of their own in `directory`."""
    rows = [json.loads(line) for line in (REUTERS / "test.jsonl").read_text().splitlines()]
    lengths = [len(ids) for ids in tokenizer([row["text"] for row in rows])["input_ids"]]
    path = directory / f"test-longer-than-{LONG}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row, length in zip(rows, lengths) if length > LONG))
    return path


def reuters(rows: int | None, readings: list[str], save, earlier: dict) -> dict:
    """Each seed in turn, each of `readings` in turn, added to the `earlier` report's runs (those of other readings
    kept); the report so far is passed to `save` after every run, so a session that ends mid-way keeps what
    finished (and a rerun finds those runs done)."""
    from transformers import AutoTokenizer

    from mtl_model.arguments import bundled_encoder_path

    group = run_directory("long_documents", "reuters" + (f"-rows{rows}" if rows else ""))
    group.mkdir(parents=True, exist_ok=True)
    longer = longer_test_stories(group, AutoTokenizer.from_pretrained(bundled_encoder_path()))
    splits = ("train", "eval", "predict") if rows else ()
    limit = [item for split in splits for item in (f"--max_{split}_samples", rows)]
    report = {
        "seeds": list(SEEDS),
        "test_f1_by_seed": earlier.get("test_f1_by_seed", {}),  # seeds as JSON keys: strings
        f"test_stories_longer_than_{LONG}_tokens": sum(1 for _ in longer.open()),
        "command": "python bench/long_documents.py --reuters" + (f" --rows {rows}" if rows else ""),
    }
    for seed in SEEDS:
        for name in readings:
            flags = READINGS[name]
            directory = group / f"{name}-seed{seed}"
            results = run_cli(directory, REUTERS_CONFIG, *flags, *limit, "--seed", seed)
            predict_longer = ["--model_name_or_path", directory, "--test_file", longer, "--do_predict"]
            length = flags[flags.index("--max_seq_length") + 1]
            alone = run_cli(group / f"{name}-seed{seed}-longer-than-{LONG}", *predict_longer, "--max_seq_length",
                            length, "--report_to", "none")  # fmt: skip
            report["test_f1_by_seed"].setdefault(name, {})[str(seed)] = {
                "all_stories": f1_scores(results, ["topics"])["topics"],
                f"stories_longer_than_{LONG}_tokens": f1_scores(alone, ["topics"])["topics"],
                "train_runtime_s": round(results["train_runtime"]),
            }  # fmt: skip
            report["test_f1_mean"] = {
                name: mean_over_seeds(list(runs.values()))
                for name, runs in report["test_f1_by_seed"].items()
                if len(runs) == len(SEEDS)
            }
            save(report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed", action="store_true", help="Throughput and peak RSS by chunks per document.")
    parser.add_argument("--reuters", action="store_true", help="F1 on Reuters-21578, truncated against chunked.")
    parser.add_argument("--rows", type=int, help="With --reuters: the first N stories of each split (a smoke test).")
    parser.add_argument(
        "--readings", nargs="+", choices=READINGS, default=list(READINGS),
        help="With --reuters: which readings to run, in this order (default all); runs done before are reused.",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="With --speed: runs of each, for medians.")
    args = parser.parse_args()
    if args.speed == args.reuters:
        parser.error("say what to measure: --speed or --reuters")
    key = "speed" if args.speed else "reuters" + (f"_rows{args.rows}" if args.rows else "")
    path = RESULTS / "long_documents.json"

    def saved() -> dict:
        return read_json(path) if path.exists() else {}

    def save(result: dict) -> dict:
        return write_results(path, {**saved(), key: result})[key]

    result = speed(args.repeats) if args.speed else reuters(args.rows, args.readings, save, saved().get(key, {}))
    print(json.dumps(save(result), indent=2))


if __name__ == "__main__":
    main()
