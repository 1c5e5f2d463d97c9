"""The search space of a hyper-parameter search: read from a YAML or JSON file and checked entry by entry before any
trial runs, then sampled per trial (Optuna's define-by-run `suggest_*`, or Ray Tune's domains).

Each entry is named for the flag it sets, so that a trial's settings read as a command line and the best ones make
a config file the script takes as it is (`search_report.best_config`).
"""

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from .arguments import CHUNK_FLAGS, OPTION_FLAGS, MultiTaskTrainingArguments, check_option_flag, read_flag
from .configuration_mtl import TRAINING
from .errors import ArgumentError
from .parsing import NUMERIC_RANGES

DEFAULT_SPACE = "search_space.yaml"
KINDS = ("float", "int", "categorical")
ENTRY_KEYS = {"type", "low", "high", "log", "step", "choices", "when"}
# The entries a trial does not sample but keeps at the command line's value (the command line's own trial,
# `SearchSpace.command_line_trial`): an Optuna trial's user attribute, a Ray trial's config entry.
KEEPS_COMMAND_LINE = "keeps_command_line"

# What a trial may set: the TrainingArguments fields (the Trainer sets them on its args), the model options of
# training (they reach the model through model_init), and three flags of ours that shape training. Not the
# decoding options: they change no weight, and the thresholds are tuned on every trial's own predictions anyway.
TRAINING_FIELDS = frozenset(
    argument.name for argument in dataclasses.fields(MultiTaskTrainingArguments) if argument.init
)
# Not long_documents: it decides how the texts are tokenized, which is done once, before the trials.
READING_FLAG = "long_documents"
MODEL_FLAGS = frozenset(
    flag
    for flag, declared in OPTION_FLAGS.items()
    if declared.metadata["applies"] == TRAINING and flag != READING_FLAG
)
TRAINER_FLAGS = frozenset({"head_learning_rate", "pos_weight_cap", "attention_dropout"})
SEARCHABLE = TRAINING_FIELDS | MODEL_FLAGS | TRAINER_FLAGS
# Fields of TrainingArguments that say what the run does or where it writes, not how it trains.
NOT_SEARCHED = {"output_dir", "do_train", "do_eval", "do_predict", "push_to_hub", "hub_model_id",
                "resume_from_checkpoint", "overwrite_output_dir"}  # fmt: skip


@dataclass(frozen=True)
class SearchEntry:
    """One flag's range of values: float or int from low to high (log scale with `log`), or categorical `choices`;
    sampled only where the earlier categorical entries named in `when` take one of the values listed."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    when: dict[str, tuple] = field(default_factory=dict)

    def applies(self, settings: dict) -> bool:
        return all(settings.get(name) in values for name, values in self.when.items())

    def samples(self, value) -> bool:
        """Whether `value` is one this entry could sample: a choice listed, or a number in range (on its grid)."""
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float) or not self.low <= value <= self.high:
            return False
        if self.kind == "int" and value != int(value):
            return False
        step = self.step or (1 if self.kind == "int" else None)
        return step is None or abs((value - self.low) / step - round((value - self.low) / step)) < 1e-9

    def suggest(self, trial):
        """The value an Optuna trial suggests (the same one again if asked twice: Optuna keeps it by name)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def ray_domain(self):
        """The same range as a Ray Tune domain (Ray samples every entry; `settings` keeps the ones that apply)."""
        from ray import tune

        if self.kind == "categorical":
            return tune.choice(list(self.choices))
        if self.kind == "int":
            upper = int(self.high) + 1  # Ray's integer ranges exclude their upper bound
            if self.log:
                return tune.lograndint(int(self.low), upper)
            return tune.qrandint(int(self.low), int(self.high), int(self.step or 1))
        if self.log:  # a float entry has log or step, not both (`check_range`)
            return tune.loguniform(self.low, self.high)
        return tune.quniform(self.low, self.high, self.step) if self.step else tune.uniform(self.low, self.high)


@dataclass(frozen=True)
class SearchSpace:
    entries: tuple[SearchEntry, ...]
    source: str

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def settings(self, trial) -> dict:
        """A trial's settings, flag → value: of an Optuna trial, suggested in file order; of a Ray trial (the dict
        of every entry's sample), the entries that apply. An entry the trial keeps at the command line's value
        (`kept_entries`) is left out, as one that does not apply."""
        settings = {}
        kept = kept_entries(trial)
        for entry in self.entries:
            if entry.applies(settings) and entry.name not in kept:
                settings[entry.name] = trial[entry.name] if isinstance(trial, dict) else entry.suggest(trial)
        return settings

    def command_line_trial(self, values: dict) -> dict:
        """The command line's own settings as a trial of this space, the study's first, so that a search never ends
        below where it started: each entry that applies (in file order) takes the command line's value in `values`
        (flag → value), or None, kept unsampled at that value, where the entry could not sample it: None itself
        (off, or the encoder's own), one number per task that differ, a number out of range, a choice not listed.
        """
        trial = {}
        for entry in self.entries:
            if entry.applies(trial):
                value = values[entry.name]
                trial[entry.name] = value if entry.samples(value) else None
        return trial

    def ray_space(self) -> dict:
        """Every entry's Ray Tune domain, and KEEPS_COMMAND_LINE: none kept (the command line's trial sets it)."""
        return {**{entry.name: entry.ray_domain() for entry in self.entries}, KEEPS_COMMAND_LINE: ""}

    @staticmethod
    def ray_point(trial: dict) -> dict:
        """A trial of `command_line_trial` as a point for Ray Tune to evaluate: its values, and the names of its
        None entries under KEEPS_COMMAND_LINE (Ray takes no None for a number's domain; the kept entries' samples
        are left out of the trial's settings)."""
        fixed, kept = fixed_and_kept(trial)
        return {**fixed, KEEPS_COMMAND_LINE: ",".join(kept)}


