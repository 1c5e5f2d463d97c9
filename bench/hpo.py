#!/usr/bin/env python
"""Hyper-parameter search (`--hpo_trials`) against the README's settings, at the same compute per run: on datasets
the recipe was never tuned on (XED's English subtitles, 8 emotions; Reuters-21578's 90 topics, its first 3,000
training stories truncated at 128 tokens) and on the one it was (GoEmotions, its first 5,000 training rows).

For each dataset, runs of the CLI in bench/runs/hpo-<dataset>/ (a finished run is not repeated):
    readme-seed<S>     the example config as it is (the settings found by hand on GoEmotions), one epoch
    search             one Optuna study of --trials trials (TPE, the default pruner), each trained one epoch on the
                       training split and scored four times on the validation split by the default objective
                       (cross-fitted macro-F1); the default search space without num_train_epochs, so that a trial
                       costs what a README run costs. Its first trial is the README's settings (a new study's first
                       trial is the command line's own). Every trial is also scored on the test split
                       (--hpo_score_test), never to choose: how well does the objective rank the trials?
    searched-<N>trials-seed<S>
                       the best_config.yaml of the search at N trials as it is, trained like a README run (a study
                       grown later by a larger --trials resumes, runs only the new trials, and may find another best)
With --full_space, the search takes the default search space as it is, num_train_epochs (1 to 4) included, as a
user running the search as it comes would (a trial costs one to four README runs): search-full-space/ and
searched-full-space-<N>trials-seed<S>/; and readme-<E>epochs-seed<S>/, the README's settings trained for the best
trial's E epochs (how much of the gain the epochs alone bring).

Then bench/results/hpo.json: test macro- and micro-F1 (thresholds tuned on validation) of both per seed and their
mean, the search's trials, time, best settings, Spearman's rank correlation of the objective with the trials'
test macro-F1, and the worker's peak RSS after its first and its last trial.

With --compare_pruners, instead: one search per pruner (none, median, hyperband; TPE with the same seed) on the
first --max_train_samples training rows, each one's trials, time, best objective and its trial's test macro-F1.
With --memory: the worker's peak RSS after each of --trials trials that differ only in classifier dropout.

    python examples/xed/build_dataset.py --source XED/AnnotatedData/en-annotated.tsv --output_dir data/xed
    python bench/hpo.py --dataset xed --trials 10      # about 40 minutes on 2 cores
    python bench/hpo.py --dataset xed --trials 12 --full_space
    python bench/hpo.py --dataset reuters --trials 12 --full_space
    python bench/hpo.py --dataset goemotions --trials 6
    python bench/hpo.py --dataset xed --trials 12 --compare_pruners --max_train_samples 3000
    python bench/hpo.py --dataset xed --trials 12 --compare_pruners --max_train_samples 3000 --seed 1
    python bench/hpo.py --dataset xed --trials 10 --memory --max_train_samples 2000
"""

import argparse
import statistics
import subprocess
from pathlib import Path

import yaml
from harness import (
    CONFIG,
    REPO,
    RESULTS,
    TASKS,
    cli_command,
    f1_scores,
    read_json,
    run_cli,
    run_directory,
    write_results,
)

from mtl_model.search import STUDY_FILE, search_directory
from mtl_model.search_report import FINISHED, objective_test_correlation, optuna_trial_rows

DATASETS = {
    "xed": (REPO / "examples" / "xed" / "config.yaml", ["emotion"], []),
    "goemotions": (CONFIG, TASKS, ["--max_train_samples", "5000"]),
    # Topics, not emotions: the example's settings, its stories truncated at 128 tokens and its first 3,000 training
    # stories (a run of 3 epochs in about 13 minutes on 2 cores, not the hour of reading them whole).
    "reuters": (REPO / "examples" / "reuters" / "config.yaml", ["topics"],
                ["--long_documents", "truncate", "--max_seq_length", "128", "--max_train_samples", "3000"]),
}  # fmt: skip
SEEDS = (42, 1)
CONFIG_SEED = 42  # the example configs' seed
PRUNERS = ("none", "median", "hyperband")
SEARCH = ["--eval_strategy", "steps", "--eval_steps", "0.25", "--hpo_score_test", "--do_train", "false"]
RESULTS_FILE = RESULTS / "hpo.json"


