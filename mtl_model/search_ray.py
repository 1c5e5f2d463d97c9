"""The search's Ray Tune engine: the Trainer's Ray Tune integration, ASHA scheduling the trials, on a local Ray runtime
or a cluster started with `ray start`."""

import logging
import os
from pathlib import Path

from .errors import ArgumentError
from .search_report import SearchResult, ray_trial_rows
from .search_space import KEEPS_COMMAND_LINE, SearchSpace


def run_ray_search(
    trainer, search_args, space: SearchSpace, first_trial: dict, directory: Path, search: dict
) -> tuple:
    """Through the Trainer's Ray Tune integration, ASHA scheduling the trials, `first_trial` the first (its None
    entries kept at the command line's value, `SearchSpace.settings`); Ray resumes an interrupted search of the same
    name in the same directory. Across machines: `ray start` as Ray documents, then this command with RAY_ADDRESS
    set."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    if trainer.args.eval_strategy == "no":
        raise ArgumentError("--hpo_backend ray schedules trials by their evaluations: give --eval_strategy steps "
                            "or epoch")  # fmt: skip
    mode = search["direction"][:3]
    # Ray warns that a point's value differs from a constant of the space: KEEPS_COMMAND_LINE does so by design.
    logging.getLogger("ray.tune.search.variant_generator").addFilter(
        lambda record: KEEPS_COMMAND_LINE not in record.getMessage()
    )
    # Ray Tune runs each trial in a directory of its own; paths given relative to this one must still hold there.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    datasets_by_value(trainer)
    storage = directory.resolve() / "ray"
    best = trainer.hyperparameter_search(
        backend="ray",
        hp_space=lambda _: space.ray_space(),
        compute_objective=search["compute_objective"],
        direction=search["direction"],
        n_trials=search_args.hpo_trials,
        scheduler=ASHAScheduler(metric="objective", mode=mode),
        search_alg=BasicVariantGenerator(points_to_evaluate=[space.ray_point(first_trial)]),
        storage_path=str(storage),
        name=search_args.hpo_study_name,
        resume="AUTO" if any((storage / search_args.hpo_study_name).glob("experiment_state-*.json")) else False,
        progress_reporter=tune.CLIReporter(metric_columns=["objective"], max_report_frequency=60),
    )
    result = SearchResult(
        space.settings(best.hyperparameters), best.run_id, best.objective,
        f"Ray Tune search {search_args.hpo_study_name!r} (ASHA), {search_args.hpo_trials} trials, best: trial "
        f"{best.run_id} ({search_args.hpo_objective} {best.objective:.4f} on the validation split)",
    )  # fmt: skip
    return result, ray_trial_rows(best.run_summary, space)


def datasets_by_value(trainer) -> None:
    """Puts the trainer's datasets in memory. Ray sends the trainer, pickled, to each trial's node; a dataset read
    from Arrow cache files pickles as those files' paths, which another machine lacks, while one in memory pickles
    its rows."""
    trainer.train_dataset, trainer.eval_dataset = (
        dataset.flatten_indices(keep_in_memory=True) for dataset in (trainer.train_dataset, trainer.eval_dataset)
    )
