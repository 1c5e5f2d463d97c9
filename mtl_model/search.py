"""Hyper-parameter search through the Trainer's own `hyperparameter_search`, with Optuna (default) or Ray Tune.

Each trial trains a fresh model (`model_init`, which reads the trial's model options) on the training split and is
scored on the validation split by `--hpo_objective`, reported at every evaluation so that a pruner can stop it
early; the test split is never seen. With Optuna the study lives in a database (`--hpo_storage`, an SQLite file in
the output directory by default), so a search resumes after a kill and any number of processes, on any number of
machines, can work on one study. The engines are `search_optuna` and `search_ray`; the results are written by
`search_report`.
"""

import dataclasses
import logging
import os
import resource
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from .metrics import task_macro_f1_at_tuned_thresholds
from .search_optuna import run_optuna_search
from .search_ray import run_ray_search
from .search_report import TEST_SCORE, SearchResult, write_search_report
from .search_space import TRAINING_FIELDS, SearchSpace

logger = logging.getLogger(__name__)

SEARCH_DIR = "search"
STUDY_FILE = "study.db"


@dataclass(frozen=True)
class TrialSetup:
    """What a trial's settings set beyond the model (which `model_init` builds from them): the TrainingArguments
    fields of the space, and our heads' learning rate. An entry a trial does not sample (its `when` does not hold)
    keeps the run's own value, not the previous trial's."""

    space: SearchSpace
    base_training: dict
    base_head_learning_rate: float | None

    def training_arguments(self, trial) -> dict:
        settings = self.space.settings(trial)
        return {name: settings.get(name, self.base_training[name]) for name in self.base_training}

    def head_learning_rate(self, trial) -> float | None:
        return self.space.settings(trial).get("head_learning_rate", self.base_head_learning_rate)

    @classmethod
    def of(cls, space: SearchSpace, training_args, head_learning_rate: float | None) -> "TrialSetup":
        fields = [name for name in space.names if name in TRAINING_FIELDS]
        return cls(space, {name: getattr(training_args, name) for name in fields}, head_learning_rate)


class RecordTrialFacts(TrainerCallback):
    """Puts among an Optuna trial's user attributes, while it runs, the worker that runs it (host:pid) and, at the
    end of its training, the peak resident memory of that process so far (MiB; memory must not grow from trial to
    trial) and, given `test_scoring`, the trial's test macro-F1 (`test_macro_f1`), for the report alone."""

    def __init__(self, trainer, test_scoring: "TestScoring | None" = None):
        self.trainer = trainer
        self.test_scoring = test_scoring

    def on_train_begin(self, args, state, control, **kwargs):
        if hasattr(self.trainer.current_trial, "set_user_attr"):
            self.trainer.current_trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")

    def on_train_end(self, args, state, control, **kwargs):
        trial = self.trainer.current_trial
        if not hasattr(trial, "set_user_attr"):
            return
        if self.test_scoring is not None:
            trial.set_user_attr(TEST_SCORE, self.test_scoring.score(self.trainer))
        trial.set_user_attr("peak_rss_mib", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


@dataclass(frozen=True)
class TestScoring:
    """A trial's model on the test split as a training run would score it: thresholds tuned on the validation split
    (`min_positives`, `objective`: the run's --min_positives_to_tune and --threshold_objective), then the mean over
    tasks of test macro-F1. Reported beside the objective, never used to choose."""

    validation: object  # datasets.Dataset
    test: object
    min_positives: int
    objective: str

    def score(self, trainer) -> float:
        validation, test = (trainer.predict(rows, metric_key_prefix="trial") for rows in (self.validation, self.test))
        per_task = task_macro_f1_at_tuned_thresholds(
            (validation.predictions, validation.label_ids), (test.predictions, test.label_ids), trainer.model.config,
            self.min_positives, self.objective,
        )  # fmt: skip
        return float(sum(per_task.values()) / len(per_task))


def search_directory(output_dir: str) -> Path:
    return Path(output_dir) / SEARCH_DIR


def direction_of(objective: str) -> str:
    """As TrainingArguments reads `metric_for_best_model`: a loss is minimised, anything else maximised."""
    return "minimize" if objective.endswith("loss") else "maximize"


def trial_arguments(training_args, directory: Path):
    """The run's TrainingArguments for a trial: evaluated (scored), no checkpoints (the best settings are retrained,
    not a trial's weights), no test predictions, nothing pushed, its files under the search directory."""
    return dataclasses.replace(
        training_args,
        output_dir=str(directory / "trials"),
        save_strategy="no",
        load_best_model_at_end=False,
        do_eval=True,
        do_predict=False,
        push_to_hub=False,
        report_to=[],
    )


def storage_url(search_args, output_dir: str) -> str:
    return search_args.hpo_storage or f"sqlite:///{(search_directory(output_dir) / STUDY_FILE).resolve()}"


def run_search(
    search_args,
    training_args,
    space: SearchSpace,
    head_learning_rate: float | None,
    command_line: dict,
    make_trainer: Callable,
    given: dict,
    test_scoring: TestScoring | None = None,
) -> SearchResult:
    """Run the search and write its report; the study's first trial runs the command line's own settings
    (`command_line`: the value of each flag of the space, `search_space.command_line_values`). `make_trainer(args,
    setup)` builds a `MultiTaskTrainer` with a `model_init` that builds the model of a trial's settings, and `setup`
    as its `trial_setup`. `given`: the arguments the user gave, for best_config.yaml
    (`search_report.given_values`); `test_scoring`: each trial scored on the test split too (`--hpo_score_test`,
    Optuna only)."""
    directory = search_directory(training_args.output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    objective = search_args.hpo_objective.removeprefix("eval_")
    setup = TrialSetup.of(space, training_args, head_learning_rate)
    trainer = make_trainer(trial_arguments(training_args, directory), setup)
    search = dict(
        hp_space=setup.training_arguments if search_args.hpo_backend == "optuna" else None,
        compute_objective=lambda metrics: metrics[f"eval_{objective}"],
        direction=direction_of(objective),
    )
    first_trial = space.command_line_trial(command_line)
    if search_args.hpo_backend == "ray":
        (result, rows), study = run_ray_search(trainer, search_args, space, first_trial, directory, search), None
    else:
        url = storage_url(search_args, training_args.output_dir)
        trainer.add_callback(RecordTrialFacts(trainer, test_scoring))
        result, rows, study = run_optuna_search(trainer, search_args, url, search, first_trial)
    write_search_report(directory, rows, result, given, study)
    logger.info("Search done: %s", result.description)
    return result
