"""Batches of chunked texts for the Trainer: `DataCollatorWithPadding`'s job where a row is a text in chunks."""

from dataclasses import dataclass

import torch

from ..modeling_mtl import padded_batch


@dataclass
class ChunkedTextCollator:
    """Rows of chunked texts ({input name: [ids per chunk]}, labels one row per text) → the texts' chunks padded,
    each chunk's text (`overflow_to_sample_mapping`) and the labels [texts, total_labels]: a batch holds whole
    texts, so under data parallelism each text is scored once, by one process."""

    tokenizer: object

    def __call__(self, rows: list[dict]) -> dict:
        labels = [row.pop("labels") for row in rows] if "labels" in rows[0] else None
        batch = dict(padded_batch(rows, self.tokenizer, chunked=True))
        if labels is None:
            return batch
        # Labels first: the Trainer counts a batch's examples by its first tensor (`find_batch_size`), texts here.
        return {"labels": torch.tensor(labels, dtype=torch.float32), **batch}
