#!/usr/bin/env python
"""Compare settings of the GoEmotions recipe side by side: same data subset, seed, epochs; one flag changed.

Each run is `run_mtl_classification.py examples/goemotions/config.yaml <flags>` on the first N training rows,
evaluated on the full official test split at threshold 0.5, and with per-label thresholds tuned on the validation
split when the config tunes them. A run whose `all_results.json` already exists in
bench/runs/ is not repeated, so a comparison can be finished across several invocations. Runs go one after the
other: two trainings at once on a 2-core machine oversubscribe the cores and distort the timings.

    python bench/settings.py head_learning_rate     # writes bench/results/head_learning_rate.json
    python bench/settings.py pooling                # writes bench/results/pooling.json
    python bench/settings.py sampling               # full training set: length-grouped vs random batches
    python bench/settings.py loss                   # full training set: bce, focal, asl, pos_weight
    python bench/settings.py attention_dropout      # full training set: attention dropout 0.1 vs 0
    python bench/settings.py speed_defaults         # full training set, two seeds: speed levers vs stock training
"""

import argparse
import json

from harness import (
    CONFIG,
    ENCODER_AS_IT_COMES,
    RESULTS,
    f1_scores,
    mean_over_seeds,
    run_cli,
    run_directory,
    write_results,
)

COMMON = ["--max_train_samples", "10000", "--save_strategy", "no", "--eval_strategy", "no", "--do_eval", "false",
          "--logging_steps", "100", *ENCODER_AS_IT_COMES]  # fmt: skip
FULL_TRAINING_SET = ["--save_strategy", "no", "--eval_strategy", "no", "--do_eval", "false"]


def training_flags(sampling: str, attention_dropout: float, frozen_embeddings: bool) -> list[str]:
    return [
        "--train_sampling_strategy", sampling, "--attention_dropout", f"{attention_dropout:g}",
        "--freeze_word_embeddings", str(frozen_embeddings).lower(),
    ]  # fmt: skip


COMPARISONS = {
    # Fresh heads at the encoder's learning rate barely leave the label prior within an epoch.
    "head_learning_rate": {
        "tasks": ["emotion"],
        "settings": {
            "heads-at-1e-4": ["--task_columns", "emotion", "--head_learning_rate", "1e-4"],
            "all-at-3e-4": ["--task_columns", "emotion", "--learning_rate", "3e-4", "--head_learning_rate", "3e-4"],
            "heads-at-3e-3": ["--task_columns", "emotion", "--head_learning_rate", "3e-3"],
        },
    },
    "pooling": {
        "tasks": ["emotion", "ekman", "sentiment"],
        "settings": {pooling: ["--pooling", pooling] for pooling in ("mean", "cls", "pooler")},
    },
    # The README's main command as it is, on the whole training set, with the default length-grouped batches and
    # with the stock random ones: the speed default must not cost F1.
    "sampling": {
        "tasks": ["emotion", "ekman", "sentiment"],
        "common": [*FULL_TRAINING_SET, *ENCODER_AS_IT_COMES],
        "settings": {strategy: ["--train_sampling_strategy", strategy] for strategy in ("group_by_length", "random")},
    },
    # The loss options of the issue on the whole training set, one epoch each: a screen before longer runs.
    "loss": {
        "tasks": ["emotion", "ekman", "sentiment"],
        "common": [*FULL_TRAINING_SET, *ENCODER_AS_IT_COMES],
        "settings": {
            "bce": ["--loss_type", "bce"],
            "asl": ["--loss_type", "asl"],
            "pos_weight-10": ["--pos_weight_cap", "10"],
            "focal": ["--loss_type", "focal"],
        },
    },
    # Dropout on the attention probabilities (the encoder's 0.1, or none): without it a training step is faster on
    # the CPU; the README's command otherwise, on the whole training set.
    "attention_dropout": {
        "tasks": ["emotion", "ekman", "sentiment"],
        "common": [*FULL_TRAINING_SET, "--freeze_word_embeddings", "false"],
        "settings": {f"{rate:g}": ["--attention_dropout", str(rate)] for rate in (0.1, 0.0)},
    },
    # The speed levers (length-grouped batches, no attention dropout, frozen word embeddings) against the stock
    # training (random batches, the encoder's dropout, everything trained), over seeds: one seed cannot tell a lever's
    # cost from its batch order.
    "speed_defaults": {
        "tasks": ["emotion", "ekman", "sentiment"],
        "common": FULL_TRAINING_SET,
        "settings": {
            "random-dropout-0.1": training_flags("random", attention_dropout=0.1, frozen_embeddings=False),
            "grouped-dropout-0-frozen-embeddings": training_flags("group_by_length", 0.0, frozen_embeddings=True),
            "grouped-dropout-0.1-frozen-embeddings": training_flags("group_by_length", 0.1, frozen_embeddings=True),
        },
        "seeds": [42, 1],
    },
}


def run(
    comparison: str, setting: str, flags: list[str], tasks: list[str], common: list[str], seed: int | None = None
) -> dict:
    flags = [*flags, "--seed", str(seed)] if seed is not None else flags
    results = run_cli(run_directory(comparison, setting, seed), CONFIG, *common, *flags)
    return {
        "flags": " ".join(flags),
        **test_scores(results, tasks),
        "train_runtime_s": round(results["train_runtime"], 1),
        "train_samples_per_second": results["train_samples_per_second"],
    }


def seeded_runs(
    comparison: str, setting: str, flags: list[str], tasks: list[str], common: list[str], seeds: list[int]
) -> dict:
    """One run per seed (its own directory), and the mean of each test score over the seeds."""
    by_seed = {seed: run(comparison, setting, flags, tasks, common, seed) for seed in seeds}
    test_f1 = [{key: value for key, value in run.items() if key.startswith("test_f1")} for run in by_seed.values()]
    return {"mean_over_seeds": mean_over_seeds(test_f1), "seeds": by_seed}


def test_scores(results: dict, tasks: list[str]) -> dict:
    """Test macro/micro F1 per task at threshold 0.5, and with thresholds tuned on validation when the run tuned."""
    tuned = "test_macro_f1_at_0.5" in results  # a tuning run reports test_* tuned and test_*_at_0.5

    def scores(suffix: str) -> dict:
        return f1_scores(results, tasks, suffixes=(suffix,), key="{average}", digits=4)

    return {"test_f1_at_0.5": scores("_at_0.5" if tuned else ""), **({"test_f1_tuned": scores("")} if tuned else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("comparison", choices=sorted(COMPARISONS))
    name = parser.parse_args().comparison
    comparison = COMPARISONS[name]
    tasks, settings, common = comparison["tasks"], comparison["settings"], comparison.get("common", COMMON)
    if "seeds" in comparison:
        runs = {setting: seeded_runs(name, setting, flags, tasks, common, comparison["seeds"])
                for setting, flags in settings.items()}  # fmt: skip
    else:
        runs = {setting: run(name, setting, flags, tasks, common) for setting, flags in settings.items()}
    report = {
        "comparison": name,
        "runs": runs,
        "common_flags": " ".join(common),
        "config": "examples/goemotions/config.yaml",
    }
    print(json.dumps(write_results(RESULTS / f"{name}.json", report), indent=2))


if __name__ == "__main__":
    main()
