#!/usr/bin/env python
"""Training and inference throughput: the stock multi-label recipe against ours, back to back (CPU or GPU).

Both on the GoEmotions texts with the bundled MiniLM, batch size 32, max length 64:
- stock: `AutoModelForSequenceClassification(problem_type="multi_label_classification")` over the 39 labels of the
  three taxonomies, a plain `Trainer` with its defaults, `DataCollatorWithPadding` (bench/stock.py);
- ours: `run_mtl_classification.py` itself with three tasks and its defaults;
- ours-onnx, ours-onnx-int8: the same with `--inference_backend onnx` / `onnx-int8` (the trained model exported,
  the test split predicted by ONNX Runtime in float32 / int8);
- ours-no-trim: the same with `--malloc_trim_steps 0` (what giving freed memory back to the system costs and saves);
- ours-dropout: the same with the encoder's attention dropout (0.1) instead of none;
- ours-dropout-embeddings: that, and the word embeddings trained too, as the stock recipe trains them (what those two
  defaults of ours buy).

Each recipe runs in its own process (peak RSS only grows), `--repeats` times, alternating, and the report quotes
medians and the median of the per-pair ratios ours/stock. Both recipes log every optimizer step with the tokens seen
(`--logging_steps 1 --include_num_input_tokens_seen non_padding`), and the Trainer's own log (its clock since
training began, its count of real tokens) times the `--steps` steps after `--warmup_steps`; inference throughput is
the Trainer's own over the whole test split. Achieved training GFLOP/s ≈ 6 × non-embedding parameters × real
(unpadded) tokens per second, against this machine's fp32 matmul rate.

On a GPU the ONNX and trimming recipes do not apply (ONNX Runtime predicts on the CPU here; trimming is for CPU
training); `--bf16` trains both recipes in bf16 mixed precision, and the matmul rate is measured on the GPU in the
dtype trained:

    python bench/speed.py                # writes bench/results/speed.json
    python bench/speed.py --recipes stock ours --bf16 --output bench/results/speed-gpu-bf16.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import (
    DATA,
    ENCODER_AS_IT_COMES,
    REPO,
    RESULTS,
    TASKS,
    cli_command,
    median_ratio,
    read_json,
    write_results,
)
from stock import label_names, multi_hot_dataset, stock_trainer
from transformers import AutoModel, AutoTokenizer, TrainingArguments

from mtl_model.arguments import bundled_encoder_path

# Each of our recipes: the CLI's extra arguments.
OURS = {
    "ours": [],
    "ours-onnx": ["--inference_backend", "onnx"],
    "ours-onnx-int8": ["--inference_backend", "onnx-int8"],
    "ours-no-trim": ["--malloc_trim_steps", "0"],
    "ours-dropout": ["--attention_dropout", "0.1"],
    "ours-dropout-embeddings": ENCODER_AS_IT_COMES,
}
RECIPES = ("stock", *OURS)
BATCH_SIZE, MAX_LENGTH = 32, 64
# The Trainer logs, at every step, the seconds since training began ("train_runtime") and the real tokens seen.
STEP_LOGS = {"logging_steps": 1, "include_num_input_tokens_seen": "non_padding"}


def training_figures(log_history: list[dict], warmup_steps: int, steps: int) -> dict:
    """Throughput over the steps after the warm-up, from the Trainer's per-step logs."""
    at_step = {entry["step"]: entry for entry in log_history if "loss" in entry}  # the step logs, not the summary
    first, last = at_step[warmup_steps], at_step[warmup_steps + steps]
    elapsed = last["train_runtime"] - first["train_runtime"]
    real_tokens = last["num_input_tokens_seen"] - first["num_input_tokens_seen"]
    return {
        "train_samples_per_second": steps * BATCH_SIZE / elapsed,
        "real_tokens_per_second": real_tokens / elapsed,
        "real_tokens_per_example": real_tokens / (steps * BATCH_SIZE),
    }


def non_embedding_parameters(encoder) -> int:
    return sum(weights.numel() for name, weights in encoder.named_parameters() if not name.startswith("embeddings."))


def run_stock(data_dir: Path, warmup_steps: int, steps: int, output_dir: str, bf16: bool) -> dict:
    names = label_names(str(data_dir / "labels.json"), TASKS)
    encoder = bundled_encoder_path()
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=BATCH_SIZE,
        max_steps=warmup_steps + steps,
        bf16=bf16,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        **STEP_LOGS,
    )
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    train, test = (
        multi_hot_dataset(str(data_dir / f"{split}.jsonl"), TASKS, names, tokenizer, MAX_LENGTH)
        for split in ("train", "test")
    )
    trainer = stock_trainer(encoder, names, args, tokenizer, train)
    trainer.train()
    return {
        **training_figures(trainer.state.log_history, warmup_steps, steps),
        "predict_samples_per_second": trainer.predict(test).metrics["test_samples_per_second"],
    }


