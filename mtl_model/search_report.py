"""What a search leaves in output_dir/search/: trials.csv (every trial), best_config.yaml (the best settings as a
config file for a training run) and report.md (the best trials, and Optuna's plots as PNG)."""

import csv
import dataclasses
import enum
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)

FINISHED = ("COMPLETE", "PRUNED")
# A trial's test macro-F1 at thresholds tuned on validation (`--hpo_score_test`): reported, never used to choose.
TEST_SCORE = "test_macro_f1"

PLOTS = ("optimization_history", "param_importances", "slice")
BEST_SHOWN = 10
# Ray Tune's trial states in Optuna's names; a Ray trial that ASHA stopped early is pruned (see `ray_trial_rows`).
RAY_STATES = {"TERMINATED": "COMPLETE", "ERROR": "FAIL", "RUNNING": "RUNNING", "PENDING": "WAITING"}


@dataclass(frozen=True)
class SearchResult:
    settings: dict  # the best trial's settings, flag → value
    trial: str  # its number (Optuna) or id (Ray)
    objective: float
    description: str  # one line for the log and the model card


@dataclass(frozen=True)
class TrialRow:
    number: str
    state: str  # Optuna's names: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    params: dict
    objective: float | None
    seconds: float | None
    peak_rss_mib: int | None
    worker: str | None
    test_score: float | None = None


def optuna_trial_rows(study) -> list[TrialRow]:
    return [
        TrialRow(
            str(trial.number),
            trial.state.name,
            trial.params,
            trial.value,
            None if trial.duration is None else round(trial.duration.total_seconds(), 1),
            trial.user_attrs.get("peak_rss_mib"),
            trial.user_attrs.get("worker"),
            trial.user_attrs.get(TEST_SCORE),
        )  # fmt: skip
        for trial in study.get_trials(deepcopy=False)
    ]


def ray_trial_rows(analysis, space) -> list[TrialRow]:
    rows = []
    for trial in analysis.trials:
        result = trial.last_result or {}
        state = RAY_STATES.get(trial.status, trial.status)
        if state == "COMPLETE" and not result.get("done"):
            state = "PRUNED"  # stopped by the scheduler before its training ended
        worker = f"{result['hostname']}:{result['pid']}" if "hostname" in result else None  # as Optuna's trials
        rows.append(TrialRow(trial.trial_id, state, space.settings(trial.config), result.get("objective"),
                             result.get("time_total_s"), None, worker))  # fmt: skip
    return rows


def write_trials_csv(path: Path, rows: list[TrialRow]) -> None:
    """One row per trial: number, state, objective, seconds, peak_rss_mib, worker, test_macro_f1 (empty unless
    `--hpo_score_test`), then each parameter any trial set."""
    names = sorted({name for row in rows for name in row.params})
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "state", "objective", "seconds", "peak_rss_mib", "worker", TEST_SCORE, *names])
        for row in rows:
            writer.writerow([row.number, row.state, row.objective, row.seconds, row.peak_rss_mib, row.worker,
                             row.test_score, *(row.params.get(name, "") for name in names)])  # fmt: skip


def given_values(given: set[str], *arguments) -> dict:
    """The values of the arguments the user gave (a flag or a config-file key), as a config file writes them."""
    values = {}
    for group in arguments:
        for argument in dataclasses.fields(group):
            if argument.name in given and argument.init:
                value = getattr(group, argument.name)
                values[argument.name] = value.value if isinstance(value, enum.Enum) else value
    return values


def best_config(given: dict, result: SearchResult) -> dict:
    """The run's own arguments with the best trial's settings over them: a training run, not another search."""
    config = {name: value for name, value in given.items() if not name.startswith("hpo_")}
    return {**config, **result.settings, "do_train": True}


