#!/usr/bin/env python
"""int8 inference (`--int8_inference`) against float32 on a trained GoEmotions model: test F1 and speed.

Both predict the GoEmotions test split with `run_mtl_classification.py --do_predict` from the same trained model
(its tuned thresholds), each in its own process, `--repeats` times, alternating; the report quotes the F1 of each
(deterministic) and the median of the per-pair throughput ratios int8/float32.

    python bench/goemotions.py --only ours --loss_type asl   # trains the model first, if not there yet
    python bench/int8.py                               # writes bench/results/int8.json
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from goemotions import DATA, TASKS, run_directory  # noqa: E402
from settings import cpu_model  # noqa: E402


def predict(model_dir: Path, int8: bool) -> dict:
    """Test F1 per task with the model's thresholds, and prediction throughput."""
    with tempfile.TemporaryDirectory() as output_dir:
        command = [
            sys.executable, str(REPO / "run_mtl_classification.py"), "--model_name_or_path", str(model_dir),
            "--test_file", str(DATA / "test.jsonl"), "--labels_file", str(DATA / "labels.json"),
            "--task_columns", ",".join(TASKS), "--max_seq_length", "128", "--do_predict",
            "--output_dir", output_dir, "--report_to", "none", "--disable_tqdm", "true",
            *(["--int8_inference"] if int8 else []),
        ]  # fmt: skip
        subprocess.run(command, check=True, cwd=REPO, capture_output=True)
        results = json.loads((Path(output_dir) / "all_results.json").read_text())
    return {
        "f1": {
            task: {average: round(results[f"test_{task}_{average}_f1"], 4) for average in ("macro", "micro")}
            for task in TASKS
        },
        "predict_samples_per_second": results["predict_samples_per_second"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", type=Path, default=run_directory("ours-asl", 3, 1e-4))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    variants = ("float32", "int8")
    runs = [{name: predict(args.model_dir, name == "int8") for name in variants} for _ in range(args.repeats)]
    speed = {name: statistics.median(run[name]["predict_samples_per_second"] for run in runs) for name in variants}
    report = {
        "test_f1": {name: runs[0][name]["f1"] for name in variants},
        "median_predict_samples_per_second": speed,
        "median_ratio_int8_over_float32": statistics.median(
            run["int8"]["predict_samples_per_second"] / run["float32"]["predict_samples_per_second"] for run in runs
        ),
        "runs": runs,
        "model_dir": os.path.relpath(args.model_dir, REPO),
        "max_length": 128,
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
    }
    (REPO / "bench" / "results" / "int8.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({key: report[key] for key in ("test_f1", "median_ratio_int8_over_float32")}, indent=2))


if __name__ == "__main__":
    main()
