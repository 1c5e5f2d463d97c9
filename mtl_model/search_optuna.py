"""The search's Optuna engine: a study in a database (SQLite, PostgreSQL, MySQL …) that any number of workers, on any
number of machines, share. Trials are queued up front, so workers together finish exactly the N asked for; a trial
whose worker dies is failed by its missing heartbeat and queued again; a rerun after a kill runs only what is missing.
"""

import fcntl
import logging
import time
import warnings
from contextlib import contextmanager

from .errors import ArgumentError
from .search_report import FINISHED, SearchResult, optuna_trial_rows
from .search_space import KEEPS_COMMAND_LINE, fixed_and_kept

logger = logging.getLogger(__name__)

# A worker beats every HEARTBEAT_SECONDS while it runs a trial; a trial without a beat for GRACE_SECONDS (its
# process was killed, its machine lost) is marked failed and queued again with the same settings, at most
# MAX_RETRIES times.
HEARTBEAT_SECONDS = 5
GRACE_SECONDS = 20
MAX_RETRIES = 2


def queued_trials_only_storage(url: str):
    """Optuna's RDB storage (SQLite, PostgreSQL, MySQL …) where a trial is created only into the queue (WAITING,
    from a template: `enqueue_trial`, and the retry of a failed trial), never on the spot for the sampler.

    `study.optimize` then runs queued trials only, and processes take a queued trial atomically (a row update that
    only one of them wins), so workers sharing a study together finish exactly the N trials queued. Optuna's own
    `MaxTrialsCallback` counts after the fact, and concurrent workers overshoot it. The hook is the storage's
    `_create_new_trial`, the one method every creation goes through (the cached storage wrapping it calls it).
    """
    import optuna

    class QueuedTrialsOnly(optuna.storages.RDBStorage):
        def _create_new_trial(self, study_id, template_trial=None):
            if template_trial is None:
                raise StudyQueueEmpty
            return super()._create_new_trial(study_id, template_trial)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since Optuna 2.9
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
        return QueuedTrialsOnly(
            url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS, heartbeat_stale_trial_callback=retry
        )


class StudyQueueEmpty(Exception):
    """Every trial of the study is taken: nothing for this worker to start."""


def run_optuna_search(trainer, search_args, url: str, search: dict, first_trial: dict) -> tuple:
    """The search through Optuna, `first_trial` (`SearchSpace.command_line_trial`) first in a new study: the
    result, the trials' rows and the study."""
    import optuna

    name, wanted = search_args.hpo_study_name, search_args.hpo_trials
    # Workers starting at once would race to create Optuna's tables, the study and its queue: one at a time.
    with study_lock(url, name):
        storage = queued_trials_only_storage(url)
        study = optuna.create_study(storage=storage, study_name=name, direction=search["direction"],
                                    load_if_exists=True)  # fmt: skip
        check_study_objective(study, search_args.hpo_objective)
        top_up_queue(study, wanted, first_trial)
        worker = join_study(study)
    # Each worker its own seed: workers of one seed would sample the same settings side by side.
    sampler = optuna.samplers.TPESampler(seed=trainer.args.seed + worker)
    options = dict(storage=storage, study_name=name, load_if_exists=True, sampler=sampler,
                   pruner=build_pruner(search_args.hpo_pruner))  # fmt: skip
    while True:
        fail_stale_trials(study)
        counts = state_counts(study)
        # N finished is the end, even with trials still queued (by an earlier run of a larger N): they wait for one.
        if sum(counts.get(state, 0) for state in FINISHED) >= wanted:
            break
        if counts.get("WAITING"):
            started = time.time()
            try:
                trainer.hyperparameter_search(backend="optuna", n_trials=1, **search, **options)
            except StudyQueueEmpty:  # another worker took the last queued trial first
                continue
            log_progress(study, trainer.current_trial.number, wanted, time.time() - started)
        elif counts.get("RUNNING"):  # another worker's, or a killed one's that is not stale yet
            time.sleep(HEARTBEAT_SECONDS)
        else:
            raise ArgumentError(f"study {name!r}: trials failed beyond {MAX_RETRIES} retries; see the log and "
                                f"{url}")  # fmt: skip
    best = study.best_trial
    result = SearchResult(
        best.params, str(best.number), best.value,
        f"Optuna study {name!r}, {wanted} trials, best: trial {best.number} ({search_args.hpo_objective} "
        f"{best.value:.4f} on the validation split)",
    )  # fmt: skip
    return result, optuna_trial_rows(study), study


