#!/usr/bin/env python
"""A trained GoEmotions model deployed through ONNX Runtime: parity with PyTorch, test F1 and speed of each backend.

- parity: the model exported (`mtl_model.export`), its float32 graph's logits on the whole test split against the
  PyTorch model's (max absolute difference), and how many texts get other labels; the same for the int8 graph;
- ONNX Runtime's own matrix-product rate on this CPU, float32 and int8, at the encoder's shapes: the ceiling;
- F1 and speed: `run_mtl_classification.py --do_predict --inference_backend <backend>` from the trained model (its
  tuned thresholds), each backend in its own process, `--repeats` times, alternating; test F1 per task (deterministic)
  and the median of the per-pair throughput ratios over torch.

    python run_mtl_classification.py examples/goemotions/config.yaml   # the README's model, if not there yet
    python bench/deploy.py --model_dir outputs/goemotions              # writes bench/results/deploy.json
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import DATA, REPO, RESULTS, TASKS, f1_scores, median_ratio, run_cli, write_results
from transformers import AutoTokenizer

from mtl_model.decoding import decode_scores, label_scores
from mtl_model.export import export_onnx
from mtl_model.loading import load_config, load_model
from mtl_model.onnx_classifier import OnnxMultiTaskClassifier

# Each backend's CLI flags: PyTorch, ONNX Runtime's float32 and int8. (The run recorded in BENCHMARKS.md, at the
# commit it names, also had torch.ao's int8, `--int8_inference`, since retired.)
BACKENDS = {backend: ["--inference_backend", backend] for backend in ("torch", "onnx", "onnx-int8")}
MAX_LENGTH = 128


def parity(model_dir: Path) -> dict:
    """Each exported graph against the PyTorch model on the test texts: logits and labels."""
    model, tokenizer = (
        load_model(str(model_dir), load_config(str(model_dir))),
        AutoTokenizer.from_pretrained(model_dir),
    )
    texts = [json.loads(line)["text"] for line in (DATA / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    expected = model.logits(texts, tokenizer, max_length=MAX_LENGTH).numpy()
    labels = decode_scores(label_scores(expected, model.config.decoding), model.config.decoding)
    figures = {}
    with tempfile.TemporaryDirectory() as directory:
        export_onnx(model, tokenizer, directory, int8=True)
        for name, int8 in (("onnx", False), ("onnx-int8", True)):
            logits = OnnxMultiTaskClassifier.from_pretrained(directory, int8=int8).logits(texts, max_length=MAX_LENGTH)
            decoded = decode_scores(label_scores(logits, model.config.decoding), model.config.decoding)
            other = sum(a != b for a, b in zip(decoded, labels))
            figures[name] = {"max_abs_logit_difference": float(np.abs(logits - expected).max()),
                             "texts_with_other_labels": int(other), "texts": len(texts)}  # fmt: skip
    return figures


def runtime_matmul_rates(rows: int = 320, inner: int = 384, columns: int = 1536, repeats: int = 50) -> dict:
    """ONNX Runtime's own rate, in G(FL)OP/s, on one matrix product of the encoder's shape (16 texts × 20 tokens by
    the MiniLM's 384 × 1536 feed-forward weight): float32 (MatMul) and int8 as the quantised graph runs it (the same
    graph through `quantize_int8`: activations quantised at run time, int8 weights). The practical peaks."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from mtl_model.export import quantize_int8

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((inner, columns), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, inner])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, columns])],
        [weight],
    )
    x = np.random.default_rng(1).standard_normal((rows, inner), np.float32)
    rates = {}
    with tempfile.TemporaryDirectory() as directory:
        float_graph, int8_graph = Path(directory) / "float.onnx", Path(directory) / "int8.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), float_graph)
        quantize_int8(float_graph, int8_graph)
        for name, path in (("float32", float_graph), ("int8", int8_graph)):
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            session.run(None, {"x": x})
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                session.run(None, {"x": x})
                seconds.append(time.perf_counter() - start)
            rates[f"{name}_gops"] = 2 * rows * inner * columns / statistics.median(seconds) / 1e9
    return rates


def predict(model_dir: Path, backend: str) -> dict:
    """Test F1 per task with the model's thresholds, and prediction throughput, from the CLI."""
    with tempfile.TemporaryDirectory() as output_dir:
        results = run_cli(
            Path(output_dir), "--model_name_or_path", model_dir,
            "--test_file", DATA / "test.jsonl", "--labels_file", DATA / "labels.json",
            "--task_columns", ",".join(TASKS), "--max_seq_length", MAX_LENGTH, "--do_predict",
            *BACKENDS[backend], "--report_to", "none", "--disable_tqdm", "true", quiet=True,
        )  # fmt: skip
    f1 = f1_scores(results, key="{average}", digits=4)
    return {"f1": f1, "predict_samples_per_second": results["predict_samples_per_second"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", type=Path, default=REPO / "outputs" / "goemotions")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = [{backend: predict(args.model_dir, backend) for backend in BACKENDS} for _ in range(args.repeats)]
    report = {
        "parity": parity(args.model_dir),
        "runtime_matmul_rates": runtime_matmul_rates(),
        "test_f1": {backend: runs[0][backend]["f1"] for backend in BACKENDS},
        "median_predict_samples_per_second": {
            backend: statistics.median(run[backend]["predict_samples_per_second"] for run in runs)
            for backend in BACKENDS
        },
        "median_ratio_over_torch": {
            backend: median_ratio(runs, backend, "torch", "predict_samples_per_second")
            for backend in BACKENDS
            if backend != "torch"
        },
        "runs": runs,
        "model_dir": os.path.relpath(args.model_dir, REPO),
        "max_length": MAX_LENGTH,
    }
    write_results(RESULTS / "deploy.json", report)
    summary = ("parity", "runtime_matmul_rates", "test_f1", "median_ratio_over_torch")
    print(json.dumps({key: report[key] for key in summary}, indent=2))


if __name__ == "__main__":
    main()