def fixed_and_kept(trial: dict) -> tuple[dict, list[str]]:
    """A trial of `command_line_trial` → its values to fix, and the names of the entries it keeps (its None ones)."""
    fixed = {name: value for name, value in trial.items() if value is not None}
    return fixed, [name for name in trial if name not in fixed]


def kept_entries(trial) -> set[str]:
    """The entries a trial keeps at the command line's value: an Optuna trial's user attribute (a list), a Ray
    trial's config entry (names joined by commas)."""
    if isinstance(trial, dict):
        return set(filter(None, trial.get(KEEPS_COMMAND_LINE, "").split(",")))
    return set(trial.user_attrs.get(KEEPS_COMMAND_LINE, ()))


def read_search_space(path: str | None, tasks: dict[str, list[str]], chunked: bool) -> SearchSpace:
    """The search space of `path` (YAML or JSON), or the default one; every entry checked (`check_entry`) for a
    model of these tasks, read in chunks or not (`chunked`)."""
    if path is None:
        text = resources.files("mtl_model").joinpath("templates", DEFAULT_SPACE).read_text(encoding="utf-8")
        source = f"the default search space ({DEFAULT_SPACE})"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ArgumentError(f"--hpo_space {path}: {error}") from None
        source = f"--hpo_space {path}"
    try:
        raw = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ArgumentError(f"{source}: cannot read it: {error}") from None
    if not isinstance(raw, dict) or not raw:
        raise ArgumentError(f"{source}: expected a mapping of flag names to ranges")
    entries: list[SearchEntry] = []
    for name, spec in raw.items():
        check_searchable(f"{source}: {name}", str(name), chunked)
        entries.append(check_entry(f"{source}: {name}", str(name), spec, entries, tasks))
    return SearchSpace(tuple(entries), source)


def check_searchable(where: str, name: str, chunked: bool) -> None:
    """A flag a trial can set, and one that changes something in this run; else an error naming the entry."""
    if name == READING_FLAG:
        raise ArgumentError(f"{where}: not searched: it decides how the texts are tokenized, once for all trials; "
                            f"give --{READING_FLAG} on the command line")  # fmt: skip
    if name in NOT_SEARCHED or name not in SEARCHABLE:
        raise ArgumentError(f"{where}: not a flag a trial can set; searchable are the training arguments, the "
                            f"model options of training ({', '.join(sorted(MODEL_FLAGS))}) and "
                            f"{', '.join(sorted(TRAINER_FLAGS))}")  # fmt: skip
    if name in CHUNK_FLAGS and not chunked:
        raise ArgumentError(f"{where}: the run truncates texts, so no trial would read a chunk; search it with "
                            f"--{READING_FLAG} chunk, or leave it out")  # fmt: skip


def check_entry(where: str, name: str, spec, earlier: list[SearchEntry], tasks: dict[str, list[str]]) -> SearchEntry:
    """One entry of the file as a `SearchEntry`, or an error naming it: an unknown key, a range that cannot be
    sampled (low above high, a log range through 0, no choices), or a value the flag itself refuses."""
    if not isinstance(spec, dict):
        raise ArgumentError(f"{where}: expected a mapping such as {{type: float, low: 1e-5, high: 1e-4, log: true}}")
    unknown = sorted(set(spec) - ENTRY_KEYS)
    if unknown:
        raise ArgumentError(f"{where}: unknown keys {unknown}; an entry takes {sorted(ENTRY_KEYS)}")
    kind = spec.get("type")
    if kind not in KINDS:
        raise ArgumentError(f"{where}: type must be one of {list(KINDS)}, not {kind!r}")
    when = check_when(where, spec.get("when"), earlier)
    entry = SearchEntry(name, kind, log=bool(spec.get("log", False)), when=when)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ArgumentError(f"{where}: a categorical entry needs a non-empty list of choices")
        entry = dataclasses.replace(entry, choices=tuple(choices))
        values = choices
    else:
        entry = dataclasses.replace(entry, **check_range(where, kind, spec))
        values = [entry.low, entry.high]
    for value in values:
        check_value(where, name, value, tasks)
    return entry


