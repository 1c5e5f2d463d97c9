"""The two errors that stop a run before training with one clear message and exit status 2 (see the script's `cli`),
and how their messages list labels."""

import difflib

# Labels listed in full in an error message; a longer label set is summarised (`describe_labels`).
MESSAGE_LABELS = 10


class ArgumentError(ValueError):
    """Flags that contradict each other or a config file that does not fit; the message names the flag or key."""


class DataError(ValueError):
    """Input data that cannot be trained on; the message names the file, row, column or label."""


def describe_labels(labels: list[str], near: str | None = None, shown: int = MESSAGE_LABELS) -> str:
    """A label set for a message, readable at thousands of labels: all of a short one; else the count, the first
    few, and the closest matches to `near` (the label looked for)."""
    if len(labels) <= shown:
        return str(labels)
    text = f"{len(labels):,} labels, the first {shown}: {labels[:shown]}"
    close = difflib.get_close_matches(near, labels, n=3) if near is not None else []
    return text + (f"; closest to {near!r}: {close}" if close else "")
