"""Length-sorted batches for inference (rows of similar length together, so little padding, results put back in
input order), and long texts as chunks: cut by the tokenizer, grouped per text, flattened into a batch, and their
chunk logits pooled per text. numpy alone, for the PyTorch model, the Trainer's evaluation and the ONNX runtime
(which runs without torch); `save_pretrained` copies it beside the model's files, which import it relatively."""

from dataclasses import dataclass

import numpy as np


def longest_first(lengths) -> np.ndarray:
    """Row indices by decreasing length, ties in input order: shape [rows]. Batches taken in this order hold rows of
    similar length, so little padding; the model's own batching and the Trainer's evaluation both use it."""
    return np.argsort(-np.asarray(lengths), kind="stable")


def length_sorted_batches(encoded, batch_size: int):
    """Tokenized texts ({input name: [ids per text]}, or per chunked text [ids per chunk]) → (row indices
    [≤ batch_size], their unpadded features) per batch, longest texts first (all chunks counted): for any runtime's
    batched inference, results put back by the row indices."""
    order = longest_first([token_count(ids) for ids in encoded["input_ids"]])
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield rows, [{name: values[row] for name, values in encoded.items()} for row in rows]


# The tokenizer's name for each chunk's text when it returns a long text's overflowing tokens as further chunks; the
# model takes each chunk's text under the same name.
CHUNK_TEXT = "overflow_to_sample_mapping"


@dataclass(frozen=True)
class Chunking:
    """How a long text is read whole: in chunks of at most `length` tokens (special tokens included), consecutive
    ones overlapping by `stride` tokens (a quarter of the length unless set), the first `max_chunks` kept."""

    length: int
    stride: int
    max_chunks: int

    @classmethod
    def of(cls, options) -> "Chunking | None":
        """The chunking of a model's options (its config's attributes, or its config.json as a dict); None for a
        model that truncates."""
        if options.get("long_documents") != "chunk":
            return None
        length, stride = options["chunk_length"], options["chunk_stride"]
        if length is None:
            raise ValueError("long_documents='chunk' needs the config's chunk_length, the tokens of a chunk (a "
                             "training run sets it to its --max_seq_length)")  # fmt: skip
        return cls(length, length // 4 if stride is None else stride, options["max_chunks"])

    def tokenize(self, tokenizer, texts: list[str]) -> tuple[dict, np.ndarray]:
        """Texts → per text {input name: [ids per chunk]}, through the tokenizer's own overflow (a transformers
        tokenizer's `return_overflowing_tokens`); and the chunks dropped beyond `max_chunks` per text, [texts]."""
        check_reads_chunks(tokenizer)
        encoded = tokenizer(list(texts), truncation=True, max_length=self.length, stride=self.stride,
                            return_overflowing_tokens=True)  # fmt: skip
        chunk_texts = encoded.pop(CHUNK_TEXT)
        return group_chunks(dict(encoded), chunk_texts, len(texts), self.max_chunks)


def check_reads_chunks(tokenizer) -> None:
    """A tokenizer that returns a batch's overflowing tokens with the text of each chunk: a fast one. A Python
    tokenizer returns them without it, and the batch's padding then stops on an assertion about batch sizes."""
    if not tokenizer.is_fast:
        raise ValueError(f"texts are read in chunks by a fast tokenizer alone (tokenizer.is_fast), not by "
                         f"{type(tokenizer).__name__}, a Python one")  # fmt: skip


def group_chunks(chunks: dict, chunk_texts, texts: int, max_chunks: int) -> tuple[dict, np.ndarray]:
    """Chunks ({input name: ids per chunk}, each chunk's text in `chunk_texts`, in text order) → per text
    {input name: [ids per chunk]}, its first `max_chunks` chunks; and the chunks dropped per text, shape [texts]."""
    grouped = {name: [[] for _ in range(texts)] for name in chunks}
    dropped = np.zeros(texts, dtype=np.int64)
    for chunk, text in enumerate(chunk_texts):
        if len(grouped["input_ids"][text]) == max_chunks:
            dropped[text] += 1
            continue
        for name, values in chunks.items():
            grouped[name][text].append(values[chunk])
    return grouped, dropped


def flatten_texts(texts: list[dict]) -> tuple[list[dict], np.ndarray]:
    """Chunked texts, each {input name: [ids per chunk]} → their chunks, each {input name: ids}, text after text, and
    each chunk's text (its index in `texts`), shape [chunks]: a batch for the model."""
    chunks, chunk_texts = [], []
    for index, text in enumerate(texts):
        for chunk in range(len(text["input_ids"])):
            chunks.append({name: values[chunk] for name, values in text.items()})
            chunk_texts.append(index)
    return chunks, np.asarray(chunk_texts, dtype=np.int64)


def token_count(ids: list) -> int:
    """Tokens of a text's input_ids: a list of ids, or of chunks of ids (all chunks counted)."""
    return sum(map(len, ids)) if ids and isinstance(ids[0], list) else len(ids)


def pool_chunks(chunk_logits, chunk_texts, pooling: str, chunk_scores=None, xp=np):
    """Chunk logits [chunks, labels] → text logits [texts, labels]: per text and label, the max or mean of its
    chunks' logits, or (`attention`) their mean weighted by a softmax over the text's chunks of `chunk_scores`
    [chunks, labels]. chunk_texts: [chunks], each chunk's text, 0 to texts - 1, every text with a chunk.

    `xp` is the array library: torch for the model (training, and so differentiable), numpy for ONNX Runtime. The
    texts' chunks are selected by a [texts, chunks] mask, the same expressions in both libraries (their segment
    reductions differ: numpy's `reduceat`, torch's `scatter_reduce`), at the cost of [texts, chunks, labels] floats
    a batch: 64 texts of 4 chunks at 1,000 labels, 65 MB."""
    texts = int(chunk_texts.max()) + 1
    # 0 … texts - 1 on the chunks' device, as any array library makes it (there are never more texts than chunks).
    text_ids = xp.cumsum(xp.ones_like(chunk_texts[:texts]), 0) - 1
    member = (chunk_texts[None, :] == text_ids[:, None])[:, :, None]  # [texts, chunks, 1]
    if pooling == "mean":
        return (member * chunk_logits[None]).sum(1) / member.sum(1)
    if pooling == "max":
        return xp.amax(xp.where(member, chunk_logits[None], float("-inf")), 1)
    scores = xp.where(member, chunk_scores[None], float("-inf"))  # [texts, chunks, labels]
    weights = xp.exp(scores - xp.amax(scores, 1)[:, None])  # a chunk of another text: exp(-inf) = 0
    return (weights * chunk_logits[None]).sum(1) / weights.sum(1)