def write_search_report(directory: Path, rows: list[TrialRow], result: SearchResult, given: dict, study=None) -> None:
    """trials.csv, best_config.yaml and report.md (with Optuna's plots, given its study) in `directory`."""
    write_trials_csv(directory / "trials.csv", rows)
    header = f"# Best settings of the search\n# {result.description}\n"
    config = yaml.safe_dump(best_config(given, result), sort_keys=False)
    (directory / "best_config.yaml").write_text(header + config, encoding="utf-8")
    plots = draw_plots(study, directory) if study is not None else {}
    (directory / "report.md").write_text(report_text(rows, result, plots), encoding="utf-8")
    logger.info("Search results in %s: trials.csv, best_config.yaml, report.md", directory)


def report_text(rows: list[TrialRow], result: SearchResult, plots: dict[str, str]) -> str:
    finished = sorted((row for row in rows if row.state in FINISHED and row.objective is not None),
                      key=lambda row: row.objective, reverse=True)  # fmt: skip
    states = {state: sum(row.state == state for row in rows) for state in sorted({row.state for row in rows})}
    names = sorted({name for row in finished[:BEST_SHOWN] for name in row.params})
    scored = any(row.test_score is not None for row in finished)
    lines = [
        "# Hyper-parameter search", "", result.description + ".", "",
        "Trials: " + ", ".join(f"{count} {state}" for state, count in states.items()) + ". Every trial trained on "
        "the training split and was scored on the validation split; the test split was not used to choose. "
        "`best_config.yaml` trains the best settings: `python run_mtl_classification.py best_config.yaml`.", "",
        *([test_ranking(finished), ""] if scored else []),
        f"## The best {min(BEST_SHOWN, len(finished))} trials", "",
        "| trial | state | objective | " + ("test macro-F1 | " if scored else "") + "seconds | "
        + " | ".join(names) + " |",
        "|" + "---|" * (4 + scored + len(names)),
    ]  # fmt: skip
    for row in finished[:BEST_SHOWN]:
        cells = [row.number, row.state, f"{row.objective:.4f}"]
        cells += [format_value(row.test_score)] if scored else []
        cells += [f"{row.seconds or 0:.0f}"] + [format_value(row.params.get(name, "")) for name in names]
        lines.append("| " + " | ".join(cells) + " |")
    for name, outcome in plots.items():
        lines += ["", f"## {name.replace('_', ' ').capitalize()}", ""]
        lines.append(f"![{name}](plots/{name}.png)" if outcome == "drawn" else f"Not drawn: {outcome}.")
    return "\n".join(lines) + "\n"


def test_ranking(finished: list[TrialRow]) -> str:
    count, rho = objective_test_correlation(finished)
    return (f"Test split (`--hpo_score_test`, never used to choose): Spearman's rank correlation of the objective "
            f"with test macro-F1 over the {count} completed trials: {rho:.3f}.")  # fmt: skip


def objective_test_correlation(rows: list[TrialRow]) -> tuple[int, float]:
    """How well the objective ranks the completed trials by their test macro-F1: their count and Spearman's rank
    correlation (scipy's; NaN under 3 trials). Pruned trials are left out: their objective is of an earlier
    evaluation than their test score."""
    from scipy.stats import spearmanr

    pairs = [(row.objective, row.test_score) for row in rows if row.state == "COMPLETE" and row.test_score is not None]
    return len(pairs), (float(spearmanr(*zip(*pairs)).statistic) if len(pairs) > 2 else float("nan"))


def format_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def draw_plots(study, directory: Path) -> dict[str, str]:
    """Optuna's optimisation history, parameter importances and slice plot as PNG (its matplotlib backend), each
    "drawn" or why not (the importances need two finished trials with different settings, for instance)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    (directory / "plots").mkdir(exist_ok=True)
    outcomes = {}
    for name in PLOTS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                axes = getattr(optuna_plots, f"plot_{name}")(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            outcomes[name] = str(error) or type(error).__name__
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.set_size_inches(max(figure.get_size_inches()[0], 8), 5)
        figure.savefig(directory / "plots" / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        outcomes[name] = "drawn"
    return outcomes
