"""Export to ONNX and prediction through ONNX Runtime: the exported graph gives the PyTorch model's logits and labels,
for every encoder architecture; int8 runs quantised; the CLI predicts through it and writes the same files."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from helpers import base_args, list_records, read_predictions, write_jsonl
from transformers import AutoTokenizer

from mtl_model.errors import ArgumentError
from mtl_model.export import export_onnx
from mtl_model.loading import build_config, load_model
from mtl_model.onnx_classifier import INT8_FILE, ONNX_FILE, OnnxMultiTaskClassifier
from mtl_model.parsing import check_inference_backend
from run_mtl_classification import cli

INT8_TYPES = ["bert", "roberta"]
TASKS = {"mood": ["happy", "sad", "angry"], "topic": ["movie", "day"]}
# Lengths from 1 to 40 tokens: the batches the classifier pads differ from the single example that was traced.
TEXTS = ["bad", "i love this movie", "this is that day and i hate it, not good at all " * 3, "sad day", "good"]


def model_with_heads(checkpoint, tokenizer):
    """A model on `checkpoint` with random heads and, as a tuned model has, a threshold of its own per label: midway
    between its second and third highest scores on TEXTS, so that each label is predicted for two of them."""
    config = build_config(str(checkpoint), TASKS, attention_dropout=0.0)
    model = load_model(str(checkpoint), config).eval()
    ranked = np.sort(model.scores(TEXTS, tokenizer), axis=0)[::-1]  # [texts, labels], highest first
    midway = (ranked[1] + ranked[2]) / 2
    model.config.thresholds = {task: midway[part].tolist() for task, part in model.config.task_slices.items()}
    return model


@pytest.fixture(scope="module")
def exported(tiny_encoder_dirs, tmp_path_factory):
    """Per architecture: the model, its tokenizer and its export directory (the float32 graph, and for BERT and
    RoBERTa the int8 one too)."""
    exports = {}
    for model_type, checkpoint in tiny_encoder_dirs.items():
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        model = model_with_heads(checkpoint, tokenizer)
        int8 = model_type in INT8_TYPES
        directory = export_onnx(model, tokenizer, tmp_path_factory.mktemp(f"onnx-{model_type}"), int8=int8)
        exports[model_type] = SimpleNamespace(model=model, tokenizer=tokenizer, directory=directory)
    return exports


@pytest.mark.parametrize("model_type", ["bert", "roberta", "xlm-roberta", "deberta-v2", "modernbert", "distilbert",
                                        "electra", "mpnet"])  # fmt: skip
def test_the_float_graph_gives_the_models_logits_and_labels(exported, model_type):
    case = exported[model_type]
    classifier = OnnxMultiTaskClassifier.from_pretrained(case.directory)
    expected = case.model.logits(TEXTS, case.tokenizer).numpy()
    assert np.abs(classifier.logits(TEXTS) - expected).max() < 1e-4
    predicted = case.model.predict(TEXTS, case.tokenizer)
    assert classifier.predict(TEXTS) == predicted
    assert sum(len(labels) for row in predicted for labels in row.values()) == 2 * 5  # each label for two texts
    assert classifier.scores(TEXTS) == pytest.approx(1 / (1 + np.exp(-expected)), abs=1e-5)
    # Inputs named as the tokenizer's outputs that the encoder takes; the batch and sequence axes left open.
    graph = onnx.load(case.directory / ONNX_FILE)
    takes_segments = "token_type_ids" in case.model.encoder_inputs
    assert [i.name for i in graph.graph.input] == ["input_ids"] + ["token_type_ids"] * takes_segments + [
        "attention_mask"
    ]
    assert [o.name for o in graph.graph.output] == ["logits"]
    assert all(not dim.dim_value for i in graph.graph.input for dim in i.type.tensor_type.shape.dim)


def test_the_export_directory_describes_itself(exported):
    directory = exported["bert"].directory
    config = json.loads((directory / "config.json").read_text())
    assert config["tasks"] == TASKS and config["thresholds"] == exported["bert"].model.config.thresholds
    assert (
        AutoTokenizer.from_pretrained(directory)("good day")["input_ids"]
        == exported["bert"].tokenizer("good day")["input_ids"]
    )


@pytest.mark.parametrize("model_type", INT8_TYPES)
def test_the_int8_graph_is_quantised_and_close_to_float(exported, model_type):
    case = exported[model_type]
    operators = {node.op_type for node in onnx.load(case.directory / INT8_FILE).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= operators
    int8 = OnnxMultiTaskClassifier.from_pretrained(case.directory, int8=True).logits(TEXTS)
    expected = case.model.logits(TEXTS, case.tokenizer).numpy()
    assert not np.array_equal(int8, expected)
    assert np.abs(int8 - expected).max() < 0.1  # weights of about ±0.05 at 8 bits: small errors, not noise


def test_results_come_back_in_input_order_across_batches(exported):
    case = exported["bert"]
    classifier = OnnxMultiTaskClassifier.from_pretrained(case.directory)
    texts = TEXTS * 7  # 35 texts in batches of 4: rows sorted by length, then put back
    one_by_one = np.concatenate([classifier.logits([text]) for text in texts])
    assert np.abs(classifier.logits(texts, batch_size=4) - one_by_one).max() < 1e-5


def test_the_export_command_writes_the_directory_and_refuses_an_encoder(tiny_bert_dir, tmp_path):
    train, trained = write_jsonl(tmp_path / "train.jsonl", list_records(8)), tmp_path / "trained"
    args = base_args(tiny_bert_dir, trained, "--train_file", str(train), "--task_columns", "mood", "--do_train")
    assert cli([*args, "--max_steps", "2"]) == 0
    command = [sys.executable, "-m", "mtl_model.export", str(trained), "--output", str(tmp_path / "onnx"), "--int8"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert {ONNX_FILE, INT8_FILE, "config.json", "tokenizer_config.json"} <= {
        path.name for path in (tmp_path / "onnx").iterdir()
    }
    command = [sys.executable, "-m", "mtl_model.export", str(tiny_bert_dir), "--output", str(tmp_path / "no")]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2 and "not a model trained with this recipe" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_the_cli_predicts_through_onnx_runtime_with_the_same_labels(tiny_bert_dir, tmp_path):
    files = {split: write_jsonl(tmp_path / f"{split}.jsonl", list_records(n)) for split, n in (("train", 16),
             ("test", 8))}  # fmt: skip
    outputs = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        outputs[backend] = tmp_path / backend
        args = base_args(tiny_bert_dir, outputs[backend], "--train_file", str(files["train"]), "--test_file",
                         str(files["test"]), "--task_columns", "mood,topic", "--do_train", "--do_predict")  # fmt: skip
        assert cli([*args, "--inference_backend", backend]) == 0
    torch_rows, onnx_rows = read_predictions(outputs["torch"]), read_predictions(outputs["onnx"])
    assert [row["mood"]["labels"] for row in onnx_rows] == [row["mood"]["labels"] for row in torch_rows]
    for torch_row, onnx_row in zip(torch_rows, onnx_rows):
        assert onnx_row["topic"]["scores"] == pytest.approx(torch_row["topic"]["scores"], abs=1e-5)
    results = {backend: json.loads((outputs[backend] / "all_results.json").read_text()) for backend in outputs}
    assert results["onnx"]["test_mood_macro_f1"] == pytest.approx(results["torch"]["test_mood_macro_f1"])
    assert results["onnx"]["predict_samples_per_second"] > 0 and results["onnx-int8"]["test_samples"] == 8
    assert (outputs["onnx-int8"] / "onnx" / INT8_FILE).exists() and not (outputs["onnx"] / "onnx" / INT8_FILE).exists()
    card = (outputs["onnx-int8"] / "README.md").read_text()
    assert "exported int8 graph" in card and "`onnx/` folder holds the model exported" in card
    assert "ONNX Runtime, on the exported" not in (outputs["torch"] / "README.md").read_text()
    # Prediction alone, from the trained model: the same predictions again.
    again = tmp_path / "again"
    args = base_args(outputs["torch"], again, "--test_file", str(files["test"]), "--task_columns", "mood,topic")
    assert cli([*args, "--do_predict", "--inference_backend", "onnx"]) == 0
    assert read_predictions(again) == onnx_rows


@pytest.mark.parametrize(
    "backend, do_predict, world_size, message",
    [
        ("onnx", False, 1, "--inference_backend onnx applies to the test predictions: add --do_predict"),
        ("onnx-int8", True, 2, "--inference_backend onnx-int8 predicts in one process"),
    ],
)
def test_onnx_prediction_is_refused_where_it_would_not_apply(backend, do_predict, world_size, message):
    training_args = SimpleNamespace(do_predict=do_predict, world_size=world_size)
    with pytest.raises(ArgumentError, match=message):
        check_inference_backend(SimpleNamespace(inference_backend=backend), training_args)
    check_inference_backend(SimpleNamespace(inference_backend="torch"), training_args)  # PyTorch: nothing to refuse


# Run in the deploy environment: the export's labels and scores, and whether torch or transformers got imported.
RUNTIME_SCRIPT = """
import json, sys
from mtl_model.onnx_classifier import OnnxMultiTaskClassifier