def check_range(where: str, kind: str, spec: dict) -> dict:
    missing = [key for key in ("low", "high") if key not in spec]
    if missing:
        raise ArgumentError(f"{where}: a {kind} entry needs low and high (missing {', '.join(missing)})")
    numbers = {key: spec[key] for key in ("low", "high", "step") if spec.get(key) is not None}
    for key, number in numbers.items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise ArgumentError(f"{where}: {key} must be a number, not {number!r}")
        if kind == "int" and number != int(number):
            raise ArgumentError(f"{where}: {key} of an int entry must be a whole number, not {number}")
    low, high = float(numbers["low"]), float(numbers["high"])
    if low > high:
        raise ArgumentError(f"{where}: low ({low:g}) is above high ({high:g}): nothing to sample")
    if spec.get("log") and low <= 0:
        raise ArgumentError(f"{where}: a log range must lie above 0, not from {low:g}")
    if "step" in numbers and numbers["step"] <= 0:
        raise ArgumentError(f"{where}: step must be above 0, not {numbers['step']}")
    if "step" in numbers and spec.get("log") and kind == "float":
        raise ArgumentError(f"{where}: a float entry takes log or step, not both (Optuna samples neither so)")
    return {"low": low, "high": high, "step": numbers.get("step")}


def check_when(where: str, when, earlier: list[SearchEntry]) -> dict[str, tuple]:
    """`when` names earlier categorical entries, each with values among its choices (a single value or a list)."""
    if when is None:
        return {}
    if not isinstance(when, dict) or not when:
        raise ArgumentError(f"{where}: when must map earlier categorical entries to their values")
    categorical = {entry.name: entry for entry in earlier if entry.kind == "categorical"}
    conditions = {}
    for name, values in when.items():
        if name not in categorical:
            raise ArgumentError(f"{where}: when names {name!r}, which is not an earlier categorical entry")
        values = tuple(values) if isinstance(values, list) else (values,)
        outside = [value for value in values if value not in categorical[name].choices]
        if outside:
            raise ArgumentError(f"{where}: when {name} is {outside}, which are not among its choices")
        conditions[name] = values
    return conditions


def check_value(where: str, name: str, value, tasks: dict[str, list[str]]) -> None:
    """An end of a range, or a choice, checked as the flag itself checks it."""
    if name in OPTION_FLAGS:
        declared, flag_format = OPTION_FLAGS[name], OPTION_FLAGS[name].metadata["flag_format"]
        try:
            check_option_flag(name, declared, read_flag(name, flag_format, as_flag(value, flag_format), tasks))
        except ArgumentError as error:
            raise ArgumentError(f"{where}: {error}") from None
    elif name in NUMERIC_RANGES and not isinstance(value, bool) and isinstance(value, int | float):
        allowed, description = NUMERIC_RANGES[name]
        if not allowed(value):
            raise ArgumentError(f"{where}: --{name} must be {description}, not {value}")


def command_line_values(space: SearchSpace, model_args, training_args, tasks: dict[str, list[str]]) -> dict:
    """The command line's value of each flag of the space, as an entry samples it: a per-task model option ('0.2',
    'a=0.2,b=0.2') as its one number when every task has it, else the mapping (a task not named has none)."""
    values = {}
    for name in space.names:
        value = getattr(training_args if name in TRAINING_FIELDS else model_args, name)
        flag_format = OPTION_FLAGS[name].metadata["flag_format"] if name in OPTION_FLAGS else None
        if flag_format == "per_task_numbers" and value is not None:
            per_task = read_flag(name, flag_format, value, tasks)
            same_for_all = per_task.keys() == tasks.keys() and len(set(per_task.values())) == 1
            value = next(iter(per_task.values())) if same_for_all else per_task
        values[name] = value
    return values


def as_flag(value, flag_format: str | None):
    """A sampled value as the command line gives it: a number for a per-task option as its string ('0.2' means
    0.2 for every task), any other value as it is."""
    return str(value) if flag_format and isinstance(value, int | float) and not isinstance(value, bool) else value


def with_settings(settings: dict, model_args, training_args=None) -> tuple:
    """model_args and training_args (when given) with a trial's settings, flag → value, over them; a per-task
    model option's number written as its flag takes it ('0.2': every task)."""
    model = {name: as_flag(value, OPTION_FLAGS[name].metadata["flag_format"]) if name in OPTION_FLAGS else value
             for name, value in settings.items() if name in MODEL_FLAGS | TRAINER_FLAGS}  # fmt: skip
    training = {name: value for name, value in settings.items() if name in TRAINING_FIELDS}
    model_args = dataclasses.replace(model_args, **model) if model else model_args
    if training_args is not None and training:
        training_args = dataclasses.replace(training_args, **training)
    return model_args, training_args
