"""An exported model (`python -m mtl_model.export`) run by ONNX Runtime, with the PyTorch model's interface:

    classifier = OnnxMultiTaskClassifier.from_pretrained("outputs/goemotions/onnx")  # int8=True: the int8 graph
    classifier.predict(["Thanks, that made my day!"])   # as model.predict: per text, per task, the labels
    classifier.scores(["Thanks, that made my day!"])    # as model.scores: every label's score, [texts, total labels]

Texts run in length-sorted batches, as in the PyTorch model, and come back in input order. Needs the `onnx` extra.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime
from transformers import AutoTokenizer

from .arguments import ONNX_EVAL_BATCH_SIZE
from .export import INT8_FILE, ONNX_FILE, OUTPUT_NAME
from .loading import load_config
from .modeling_mtl import decode_scores, label_scores, length_sorted_batches

BATCH_SIZE = ONNX_EVAL_BATCH_SIZE  # ONNX Runtime's fastest on a CPU: small batches of length-sorted texts


class OnnxMultiTaskClassifier:
    def __init__(self, session: onnxruntime.InferenceSession, config, tokenizer):
        self.session, self.config, self.tokenizer = session, config, tokenizer
        self.input_names = [graph_input.name for graph_input in session.get_inputs()]

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, int8: bool = False, providers: Sequence[str] = ("CPUExecutionProvider",)
    ) -> "OnnxMultiTaskClassifier":
        """The float32 graph of an export directory, or with `int8` its int8 one (exported with `--int8`)."""
        graph = Path(directory) / (INT8_FILE if int8 else ONNX_FILE)
        session = onnxruntime.InferenceSession(str(graph), providers=list(providers))
        return cls(session, load_config(str(directory)), AutoTokenizer.from_pretrained(directory))

    def logits(self, texts: Sequence[str], batch_size: int = BATCH_SIZE, max_length: int = 512) -> np.ndarray:
        """Texts → logits [texts, total_labels], in the order of `texts`."""
        encoded = self.tokenizer(list(texts), truncation=True, max_length=max_length)
        return self.logits_of_encoded(encoded, batch_size)

    def logits_of_encoded(self, encoded: Mapping[str, Sequence[Sequence[int]]], batch_size: int = BATCH_SIZE):
        """Tokenized texts ({input name: ids per text}, as the tokenizer or a tokenized dataset holds them) → logits
        [texts, total_labels] (np.float32) in their order."""
        features = {name: encoded[name] for name in self.input_names}
        logits = np.empty((len(features["input_ids"]), len(self.config.label_names)), dtype=np.float32)
        for rows, batch_features in length_sorted_batches(features, batch_size):
            batch = self.tokenizer.pad(batch_features, return_tensors="np")
            feeds = {name: batch[name].astype(np.int64) for name in self.input_names}
            logits[rows] = self.session.run([OUTPUT_NAME], feeds)[0]
        return logits

    def scores(self, texts: Sequence[str], batch_size: int = BATCH_SIZE, max_length: int = 512) -> np.ndarray:
        """Every label's score, [texts, total_labels] in the config's label order (`config.label_names`): its sigmoid
        probability, under the label hierarchy's constraint when the config has one (`label_scores`)."""
        return label_scores(self.logits(texts, batch_size, max_length), self.config)

    def predict(self, texts: Sequence[str], batch_size: int = BATCH_SIZE, max_length: int = 512) -> list[dict]:
        """Per text, each task's predicted labels at the stored thresholds: what `model.predict` returns."""
        return decode_scores(self.scores(texts, batch_size, max_length), self.config)