classifier = OnnxMultiTaskClassifier.from_pretrained(sys.argv[1], int8=sys.argv[2] == "int8")
texts = json.loads(sys.argv[3])
imported = sorted(name for name in ("torch", "transformers") if name in sys.modules)
result = {"labels": classifier.predict(texts), "scores": classifier.scores(texts).tolist(), "imported": imported}
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def runtime_python(tmp_path_factory) -> Path:
    """A fresh virtual environment with this package and its `runtime` extra alone (no torch, no transformers),
    installed from a copy of the sources (a build writes into the tree it builds)."""
    root, repo = tmp_path_factory.mktemp("runtime"), Path(__file__).resolve().parents[1]
    source = root / "source"
    shutil.copytree(repo / "mtl_model", source / "mtl_model", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, source / name)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{source}[runtime]"], check=True)
    return python


@pytest.mark.parametrize("model_type, graph", [("bert", "float32"), ("bert", "int8"), ("roberta", "float32")])
def test_the_runtime_extra_alone_predicts_the_models_labels_without_torch(runtime_python, exported, model_type, graph):
    case = exported[model_type]
    missing = subprocess.run([str(runtime_python), "-c", "import torch"], capture_output=True)
    assert missing.returncode != 0  # torch is not installed there at all
    result = subprocess.run([str(runtime_python), "-c", RUNTIME_SCRIPT, str(case.directory), graph, json.dumps(TEXTS)],
                            capture_output=True, text=True, check=True)  # fmt: skip
    output = json.loads(result.stdout)
    assert output["imported"] == []
    in_this_process = OnnxMultiTaskClassifier.from_pretrained(case.directory, int8=graph == "int8")
    assert output["labels"] == in_this_process.predict(TEXTS)
    assert np.array(output["scores"]) == pytest.approx(in_this_process.scores(TEXTS), abs=1e-6)
    if graph == "float32":
        assert output["labels"] == case.model.predict(TEXTS, case.tokenizer)  # the PyTorch model's own labels