def search_space(path: Path, full: bool) -> Path:
    """The default search space, at `path`: as it is (`full`), or without num_train_epochs (every run trains the
    config's one epoch)."""
    from importlib import resources

    space = yaml.safe_load(resources.files("mtl_model").joinpath("templates", "search_space.yaml").read_text())
    if not full:
        del space["num_train_epochs"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def test_scores(results: dict, tasks: list[str]) -> dict:
    """Test macro- and micro-F1 of a run, the mean over its tasks."""
    scores = f1_scores(results, tasks)
    return {average: round(statistics.mean(scores[task][f"test_{average}_f1"] for task in tasks), 4)
            for average in ("macro", "micro")}  # fmt: skip


def bench_command(dataset: str, trials: int, *options) -> str:
    return " ".join(map(str, ["python bench/hpo.py --dataset", dataset, "--trials", trials, *options]))


def load_study(directory: Path):
    """The Optuna study of a search run in `directory` (its default SQLite storage and study name)."""
    import optuna

    return optuna.load_study(study_name="mtl-search", storage=f"sqlite:///{search_directory(directory) / STUDY_FILE}")


def search_facts(directory: Path) -> dict:
    study = load_study(directory)
    rows = optuna_trial_rows(study)
    count, rho = objective_test_correlation(rows)
    finished = [row for row in rows if row.state in FINISHED]
    return {
        "trials": {state: sum(row.state == state for row in rows) for state in sorted({row.state for row in rows})},
        "seconds": round(sum(row.seconds or 0 for row in rows)),
        "best_trial": study.best_trial.number,
        "best_objective": round(study.best_value, 4),
        "best_settings": study.best_params,
        "spearman_objective_vs_test_macro_f1": {"completed_trials": count, "rho": round(rho, 3)},
        "peak_rss_mib": {"after_first_trial": finished[0].peak_rss_mib, "after_last_trial": finished[-1].peak_rss_mib},
        "trials_objective_and_test": [(row.number, row.state, row.objective, row.test_score) for row in rows],
    }


def run_search(directory: Path, config: Path, *options, full_space: bool = False) -> dict:
    """A search alone (no retraining) in `directory`, its facts (`search_facts`). A search saves no results file for
    run_cli to find: it is run again, and its study finds the trials done and runs none."""
    space = search_space(directory.parent / ("full_space.yaml" if full_space else "space.yaml"), full_space)
    command = cli_command(config, *options, *SEARCH, "--hpo_space", space, "--output_dir", directory)
    subprocess.run(command, check=True, cwd=REPO)
    return search_facts(directory)


def compare_with_readme(dataset: str, trials: int, full_space: bool) -> dict:
    """The README's settings and the searched ones, each trained over SEEDS; the search's facts."""
    config, tasks, extra = DATASETS[dataset]
    group, space = f"hpo-{dataset}", "-full-space" if full_space else ""
    readme = {seed: run_cli(run_directory(group, "readme", seed), config, *extra, "--seed", seed) for seed in SEEDS}
    search_dir = run_directory(group, f"search{space}")
    facts = run_search(search_dir, config, *extra, "--hpo_trials", trials, full_space=full_space)
    best_config = search_directory(search_dir) / "best_config.yaml"
    # A study grown by a later, larger --trials may have another best: its runs are its own.
    searched = {seed: run_cli(run_directory(group, f"searched{space}-{trials}trials", seed), best_config, "--seed",
                              seed) for seed in SEEDS}  # fmt: skip
    runs = {"readme": readme, "searched": searched}
    if full_space:  # how much of the gain is the epochs alone: the README's settings at the best trial's epochs
        epochs = facts["best_settings"]["num_train_epochs"]
        runs["readme_at_searched_epochs"] = {
            seed: run_cli(run_directory(group, f"readme-{epochs}epochs", seed), config, *extra, "--num_train_epochs",
                          epochs, "--seed", seed) for seed in SEEDS
        }  # fmt: skip
    by_seed = {name: {seed: test_scores(results[seed], tasks) for seed in SEEDS} for name, results in runs.items()}
    return {
        "test_f1_by_seed": by_seed,
        "test_f1_mean": {
            name: {
                average: round(statistics.mean(scores[seed][average] for seed in SEEDS), 4)
                for average in ("macro", "micro")
            }
            for name, scores in by_seed.items()
        },  # fmt: skip
        "train_runtime_s": {
            name: [round(results[seed]["train_runtime"]) for seed in SEEDS] for name, results in runs.items()
        },  # fmt: skip
        "search": facts,
        "command": bench_command(dataset, trials, *(["--full_space"] if full_space else [])),
    }


def compare_pruners(dataset: str, trials: int, train_rows: int, seed: int) -> dict:
    """One search per pruner, the same seed (so TPE starts from the same settings; the configs' own seed is
    CONFIG_SEED) on the first `train_rows` training rows: what each finds, and in what time."""
    config, _, _ = DATASETS[dataset]
    compared = {}
    for pruner in PRUNERS:
        name = f"pruner-{pruner}-rows{train_rows}"
        directory = run_directory(f"hpo-{dataset}", name, named_seed(seed))
        facts = run_search(directory, config, "--max_train_samples", train_rows, "--hpo_trials", trials,
                           "--hpo_pruner", pruner, "--seed", seed)  # fmt: skip
        best = facts["best_trial"]
        compared[pruner] = {
            **{key: facts[key] for key in ("trials", "seconds", "best_trial", "best_objective")},
            "best_trial_test_macro_f1": next(
                test for number, _, _, test in facts["trials_objective_and_test"] if number == str(best)
            ),  # fmt: skip
            "spearman_objective_vs_test_macro_f1": facts["spearman_objective_vs_test_macro_f1"],
        }
    seed_option = [] if named_seed(seed) is None else ["--seed", seed]
    compared["command"] = bench_command(dataset, trials, "--compare_pruners", "--max_train_samples", train_rows,
                                        *seed_option)  # fmt: skip
    return compared


def named_seed(seed: int) -> int | None:
    """`seed` where it is not the configs' own: the pruner runs of CONFIG_SEED, made before --seed, name none (in
    their directories, command and results key), and so are found again."""
    return None if seed == CONFIG_SEED else seed


def memory_over_trials(dataset: str, trials: int, train_rows: int) -> dict:
    """The worker's peak RSS after each trial of one search whose trials differ only in classifier dropout (the
    same batch size and sequence lengths in every trial): a peak that rises from trial to trial is memory kept."""
    config, _, _ = DATASETS[dataset]
    directory = run_directory(f"hpo-{dataset}", f"memory-rows{train_rows}")
    space = directory.parent / "memory_space.yaml"
    space.write_text(yaml.safe_dump({"classifier_dropout": {"type": "float", "low": 0.0, "high": 0.3}}))
    command = cli_command(config, "--max_train_samples", train_rows, "--hpo_trials", trials, "--hpo_space", space,
                          "--hpo_pruner", "none", "--do_train", "false", "--output_dir", directory)  # fmt: skip
    subprocess.run(command, check=True, cwd=REPO)
    rows = optuna_trial_rows(load_study(directory))
    return {
        "peak_rss_mib_after_each_trial": [row.peak_rss_mib for row in rows],
        "command": bench_command(dataset, trials, "--memory", "--max_train_samples", train_rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=DATASETS, required=True)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--compare_pruners", action="store_true", help="One search per pruner instead.")
    parser.add_argument("--memory", action="store_true", help="Peak RSS over trials of the same settings instead.")
    parser.add_argument("--max_train_samples", type=int, default=4000, help="With --compare_pruners or --memory.")
    parser.add_argument("--seed", type=int, default=CONFIG_SEED, help="With --compare_pruners: TPE's and training's.")
    parser.add_argument(
        "--full_space", action="store_true",
        help="The default search space as it is, num_train_epochs (1-4) included: a trial costs 1-4 README runs.",
    )  # fmt: skip
    args = parser.parse_args()

    if args.compare_pruners:
        key = f"{args.dataset}_pruners" + ("" if named_seed(args.seed) is None else f"_seed{args.seed}")
        result = compare_pruners(args.dataset, args.trials, args.max_train_samples, args.seed)
    elif args.memory:
        key, result = f"{args.dataset}_memory", memory_over_trials(args.dataset, args.trials, args.max_train_samples)
    else:
        key = f"{args.dataset}_{args.trials}trials" + ("_full_space" if args.full_space else "")
        result = compare_with_readme(args.dataset, args.trials, args.full_space)
    # Re-read: another comparison may have written its part meanwhile.
    report = {**(read_json(RESULTS_FILE) if RESULTS_FILE.exists() else {}), key: result}
    print(yaml.safe_dump(write_results(RESULTS_FILE, report)[key], sort_keys=False))


if __name__ == "__main__":
    main()
