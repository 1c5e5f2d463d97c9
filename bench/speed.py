#!/usr/bin/env python
"""Training and inference throughput: the stock multi-label recipe against ours, back to back (CPU or GPU).

Both on the GoEmotions texts with the bundled MiniLM, batch size 32, max length 64:
- stock: `AutoModelForSequenceClassification(problem_type="multi_label_classification")` over the 39 labels of the
  three taxonomies, a plain `Trainer` with its defaults, `DataCollatorWithPadding` (bench/stock.py);
- ours: `run_mtl_classification.py` itself with three tasks and its defaults;
- ours-int8: the same with `--int8_inference` (the test split predicted in int8; training is ours);
- ours-no-trim: the same with `--malloc_trim_steps 0` (what giving freed memory back to the system costs and saves);
- ours-dropout: the same with the encoder's attention dropout (0.1) instead of none;
- ours-dropout-embeddings: that, and the word embeddings trained too, as the stock recipe trains them (what those two
  defaults of ours buy).

Each recipe runs in its own process (peak RSS only grows), `--repeats` times, alternating, and the report quotes
medians and the median of the per-pair ratios ours/stock. Training throughput counts the `--steps` optimizer steps
after `--warmup_steps`; inference throughput is the Trainer's own over the whole test split. Achieved training
GFLOP/s ≈ 6 × non-embedding parameters × real (unpadded) tokens per second, against this machine's fp32 matmul rate.

On a GPU the int8 and trimming recipes do not apply (both are CPU-only); `--bf16` trains both recipes in bf16
mixed precision, and the matmul rate is measured on the GPU in the dtype trained:

    python bench/speed.py                # writes bench/results/speed.json
    python bench/speed.py --recipes stock ours --bf16 --output bench/results/speed-gpu-bf16.json
"""

import argparse
import datetime
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, DataCollatorWithPadding, TrainerCallback, TrainingArguments

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from settings import ENCODER_AS_IT_COMES, cpu_model, gpu_model  # noqa: E402
from stock import label_names, multi_hot_dataset, stock_trainer  # noqa: E402

from mtl_model.arguments import bundled_encoder_path  # noqa: E402

TASKS = ["emotion", "ekman", "sentiment"]
# Each of our recipes: the CLI's extra arguments.
OURS = {
    "ours": [],
    "ours-int8": ["--int8_inference"],
    "ours-no-trim": ["--malloc_trim_steps", "0"],
    "ours-dropout": ["--attention_dropout", "0.1"],
    "ours-dropout-embeddings": ENCODER_AS_IT_COMES,
}
RECIPES = ("stock", *OURS)
BATCH_SIZE, MAX_LENGTH = 32, 64


class StepClock(TrainerCallback):
    """perf_counter at the end of every optimizer step (after the GPU's queued work, on a GPU)."""

    def __init__(self):
        self.times = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


class TokenCountingCollator(DataCollatorWithPadding):
    """Dynamic padding that also records every batch's real and padded token counts, in order: the training
    batches come first, one per step (no accumulation, no evaluation during training)."""

    counts = []  # (real, padded) per batch; class-level so that the instance the CLI creates records too

    def __call__(self, features):
        batch = super().__call__(features)
        mask = batch["attention_mask"]
        TokenCountingCollator.counts.append((int(mask.sum()), mask.numel()))
        return batch