def ours_command(data_dir: Path, warmup_steps: int, steps: int, output_dir: str, extra_args: list[str]) -> list:
    """The CLI itself, with its defaults, three tasks and the step logs."""
    return cli_command(
        "--train_file", data_dir / "train.jsonl", "--validation_file", data_dir / "validation.jsonl",
        "--test_file", data_dir / "test.jsonl", "--labels_file", data_dir / "labels.json",
        "--task_columns", ",".join(TASKS), "--max_seq_length", MAX_LENGTH,
        "--per_device_train_batch_size", BATCH_SIZE, "--max_steps", warmup_steps + steps,
        "--do_train", "--do_predict", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
        *(item for name, value in STEP_LOGS.items() for item in (f"--{name}", value)),
        "--output_dir", output_dir, *extra_args,
    )  # fmt: skip


def run_recipe(recipe: str, data_dir: Path, warmup_steps: int, steps: int, bf16: bool) -> dict:
    """One recipe in a process of its own: its figures and that process's peak RSS."""
    with tempfile.TemporaryDirectory() as output_dir:
        if recipe == "stock":
            command = [
                sys.executable, __file__, "--recipe", "stock", "--output_dir", output_dir, "--data_dir", data_dir,
                "--warmup_steps", warmup_steps, "--steps", steps, *(["--bf16"] if bf16 else []),
            ]  # fmt: skip
        else:
            bf16_flags = ["--bf16", "true"] if bf16 else []
            command = ours_command(data_dir, warmup_steps, steps, output_dir, [*OURS[recipe], *bf16_flags])
        stdout, peak_rss_mib = run_measuring_memory(command)
        if recipe == "stock":
            return {**json.loads(stdout.rsplit("RESULT ", 1)[1]), "peak_rss_mib": peak_rss_mib}
        log_history = read_json(Path(output_dir) / "trainer_state.json")["log_history"]
        results = read_json(Path(output_dir) / "all_results.json")
    return {
        **training_figures(log_history, warmup_steps, steps),
        "predict_samples_per_second": results["predict_samples_per_second"],
        "peak_rss_mib": peak_rss_mib,
    }


def run_measuring_memory(command: list) -> tuple[str, float]:
    """Run a command; its standard output and its peak RSS in MiB (os.wait4: the usage of that child alone)."""
    process = subprocess.Popen([str(part) for part in command], cwd=REPO, stdout=subprocess.PIPE, text=True)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"exit status {os.waitstatus_to_exitcode(status)}: {' '.join(map(str, command))}")
    return stdout, usage.ru_maxrss / 1024


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Median matmul rate of the device trained on (the GPU if any, else the CPU with torch's default threads) in
    the dtype trained: the practical peak."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ a
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def summarise(runs: list[dict], recipes: list[str], peak_gflops: float, parameters: int) -> dict:
    medians = {
        recipe: {key: statistics.median(run[recipe][key] for run in runs) for key in runs[0][recipe]}
        for recipe in recipes
    }
    for figures in medians.values():
        gflops = 6 * parameters * figures["real_tokens_per_second"] / 1e9
        figures["training_gflops"] = gflops
        figures["fraction_of_matmul_peak"] = gflops / peak_gflops
    ratios = {
        recipe: {
            key: median_ratio(runs, recipe, "stock", key)
            for key in ("train_samples_per_second", "predict_samples_per_second", "peak_rss_mib")
        }
        for recipe in recipes
        if recipe != "stock"
    }
    return {"median": medians, "median_ratio_over_stock": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, default=DATA)
    parser.add_argument("--warmup_steps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES), help="stock comes first")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed-precision training (GPU) for every recipe")
    parser.add_argument("--output", type=Path, default=RESULTS / "speed.json")
    parser.add_argument("--recipe", choices=["stock"], help="(internal) run the stock recipe, print its JSON")
    parser.add_argument("--output_dir", help="(internal) the stock recipe's output directory")
    args = parser.parse_args()
    if args.recipe:
        figures = run_stock(args.data_dir, args.warmup_steps, args.steps, args.output_dir, args.bf16)
        print("RESULT " + json.dumps(figures))
        return
    if args.recipes[0] != "stock":
        parser.error("--recipes: the ratios are over stock, so stock comes first")

    peak = matmul_gflops(torch.bfloat16 if args.bf16 else torch.float32)
    parameters = non_embedding_parameters(AutoModel.from_pretrained(bundled_encoder_path()))
    runs = []
    for repeat in range(args.repeats):
        run = {}
        for recipe in args.recipes:
            run[recipe] = run_recipe(recipe, args.data_dir, args.warmup_steps, args.steps, args.bf16)
            print(f"repeat {repeat + 1} {recipe}: {json.dumps(run[recipe])}", flush=True)
        runs.append(run)
        # Written after every repeat, so that a run cut short keeps its finished repeats.
        report = write_results(args.output, speed_report(runs, args, peak, parameters), gpu=True)
    print(json.dumps({key: value for key, value in report.items() if key.startswith(("median", "matmul"))}, indent=2))


def speed_report(runs: list[dict], args: argparse.Namespace, peak: float, parameters: int) -> dict:
    return {
        **summarise(runs, args.recipes, peak, parameters),
        "matmul_gflops": peak,
        "non_embedding_parameters": parameters,
        "runs": runs,
        "settings": {
            "batch_size": BATCH_SIZE,
            "max_length": MAX_LENGTH,
            "warmup_steps": args.warmup_steps,
            "steps": args.steps,
            "repeats": len(runs),
            "tasks": TASKS,
            "bf16": args.bf16,
            "timing": "the Trainer's per-step logs (train_runtime, num_input_tokens_seen)",
        },
        "torch_threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    main()
