#!/usr/bin/env python
"""Long documents (`--long_documents chunk`): training and prediction throughput, in documents/s and tokens/s, and
the peak RSS of the whole run, at 1, 4 and 16 chunks of 128 tokens per document, against truncation at 128 tokens;
and what the chunk budget (`--chunk_budget`, gradient checkpointing over groups of chunks) saves at 16 chunks.

Documents are GoEmotions training comments joined until they fill exactly N chunks (chunks of 128 tokens with the
default stride of 32), with one task of five random labels: speed alone is measured. Each run trains the bundled
MiniLM one epoch over the same number of chunks (512: 512 one-chunk documents, 128 of 4, 32 of 16) in batches of 8
documents, then predicts the same documents; truncation reads the 16-chunk documents' first 128 tokens. Each run is
a process of its own, its peak RSS read from the kernel (`os.wait4`). Results in bench/results/long_documents.json.

    python bench/long_documents.py --speed      # about 10 minutes on 2 cores
"""

import argparse
import json
import os
import subprocess

import numpy as np
from harness import DATA, REPO, RESULTS, cli_command, read_json, run_directory, write_results

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


def speed() -> dict:
    from transformers import AutoTokenizer

    from mtl_model.arguments import bundled_encoder_path

    tokenizer = AutoTokenizer.from_pretrained(bundled_encoder_path())
    group = run_directory("long_documents", "speed")
    group.mkdir(parents=True, exist_ok=True)
    runs = {f"chunk-{n}": (n, ["--long_documents", "chunk"]) for n in CHUNK_COUNTS}
    runs["truncate-16"] = (16, [])
    runs["chunk-16-all-chunks-at-once"] = (16, ["--long_documents", "chunk", "--chunk_budget", str(16 * BATCH)])
    results = {}
    for name, (chunks, flags) in runs.items():
        path = group / f"documents-{chunks}.jsonl"
        if not path.exists():
            documents = documents_of(chunks, CHUNKS_PER_RUN // chunks, tokenizer)
            path.write_text("".join(json.dumps(document) + "\n" for document in documents))
        texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
        read = tokens_read(texts, tokenizer, chunked=bool(flags))
        measured = run_measured(
            group / name, "--train_file", path, "--validation_file", path, "--test_file", path,
            "--labels_file", labels_file(group), "--task_columns", "topic", "--max_seq_length", CHUNK_LENGTH,
            "--per_device_train_batch_size", BATCH, "--per_device_eval_batch_size", BATCH, "--num_train_epochs", 1,
            "--do_train", "--do_predict", "--save_strategy", "no", "--report_to", "none", *flags,
        )  # fmt: skip
        results[name] = {
            "documents": len(texts),
            "tokens_read_per_document": round(read / len(texts), 1),
            "train_documents_per_s": round(measured["train_samples_per_second"], 2),
            "train_tokens_per_s": round(measured["train_samples_per_second"] * read / len(texts)),
            "predict_documents_per_s": round(measured["test_samples_per_second"], 2),
            "predict_tokens_per_s": round(measured["test_samples_per_second"] * read / len(texts)),
            "peak_rss_mib": measured["peak_rss_mib"],
        }
        print(name, results[name], flush=True)
    return {"runs": results, "command": "python bench/long_documents.py --speed"}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed", action="store_true", help="Throughput and peak RSS by chunks per document.")
    args = parser.parse_args()
    if not args.speed:
        parser.error("say what to measure: --speed")
    path = RESULTS / "long_documents.json"
    report = {**(read_json(path) if path.exists() else {}), "speed": speed()}
    print(json.dumps(write_results(path, report)["speed"], indent=2))


if __name__ == "__main__":
    main()
