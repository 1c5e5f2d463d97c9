"""One task cell → its labels: a label column's list, delimited string or JSON-list string, or a wide 0/1 cell.

What a cell means:
- a list (possibly empty) or a non-empty string: the example is annotated for the task; `[]` / "[]" means "none of
  this task's labels" (all negative);
- null, a missing key, NaN or an empty string (an empty CSV cell): the task is not annotated for this example."""

import json
import logging
import math

logger = logging.getLogger(__name__)


def parse_label_cell(value, delimiter: str = ","):
    """One task cell → None (not annotated) or a list of label names (str) / ids (int).

    Raises ValueError with a short reason; the caller adds file, row and column.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected labels, found the boolean {value}")
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [_label_item(item) for item in value]
    if not isinstance(value, str):
        raise ValueError(f"expected a list or a string of labels, found {type(value).__name__} {value!r}")
    text = value.strip()
    if not text:
        return None
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{text!r} starts with '[' but is not a JSON list ({error.msg})") from None
        if not isinstance(items, list):
            raise ValueError(f"{text!r} is not a JSON list")
        return [_label_item(item) for item in items]
    pieces = [piece.strip() for piece in text.split(delimiter)]
    if "" in pieces:
        raise ValueError(f"{text!r} has an empty label between {delimiter!r} delimiters")
    return pieces


def _label_item(item):
    if isinstance(item, bool) or not isinstance(item, (int, str)):
        raise ValueError(f"a label must be a name or an integer id, found {item!r}")
    if isinstance(item, str) and not item.strip():
        raise ValueError("a label name is empty")
    return item.strip() if isinstance(item, str) else item


def parse_wide_cell(value):
    """One wide 0/1 cell → 0, 1 or None (empty / null / NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            return None
        if text in ("0", "1", "0.0", "1.0", "true", "false"):
            return int(text in ("1", "1.0", "true"))
        raise ValueError(f"expected 0 or 1, found {value!r}")
    if isinstance(value, (bool, int, float)) and value in (0, 1):
        return int(value)
    raise ValueError(f"expected 0 or 1, found {value!r}")
