"""An exported model (`python -m mtl_model.export`) run by ONNX Runtime, with the PyTorch model's interface:

    classifier = OnnxMultiTaskClassifier.from_pretrained("outputs/goemotions/onnx")  # int8=True: the int8 graph
    classifier.predict(["Thanks, that made my day!"])   # as model.predict: per text, per task, the labels
    classifier.scores(["Thanks, that made my day!"])    # as model.scores: every label's score, [texts, total labels]

Texts run in length-sorted batches, as in the PyTorch model, and come back in input order.

Deploys without the training stack: the `runtime` extra (onnxruntime, tokenizers, numpy) is all it needs. Neither
torch nor transformers is imported: the config is read as JSON (`Decoding.from_config`), the tokenizer through
`tokenizers` from the export's `tokenizer.json`, and the sigmoid and decoding are numpy (`decoding.py`, the same
functions the PyTorch model decodes with).
"""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .batching import Chunking, flatten_texts, group_chunks, length_sorted_batches, pool_chunks
from .decoding import Decoding, decode_scores, label_scores

ONNX_FILE = "model.onnx"
INT8_FILE = "model_quantized.onnx"  # optimum's name for the same file
OUTPUT_NAME = "logits"
SCORES_NAME = "chunk_scores"  # of a model that pools a text's chunks by attention
# ONNX Runtime on a CPU predicts fastest in small batches (MiniLM: 484 int8 texts/s in batches of 16, 413 in 64;
# float32 within 3% from 16 to 64), PyTorch in large ones: BENCHMARKS.md, "Deploy".
ONNX_EVAL_BATCH_SIZE = 16


class ExportTokenizer:
    """The export's tokenizer as `tokenizers` runs it (`tokenizer.json`), with the padding and truncation that
    transformers' tokenizer applies from `tokenizer_config.json`.

    Written here because transformers' tokenizer would bring transformers into the deploy environment, and
    `tokenizers` pads only its own encodings: the rows of a tokenized dataset (lists of ids) are padded by `pad`.
    """

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        settings = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()  # a saved tokenizer.json can carry fixed-length padding; batches pad to their own
        self.truncation_side = settings.get("truncation_side", "right")
        self.padding_side = settings.get("padding_side", "right")
        pad_token = settings.get("pad_token")
        self.pad_values = {"input_ids": self.tokenizer.token_to_id(pad_token) if pad_token else 0,
                           "token_type_ids": settings.get("pad_token_type_id", 0), "attention_mask": 0}  # fmt: skip

    def __call__(self, texts: Sequence[str], max_length: int) -> dict[str, list[list[int]]]:
        """Texts → {input name: ids per text}, unpadded, special tokens added, truncated to `max_length`."""
        self.tokenizer.enable_truncation(max_length, direction=self.truncation_side)
        return features_of(self.tokenizer.encode_batch(list(texts)))

    def chunks(self, texts: Sequence[str], chunking: Chunking) -> dict[str, list[list[list[int]]]]:
        """Texts → {input name: [ids per chunk] per text}: the encoding and its overflowing tokens as further
        chunks, as transformers' `return_overflowing_tokens` returns them (`Chunking.tokenize`)."""
        self.tokenizer.enable_truncation(chunking.length, stride=chunking.stride, direction=self.truncation_side)
        encodings, chunk_texts = [], []
        for text, encoding in enumerate(self.tokenizer.encode_batch(list(texts))):
            encodings += [encoding, *encoding.overflowing]
            chunk_texts += [text] * (1 + len(encoding.overflowing))
        return group_chunks(features_of(encodings), chunk_texts, len(texts), chunking.max_chunks)[0]

    def pad(self, features: list[dict[str, Sequence[int]]], names: Sequence[str]) -> dict[str, np.ndarray]:
        """Rows of unpadded features → each input of `names` as int64 [rows, longest row], padded as the tokenizer
        pads (its pad id, its side; attention mask 0 on padding)."""
        longest = max(len(row["input_ids"]) for row in features)
        shape = (len(features), longest)
        batch = {name: np.full(shape, self.pad_values.get(name, 0), dtype=np.int64) for name in names}
        for index, row in enumerate(features):
            length = len(row["input_ids"])
            columns = slice(0, length) if self.padding_side == "right" else slice(longest - length, longest)
            for name in names:
                batch[name][index, columns] = row[name]
        return batch