def training_figures(clock: StepClock, warmup_steps: int, steps: int) -> dict:
    elapsed = clock.times[warmup_steps + steps - 1] - clock.times[warmup_steps - 1]
    measured = TokenCountingCollator.counts[warmup_steps : warmup_steps + steps]
    real, padded = sum(count[0] for count in measured), sum(count[1] for count in measured)
    return {
        "train_samples_per_second": steps * BATCH_SIZE / elapsed,
        "real_tokens_per_second": real / elapsed,
        "real_tokens_per_example": real / (steps * BATCH_SIZE),
        "padded_tokens_per_example": padded / (steps * BATCH_SIZE),
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
    )
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    train, test = (
        multi_hot_dataset(str(data_dir / f"{split}.jsonl"), TASKS, names, tokenizer, MAX_LENGTH)
        for split in ("train", "test")
    )
    clock = StepClock()
    trainer = stock_trainer(encoder, names, args, tokenizer, train, collator=TokenCountingCollator(tokenizer))
    trainer.add_callback(clock)
    trainer.train()
    predict = trainer.predict(test).metrics
    return {
        **training_figures(clock, warmup_steps, steps),
        "predict_samples_per_second": predict["test_samples_per_second"],
    }


def run_ours(data_dir: Path, warmup_steps: int, steps: int, output_dir: str, extra_args: list[str]) -> dict:
    """The CLI's own code path and defaults; only the collator (to count tokens) and a step clock are added."""
    import run_mtl_classification as cli

    clock = StepClock()
    cli.DataCollatorWithPadding = TokenCountingCollator
    cli.early_stopping_callbacks = lambda data_args: [clock]
    cli.main([
        "--train_file", str(data_dir / "train.jsonl"), "--validation_file", str(data_dir / "validation.jsonl"),
        "--test_file", str(data_dir / "test.jsonl"), "--labels_file", str(data_dir / "labels.json"),
        "--task_columns", ",".join(TASKS), "--max_seq_length", str(MAX_LENGTH),
        "--per_device_train_batch_size", str(BATCH_SIZE), "--max_steps", str(warmup_steps + steps),
        "--do_train", "--do_predict", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
        "--output_dir", output_dir, *extra_args,
    ])  # fmt: skip
    results = json.loads((Path(output_dir) / "all_results.json").read_text())
    return {
        **training_figures(clock, warmup_steps, steps),
        "predict_samples_per_second": results["predict_samples_per_second"],
    }


def run_recipe(recipe: str, data_dir: Path, warmup_steps: int, steps: int, bf16: bool) -> dict:
    with tempfile.TemporaryDirectory() as output_dir:
        if recipe == "stock":
            figures = run_stock(data_dir, warmup_steps, steps, output_dir, bf16)
        else:
            extra_args = OURS[recipe] + (["--bf16", "true"] if bf16 else [])
            figures = run_ours(data_dir, warmup_steps, steps, output_dir, extra_args)
    figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


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
            key: statistics.median(run[recipe][key] / run["stock"][key] for run in runs)
            for key in ("train_samples_per_second", "predict_samples_per_second", "peak_rss_mib")
        }
        for recipe in recipes
        if recipe != "stock"
    }
    return {"median": medians, "median_ratio_over_stock": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, default=REPO / "data" / "goemotions")
    parser.add_argument("--warmup_steps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES), help="stock comes first")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed-precision training (GPU) for every recipe")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "speed.json")
    parser.add_argument("--recipe", choices=RECIPES, help="(internal) run one recipe, print its JSON")
    args = parser.parse_args()
    if args.recipe:
        figures = run_recipe(args.recipe, args.data_dir, args.warmup_steps, args.steps, args.bf16)
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
            command = [sys.executable, __file__, "--recipe", recipe, "--data_dir", str(args.data_dir),
                       "--warmup_steps", str(args.warmup_steps), "--steps", str(args.steps),
                       *(["--bf16"] if args.bf16 else [])]  # fmt: skip
            output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO).stdout
            run[recipe] = json.loads(output.rsplit("RESULT ", 1)[1])
            print(f"repeat {repeat + 1} {recipe}: {json.dumps(run[recipe])}", flush=True)
        runs.append(run)
        # Written after every repeat, so that a run cut short keeps its finished repeats.
        report = speed_report(runs, args, peak, parameters)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
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
        },  # fmt: skip
        "torch_threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "gpu": gpu_model(),
    }


if __name__ == "__main__":
    main()
