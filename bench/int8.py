#!/usr/bin/env python
"""int8 inference (`--int8_inference`) against float32 on a trained GoEmotions model: test F1 and speed.

Both predict the GoEmotions test split with `run_mtl_classification.py --do_predict` from the same trained model
(its tuned thresholds), each in its own process, `--repeats` times, alternating; the report quotes the F1 of each
(deterministic) and the median of the per-pair throughput ratios int8/float32.

    python bench/goemotions.py --only ours --loss_type asl   # trains the model first, if not there yet
    python bench/int8.py                               # writes bench/results/int8.json
"""

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from goemotions import run_directory
from harness import DATA, REPO, RESULTS, TASKS, f1_scores, median_ratio, run_cli, write_results

VARIANTS = ("float32", "int8")


def predict(model_dir: Path, int8: bool) -> dict:
    """Test F1 per task with the model's thresholds, and prediction throughput."""
    with tempfile.TemporaryDirectory() as output_dir:
        results = run_cli(
            Path(output_dir), "--model_name_or_path", model_dir,
            "--test_file", DATA / "test.jsonl", "--labels_file", DATA / "labels.json",
            "--task_columns", ",".join(TASKS), "--max_seq_length", 128, "--do_predict",
            "--report_to", "none", "--disable_tqdm", "true", *(["--int8_inference"] if int8 else []), quiet=True,
        )  # fmt: skip
    f1 = f1_scores(results, key="{average}", digits=4)
    return {"f1": f1, "predict_samples_per_second": results["predict_samples_per_second"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", type=Path, default=run_directory("ours-asl", 3, 1e-4))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = [{name: predict(args.model_dir, name == "int8") for name in VARIANTS} for _ in range(args.repeats)]
    report = {
        "test_f1": {name: runs[0][name]["f1"] for name in VARIANTS},
        "median_predict_samples_per_second": {
            name: statistics.median(run[name]["predict_samples_per_second"] for run in runs) for name in VARIANTS
        },
        "median_ratio_int8_over_float32": median_ratio(runs, "int8", "float32", "predict_samples_per_second"),
        "runs": runs,
        "model_dir": os.path.relpath(args.model_dir, REPO),
        "max_length": 128,
    }
    write_results(RESULTS / "int8.json", report)
    print(json.dumps({key: report[key] for key in ("test_f1", "median_ratio_int8_over_float32")}, indent=2))


if __name__ == "__main__":
    main()