def fail_stale_trials(study) -> None:
    """Optuna's own: a trial without a heartbeat for the grace period (its worker was killed) is failed and queued
    again. `study.optimize` does it before each trial too, but a worker whose queue is empty must do it itself."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def check_study_objective(study, objective: str) -> None:
    """One study, one objective: the first worker records it; another objective on the same study is an error."""
    recorded = study.user_attrs.get("objective")
    if recorded is None:
        study.set_user_attr("objective", objective)
    elif recorded != objective:
        raise ArgumentError(f"--hpo_objective {objective}: study {study.study_name!r} scores trials by {recorded}; "
                            "give that objective, or another --hpo_study_name")  # fmt: skip


def join_study(study) -> int:
    """How many workers joined the study before this one (0 for the first), counted in the study itself. Called
    under `study_lock`."""
    joined = study.user_attrs.get("workers_joined", 0)
    study.set_user_attr("workers_joined", joined + 1)
    return joined


def top_up_queue(study, wanted: int, first_trial: dict) -> None:
    """Queue trials until the study holds `wanted` trials that are finished, running or queued (a failed one is
    replaced), a new study's first being `first_trial`: its values fixed, its None entries kept at the command
    line's (a user attribute: Optuna fixes no None). Called under `study_lock`: two workers starting at once must
    not both top it up."""
    counts = state_counts(study)
    if not counts and wanted:
        fixed, kept = fixed_and_kept(first_trial)
        study.enqueue_trial(fixed, user_attrs={KEEPS_COMMAND_LINE: kept})
        counts["WAITING"] = 1
    for _ in range(wanted - sum(counts.get(state, 0) for state in (*FINISHED, "RUNNING", "WAITING"))):
        study.enqueue_trial({})  # no fixed parameter: the sampler suggests them all when the trial starts


@contextmanager
def study_lock(url: str, study_name: str):
    """Hold a lock on the study across processes: a file lock beside an SQLite database (one machine), the
    database's own advisory lock for PostgreSQL and MySQL (any machine), on a connection of its own."""
    if url.startswith("sqlite"):
        with open(f"{url.split(':///', 1)[1]}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(hashtext(:name))"), {"name": study_name})
            yield
            connection.execute(text("SELECT pg_advisory_unlock(hashtext(:name))"), {"name": study_name})
        elif connection.dialect.name == "mysql":
            connection.execute(text("SELECT GET_LOCK(:name, -1)"), {"name": study_name})
            yield
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": study_name})
        else:
            raise ArgumentError(f"--hpo_storage {url}: use SQLite, PostgreSQL or MySQL for a study")
    engine.dispose()


def state_counts(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def build_pruner(name: str):
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    # No pruning before 3 trials have finished, nor in a trial's first evaluation: too little to compare with.
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


def log_progress(study, number: int, wanted: int, seconds: float) -> None:
    """One line per trial this worker ran (trial `number`): its state, objective and time, and the best so far."""
    trials = study.get_trials(deepcopy=False)
    finished = [trial for trial in trials if trial.state.name in FINISHED]
    mine = trials[number]
    value = "" if mine.value is None else f" {mine.value:.4f}"
    best = study.best_trial if any(trial.state.name == "COMPLETE" for trial in trials) else None
    logger.info("Search: trial %d %s%s in %.0f s, peak RSS %s MiB; %d/%d finished; best: trial %s%s", mine.number,
                mine.state.name, value, seconds, mine.user_attrs.get("peak_rss_mib", "?"), len(finished), wanted,
                "-" if best is None else best.number, "" if best is None else f" {best.value:.4f}")  # fmt: skip
