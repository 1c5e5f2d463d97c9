"""Length-sorted batches for inference: rows of similar length together, so little padding, results put back in
input order. numpy alone, for the PyTorch model, the Trainer's evaluation and the ONNX runtime (which runs without
torch); `save_pretrained` copies it beside the model's files, which import it relatively."""

import numpy as np


def longest_first(lengths) -> np.ndarray:
    """Row indices by decreasing length, ties in input order: shape [rows]. Batches taken in this order hold rows of
    similar length, so little padding; the model's own batching and the Trainer's evaluation both use it."""
    return np.argsort(-np.asarray(lengths), kind="stable")


def length_sorted_batches(encoded, batch_size: int):
    """Tokenized texts ({input name: [ids per text]}) → (row indices [≤ batch_size], their unpadded features) per
    batch, longest texts first: for any runtime's batched inference, results put back by the row indices."""
    order = longest_first([len(ids) for ids in encoded["input_ids"]])
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield rows, [{name: values[row] for name, values in encoded.items()} for row in rows]
