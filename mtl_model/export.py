"""Export a trained model to ONNX, for ONNX Runtime or any server that runs ONNX graphs:

    python -m mtl_model.export MODEL_DIR --output OUT_DIR [--int8]

OUT_DIR gets `model.onnx` (inputs named as the tokenizer's outputs, batch and sequence axes dynamic; one output,
`logits` [batch, total labels] in the config's order, sigmoid not applied), with `--int8` also
`model_quantized.onnx`, and the config (tasks, labels, thresholds) and tokenizer files: all that
`OnnxMultiTaskClassifier.from_pretrained(OUT_DIR)` reads. Needs the `onnx` extra (`pip install ".[onnx]"`).

The exporter is torch's own, `torch.onnx.export` (torch.export + onnxscript): maintained with torch, it traces our
model as it runs, whatever its encoder. optimum's exporter would be another dependency and needs a hand-written ONNX
config for a model type it does not know, which ours is.
"""

import argparse
import copy
import logging
import sys
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer

from .configuration_mtl import MultiTaskConfig
from .errors import ArgumentError
from .loading import load_config, load_model
from .onnx_classifier import INT8_FILE, ONNX_FILE, OUTPUT_NAME, SCORES_NAME

logger = logging.getLogger(__name__)


class GraphOutputs(nn.Module):
    """The model as the exported graph sees it: the tokenizer's tensors in; out, logits [batch, total_labels] and,
    where chunks are pooled by attention, each row's chunk scores [batch, total_labels]. A chunked text's chunks are
    rows of their own here, pooled per text outside the graph (`pool_chunks`), as ONNX Runtime's runner does."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return output.logits if output.chunk_scores is None else (output.logits, output.chunk_scores)


def graph_input_names(model, tokenizer) -> list[str]:
    """The tokenizer's outputs that the encoder takes (RoBERTa-style encoders take no token_type_ids)."""
    return [name for name in tokenizer.model_input_names if name in model.encoder_inputs]


def export_onnx(model, tokenizer, output_dir: str | Path, int8: bool = False) -> Path:
    """Write `model.onnx` (and with `int8` `model_quantized.onnx`), the config and the tokenizer to output_dir."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).cpu().float().eval()  # the caller's model stays where and as it is
    # Attention written out (matmul, mask, softmax): ONNX Runtime runs it faster than the exported form of sdpa, which
    # adds NaN guards (MiniLM on the CPU: 302 against 250 texts/s, BENCHMARKS.md "Deploy"); the same logits.
    model.set_attn_implementation("eager")
    names = graph_input_names(model, tokenizer)
    # Two texts of different lengths, so that neither axis is specialised to the example's size.
    example = tokenizer(["an example text to export", "two"], padding=True, return_tensors="pt")
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    attention = model.config.long_documents == "chunk" and model.config.chunk_pooling == "attention"
    program = torch.onnx.export(
        GraphOutputs(model).eval(),
        kwargs={name: example[name] for name in names},
        output_names=[OUTPUT_NAME, SCORES_NAME] if attention else [OUTPUT_NAME],
        dynamic_shapes={name: {0: batch, 1: sequence} for name in names},
        dynamo=True,
        verbose=False,
    )
    program.save(str(output_dir / ONNX_FILE))
    model.config.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    if int8:
        quantize_int8(output_dir / ONNX_FILE, output_dir / INT8_FILE)
    logger.info("Exported %s to %s", type(model).__name__, output_dir)
    return output_dir


def quantize_int8(source: Path, destination: Path) -> None:
    """ONNX Runtime's dynamic int8 quantisation: weights int8 per output channel, activations quantised per batch
    at run time. ONNX Runtime's pre-processing (shape inference, graph optimisation) first, as it recommends,
    without its symbolic shape inference, which stops on the exported BERT, DistilBERT and ELECTRA graphs
    ("Incomplete symbolic shape inference"); ONNX's own shape inference still runs."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = destination.with_suffix(".prepared.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    try:
        quantize_dynamic(str(prepared), str(destination), per_channel=True, weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtl_model.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", help="A model trained with this recipe: a directory or a Hub id.")
    parser.add_argument("--output", required=True, help="Where to write model.onnx, the config and the tokenizer.")
    parser.add_argument("--int8", action="store_true", help="Also write model_quantized.onnx (dynamic int8).")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.model_dir)
        if not isinstance(config, MultiTaskConfig):
            raise ArgumentError(f"{args.model_dir}: not a model trained with this recipe (its config has no tasks)")
        model = load_model(args.model_dir, config)
    except ArgumentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(export_onnx(model, AutoTokenizer.from_pretrained(args.model_dir), args.output, args.int8))
    return 0


if __name__ == "__main__":
    sys.exit(main())
