"""The label hierarchy file (`--label_hierarchy`): read and checked against the run's label sets before the model
loads."""

import json
from pathlib import Path

from ..decoding import check_label_hierarchy
from ..errors import DataError


def read_label_hierarchy(path: str | None, tasks: dict[str, list[str]]) -> dict[str, list[str]] | None:
    """The JSON object {parent "task/label": [child "task/label", …]} of `path` (None without one), checked by
    the config's own rules (`check_label_hierarchy`); a DataError naming the file and the entry otherwise."""
    if path is None:
        return None
    try:
        hierarchy = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"--label_hierarchy {path}: {error}") from None
    if not isinstance(hierarchy, dict) or not hierarchy:
        raise DataError(f"--label_hierarchy {path}: expected a non-empty JSON object {{parent: [children]}}")
    try:
        check_label_hierarchy(tasks, hierarchy)
    except ValueError as error:
        raise DataError(f"--label_hierarchy {path}: {error}") from None
    return hierarchy
