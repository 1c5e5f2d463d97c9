"""Loading, validation and label encoding of multi-task, multi-label data.

Every task is read from the raw rows in one of three forms:
- a label column (`--task_columns`): a list of label names or ids, a delimited string ("joy,love"), a JSON list
  written as a string ('["joy", "love"]'), or a Hub `ClassLabel` / `Sequence(ClassLabel)` feature;
- wide 0/1 columns (`--wide_tasks`): one column per label, named "<task>/<label>".

What a cell means, for every form:
- a list (possibly empty) or a non-empty string: the example is annotated for the task; `[]` / "[]" means "none of
  this task's labels" (all negative);
- null, a missing key, NaN or an empty string (an empty CSV cell): the task is not annotated for this example; its
  label entries are -100 and are left out of the loss and the metrics.

Bad input raises `DataError` naming the file, row, column or label before any training starts.
"""

from .collation import ChunkedTextCollator
from .files import load_raw_splits
from .hierarchy import read_label_hierarchy
from .labels import TaskSource
from .pipeline import DataSpec, carve_validation, encode_splits, resolve_tasks, select_first
from .statistics import capped_pos_weight, token_lengths

__all__ = [
    "ChunkedTextCollator",
    "DataSpec",
    "TaskSource",
    "capped_pos_weight",
    "carve_validation",
    "encode_splits",
    "load_raw_splits",
    "read_label_hierarchy",
    "resolve_tasks",
    "select_first",
    "token_lengths",
]