def features_of(encodings) -> dict[str, list[list[int]]]:
    """`tokenizers` encodings → {input name: ids per encoding}."""
    return {
        "input_ids": [encoding.ids for encoding in encodings],
        "token_type_ids": [encoding.type_ids for encoding in encodings],
        "attention_mask": [encoding.attention_mask for encoding in encodings],
    }


class OnnxMultiTaskClassifier:
    def __init__(self, session, decoding: Decoding, tokenizer: ExportTokenizer, config: Mapping | None = None):
        """`config`: the model's config as a dict, for how it reads long texts (`Chunking.of`); none: truncated."""
        self.session, self.decoding, self.tokenizer = session, decoding, tokenizer
        self.input_names = [graph_input.name for graph_input in session.get_inputs()]
        self.output_names = [graph_output.name for graph_output in session.get_outputs()]
        self.chunking = Chunking.of(config or {})
        self.chunk_pooling = (config or {}).get("chunk_pooling")

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, int8: bool = False, providers: Sequence[str] = ("CPUExecutionProvider",)
    ) -> "OnnxMultiTaskClassifier":
        """The float32 graph of an export directory, or with `int8` its int8 one (exported with `--int8`)."""
        # Imported here, not at the top: the command line reads this module's constants (the ONNX batch size, the
        # file names) also where the onnx extra is not installed.
        import onnxruntime

        directory = Path(directory)
        session = onnxruntime.InferenceSession(str(directory / (INT8_FILE if int8 else ONNX_FILE)),
                                               providers=list(providers))  # fmt: skip
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        return cls(session, Decoding.from_config(config), ExportTokenizer(directory), config)

    def logits(self, texts: Sequence[str], batch_size: int = ONNX_EVAL_BATCH_SIZE, max_length: int = 512):
        """Texts → logits [texts, total_labels] (np.float32), in the order of `texts`; truncated to `max_length`, or
        in chunks as the model was trained."""
        if self.chunking is None:
            return self.logits_of_encoded(self.tokenizer(texts, max_length), batch_size)
        return self.logits_of_encoded(self.tokenizer.chunks(texts, self.chunking), batch_size)

    def logits_of_encoded(
        self, encoded: Mapping[str, Sequence[Sequence[int]]], batch_size: int = ONNX_EVAL_BATCH_SIZE
    ) -> np.ndarray:
        """Tokenized texts ({input name: ids per text}, or [ids per chunk] per text for a model that reads chunks; as
        the tokenizer or a tokenized dataset holds them) → logits [texts, total_labels] (np.float32) in their order;
        `batch_size` texts a batch, and a text's chunks pooled (`pool_chunks`)."""
        features = {name: encoded[name] for name in self.input_names}
        logits = np.empty((len(features["input_ids"]), len(self.decoding.label_names)), dtype=np.float32)
        for rows, batch_features in length_sorted_batches(features, batch_size):
            if self.chunking is None:
                logits[rows] = self.session.run([OUTPUT_NAME], self.tokenizer.pad(batch_features, self.input_names))[0]
                continue
            chunks, chunk_texts = flatten_texts(batch_features)
            # The chunks in groups of `batch_size`: a batch of long texts costs the memory of one of short ones.
            groups = [self.session.run(self.output_names, self.tokenizer.pad(chunks[start : start + batch_size],
                                                                            self.input_names))
                      for start in range(0, len(chunks), batch_size)]  # fmt: skip
            outputs = [np.concatenate(parts) for parts in zip(*groups)]
            scores = outputs[1] if len(outputs) > 1 else None  # SCORES_NAME, of attention pooling
            logits[rows] = pool_chunks(outputs[0], chunk_texts, self.chunk_pooling, scores)
        return logits

    def scores(self, texts: Sequence[str], batch_size: int = ONNX_EVAL_BATCH_SIZE, max_length: int = 512):
        """Every label's score, [texts, total_labels] in the config's label order (`decoding.label_names`): its
        sigmoid probability, under the label hierarchy's constraint when the config has one (`label_scores`)."""
        return label_scores(self.logits(texts, batch_size, max_length), self.decoding)

    def predict(self, texts: Sequence[str], batch_size: int = ONNX_EVAL_BATCH_SIZE, max_length: int = 512):
        """Per text, each task's predicted labels at the stored thresholds: what `model.predict` returns."""
        return decode_scores(self.scores(texts, batch_size, max_length), self.decoding)
