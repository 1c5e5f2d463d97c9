"""Long documents (`--long_documents chunk`): texts cut into chunks by the tokenizer's own overflow, chunk logits
pooled per text (max, mean, attention), the text the unit of the loss, metrics and predictions, the options stored
and reloaded, and bad flags refused by name."""

import csv
import json
import logging

import numpy as np
import pytest
import torch
from helpers import assert_fresh_interpreter_reproduces_logits, base_args, read_predictions, write_jsonl
from transformers import AutoModel, AutoTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from mtl_model import MultiTaskConfig
from mtl_model.arguments import MultiTaskTrainingArguments
from mtl_model.batching import Chunking, flatten_texts, group_chunks, pool_chunks
from mtl_model.data import ChunkedTextCollator
from mtl_model.errors import ArgumentError
from mtl_model.loading import build_config, load_model, text_chunking
from mtl_model.modeling_mtl import EncoderForMultiTaskMultiLabel, padded_batch
from mtl_model.onnx_classifier import ExportTokenizer, OnnxMultiTaskClassifier
from mtl_model.parsing import parse_arguments
from mtl_model.trainer import MultiTaskTrainer
from run_mtl_classification import cli

TASKS = {"mood": ["angry", "happy", "sad"], "topic": ["day", "movie"]}
WORDS = "i love this movie good day not bad that hate happy sad".split()


def document(words: int, seed: int) -> str:
    """A text of `words` words drawn from the tiny vocabulary (each one token)."""
    return " ".join(np.random.default_rng(seed).choice(WORDS, words))


# Texts of 1 chunk (shorter than the stride, too), 2 chunks and many, at chunks of 16 tokens with a stride of 4.
TEXTS = [document(2, 0), document(10, 1), document(20, 2), document(90, 3), document(45, 4)]


# Pooling


@pytest.mark.parametrize("pooling", ["max", "mean", "attention"])
def test_pool_chunks_pools_each_texts_own_chunks_in_numpy_and_torch(pooling):
    rng = np.random.default_rng(0)
    chunk_texts = np.array([0, 1, 1, 2, 2, 2, 2])  # texts of 1, 2 and 4 chunks
    logits, scores = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    expected = []
    for text in range(3):
        own, own_scores = logits[chunk_texts == text], scores[chunk_texts == text]
        if pooling == "max":
            expected.append(own.max(0))
        elif pooling == "mean":
            expected.append(own.mean(0))
        else:
            weights = np.exp(own_scores) / np.exp(own_scores).sum(0)
            expected.append((weights * own).sum(0))
    pooled = pool_chunks(logits, chunk_texts, pooling, scores)
    assert np.allclose(pooled, expected)
    as_torch = [torch.from_numpy(array) for array in (logits, chunk_texts, scores)]
    pooled_in_torch = pool_chunks(as_torch[0], as_torch[1], pooling, as_torch[2], xp=torch)
    assert np.allclose(pooled_in_torch.numpy(), expected)
    assert np.allclose(pool_chunks(logits[:1], chunk_texts[:1], pooling, scores[:1]), logits[:1])  # one chunk: itself


# Chunking


def test_chunks_cover_every_token_with_the_stride_as_overlap(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    chunking = Chunking(length=16, stride=4, max_chunks=100)
    chunked, dropped = chunking.tokenize(tokenizer, TEXTS)
    assert [len(chunks) for chunks in chunked["input_ids"]] == [1, 1, 2, 9, 5] and not dropped.any()
    for text, chunks in zip(TEXTS, chunked["input_ids"]):
        whole = tokenizer(text, add_special_tokens=False)["input_ids"]
        bodies = [chunk[1:-1] for chunk in chunks]  # without [CLS] and [SEP]
        assert all(len(chunk) <= 16 for chunk in chunks)
        # Each chunk after the first starts with the last `stride` tokens of the one before; together, every token.
        assert all(before[-4:] == after[:4] for before, after in zip(bodies, bodies[1:]))
        assert bodies[0] + [token for body in bodies[1:] for token in body[4:]] == whole
    capped, dropped = Chunking(16, 4, max_chunks=3).tokenize(tokenizer, TEXTS)
    assert [len(chunks) for chunks in capped["input_ids"]] == [1, 1, 2, 3, 3] and dropped.tolist() == [0, 0, 0, 6, 2]
    assert capped["input_ids"][3] == chunked["input_ids"][3][:3]  # the first chunks are kept


def test_the_deploy_tokenizer_cuts_the_same_chunks(tiny_bert_dir, tmp_path):
    """ONNX Runtime's runner tokenizes with `tokenizers` alone: the same chunks as transformers' tokenizer."""
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(tmp_path)
    chunking = Chunking(length=16, stride=4, max_chunks=6)
    expected, _ = chunking.tokenize(AutoTokenizer.from_pretrained(tiny_bert_dir), TEXTS)
    assert ExportTokenizer(tmp_path).chunks(TEXTS, chunking) == expected


def test_grouped_chunks_flatten_back_in_text_order():
    chunks = {"input_ids": [[1], [2], [3], [4]], "attention_mask": [[1], [1], [1], [1]]}
    grouped, dropped = group_chunks(chunks, [0, 0, 1, 2], texts=3, max_chunks=5)
    assert grouped["input_ids"] == [[[1], [2]], [[3]], [[4]]] and not dropped.any()
    texts = [{name: values[text] for name, values in grouped.items()} for text in range(3)]
    flat, chunk_texts = flatten_texts(texts)
    assert [chunk["input_ids"] for chunk in flat] == chunks["input_ids"] and chunk_texts.tolist() == [0, 0, 1, 2]


# The model


def tiny_model(tiny_bert_dir, pooling: str) -> EncoderForMultiTaskMultiLabel:
    options = dict(long_documents="chunk", chunk_pooling=pooling, chunk_length=16, chunk_stride=4, max_chunks=6)
    torch.manual_seed(0)
    return load_model(str(tiny_bert_dir), build_config(str(tiny_bert_dir), TASKS, options, training=True)).eval()


@pytest.mark.parametrize("pooling", ["max", "mean", "attention"])
def test_the_model_scores_each_chunk_alone_and_pools_per_text(tiny_bert_dir, pooling):
    model = tiny_model(tiny_bert_dir, pooling)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    chunked = model.tokenize(TEXTS, tokenizer)
    texts = [{name: values[text] for name, values in chunked.items()} for text in range(len(TEXTS))]
    batch = padded_batch(texts, tokenizer, chunked=True)
    labels = torch.tensor(np.random.default_rng(0).integers(0, 2, (len(TEXTS), 5)), dtype=torch.float32)
    with torch.no_grad():
        output = model(**batch, labels=labels)
        # Each chunk alone, unpadded, as a text of its own: the model's rows are independent of their batch.
        chunks, chunk_texts = flatten_texts(texts)
        alone = [model(**tokenizer.pad([chunk], return_tensors="pt")) for chunk in chunks]
        chunk_logits = torch.cat([one.logits for one in alone])
        pooled = model.pool(model.bert(**tokenizer.pad(chunks, return_tensors="pt")).last_hidden_state,
                            tokenizer.pad(chunks, return_tensors="pt")["attention_mask"], None)  # fmt: skip
        scores = model.chunk_attention(pooled) if pooling == "attention" else None
    expected = pool_chunks(chunk_logits, torch.from_numpy(chunk_texts), pooling, scores, xp=torch)
    assert output.logits.shape == (len(TEXTS), 5)
    assert torch.allclose(output.logits, expected, atol=1e-5)
    # The loss is the texts': per task, the mean BCE of their pooled logits, summed over the tasks.
    bce = torch.nn.functional.binary_cross_entropy_with_logits(expected, labels, reduction="none")
    assert torch.allclose(output.loss, bce[:, :3].mean() + bce[:, 3:].mean(), atol=1e-5)
    # predict() chunks as the config says, in length-sorted batches, results in input order.
    assert torch.allclose(model.logits(TEXTS, tokenizer, batch_size=2), expected, atol=1e-5)


def test_a_chunk_budget_encodes_in_groups_with_the_same_loss_and_gradients(tiny_bert_dir):
    model = tiny_model(tiny_bert_dir, "attention").train()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    chunked = model.tokenize(TEXTS, tokenizer)
    batch = padded_batch([{name: values[text] for name, values in chunked.items()} for text in range(len(TEXTS))],
                         tokenizer, chunked=True)  # fmt: skip
    labels = torch.tensor(np.random.default_rng(0).integers(0, 2, (len(TEXTS), 5)), dtype=torch.float32)
    rows_per_pass = []
    model.bert.register_forward_hook(lambda module, args, kwargs, output: rows_per_pass.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)  # fmt: skip
    results = {}
    for budget in (None, 4):
        model.zero_grad()
        loss = model(**batch, labels=labels, chunk_budget=budget).loss
        loss.backward()
        results[budget] = (loss.detach(), [parameter.grad.clone() for parameter in model.parameters()])
    chunks = len(batch["input_ids"])  # 15: groups of 4, 4, 4, 3, each run again in backward, last first
    assert rows_per_pass == [chunks] + [4, 4, 4, 3] + [3, 4, 4, 4]
    assert torch.allclose(results[None][0], results[4][0], atol=1e-6)
    assert all(torch.allclose(one, other, atol=1e-5) for one, other in zip(results[None][1], results[4][1]))


def test_the_trainer_holds_a_budget_of_chunks_in_training_and_evaluation(tiny_bert_dir, tmp_path):
    """Training takes --chunk_budget chunks at once (default the training batch size), evaluation
    --per_device_eval_batch_size."""
    model = tiny_model(tiny_bert_dir, "max").train()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    chunked = model.tokenize(TEXTS, tokenizer)
    batch = padded_batch([{name: values[text] for name, values in chunked.items()} for text in range(len(TEXTS))],
                         tokenizer, chunked=True)  # fmt: skip
    batch["labels"] = torch.ones(len(TEXTS), 5)
    rows_per_pass = []
    model.bert.register_forward_hook(lambda module, args, kwargs, output: rows_per_pass.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)  # fmt: skip
    counts = torch.tensor([len(TEXTS) * 3, len(TEXTS) * 2])  # annotated entries per task
    for budget, expected in ((6, [6, 6, 3]), (None, [2] * 7 + [1])):  # 15 chunks
        args = MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True,
                                          per_device_train_batch_size=2, chunk_budget=budget)  # fmt: skip
        rows_per_pass.clear()
        with torch.no_grad():
            MultiTaskTrainer(model=model, args=args).compute_loss(model, batch, num_items_in_batch=counts)
        assert rows_per_pass == expected
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True,
                                      per_device_eval_batch_size=5)  # fmt: skip
    rows_per_pass.clear()
    MultiTaskTrainer(model=model.eval(), args=args).prediction_step(model, batch, prediction_loss_only=False)
    assert rows_per_pass == [5, 5, 5]


def test_chunked_texts_refuse_data_parallel(tiny_bert_dir, tmp_path):
    """`nn.DataParallel` would split a text's chunks over replicas: several GPUs in one process are refused."""
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    args._n_gpu = 2  # what TrainingArguments counts on a machine with 2 GPUs (read once set up, as here)
    with pytest.raises(ArgumentError, match="--long_documents chunk: this process sees 2 GPUs"):
        MultiTaskTrainer(model=tiny_model(tiny_bert_dir, "max"), args=args)
    truncating = load_model(str(tiny_bert_dir), build_config(str(tiny_bert_dir), TASKS, training=True))
    assert MultiTaskTrainer(model=truncating, args=args).args.n_gpu == 2


def test_the_collator_keeps_each_text_whole_with_its_labels(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    chunked, _ = Chunking(16, 4, 6).tokenize(tokenizer, TEXTS[2:4])
    rows = [{**{name: values[text] for name, values in chunked.items()}, "labels": [float(text)] * 5}
            for text in range(2)]  # fmt: skip
    batch = ChunkedTextCollator(tokenizer)(rows)
    assert list(batch)[0] == "labels" and batch["labels"].tolist() == [[0.0] * 5, [1.0] * 5]
    assert batch["overflow_to_sample_mapping"].tolist() == [0, 0] + [1] * 6
    assert batch["input_ids"].shape == (8, 16)


# The command line


@pytest.fixture
def long_files(tmp_path):
    rng = np.random.default_rng(1)

    def records(count: int, seed: int) -> list[dict]:
        texts = [document(int(words), seed + i) for i, words in enumerate(rng.integers(2, 80, count))]
        return [{"text": text, "mood": ["happy"] if "love" in text else ["sad"], "topic": ["day" if "day" in text
                 else "movie"]} for text in texts]  # fmt: skip

    return {split: write_jsonl(tmp_path / f"{split}.jsonl", records(n, seed))
            for split, n, seed in (("train", 24, 0), ("validation", 16, 100), ("test", 12, 200))}  # fmt: skip


def chunk_args(tiny_bert_dir, output_dir, files, *extra):
    return base_args(
        tiny_bert_dir, output_dir, "--train_file", str(files["train"]), "--validation_file", str(files["validation"]),
        "--test_file", str(files["test"]), "--task_columns", "mood,topic", "--max_seq_length", "16",
        "--long_documents", "chunk", "--chunk_stride", "4", "--max_chunks", "5", *extra,
    )  # fmt: skip


def predict_alone(model_dir, output_dir, test_file, *extra) -> list[str]:
    return ["--model_name_or_path", str(model_dir), "--output_dir", str(output_dir), "--test_file", str(test_file),
            "--do_predict", "--report_to", "none", *extra]  # fmt: skip


def score_rows(predictions: list[dict], tasks: dict[str, list[str]]) -> list[list[float]]:
    """predictions.jsonl's scores as rows [texts, total_labels] in the config's label order."""
    return [[line[task]["scores"][label] for task in tasks for label in tasks[task]] for line in predictions]


@pytest.mark.parametrize("pooling", ["max", "attention"])
def test_a_chunked_run_predicts_per_text_and_the_saved_model_scores_as_the_cli(
    tiny_bert_dir, tmp_path, long_files, pooling
):
    output_dir = tmp_path / "out"
    run = chunk_args(tiny_bert_dir, output_dir, long_files, "--chunk_pooling", pooling, "--do_train", "--do_eval",
                     "--do_predict", "--tune_thresholds", "--num_train_epochs", "2")  # fmt: skip
    assert cli(run) == 0
    config = json.loads((output_dir / "config.json").read_text())
    assert (config["long_documents"], config["chunk_pooling"], config["chunk_length"]) == ("chunk", pooling, 16)
    assert (config["chunk_stride"], config["max_chunks"]) == (4, 5)
    test_texts = [json.loads(line)["text"] for line in long_files["test"].read_text().splitlines()]
    predictions = read_predictions(output_dir)
    assert [line["text"] for line in predictions] == test_texts  # one line per text, in input order
    # The evaluation report counts texts, not chunks: each label's support is its texts in the test file.
    rows = [json.loads(line) for line in long_files["test"].read_text().splitlines()]
    for task in ("mood", "topic"):
        with open(output_dir / "evaluation" / f"test_{task}.csv") as report:
            support = {row["label"]: int(row["support"]) for row in csv.DictReader(report)}
        assert support == {label: sum(label in row[task] for row in rows) for label in config["tasks"][task]}

    # The saved model, loaded as users load it, chunks and pools as the run did: the same scores.
    model = AutoModel.from_pretrained(output_dir, trust_remote_code=True)
    scores = model.scores(test_texts, AutoTokenizer.from_pretrained(output_dir), batch_size=3)
    tasks = config["tasks"]
    assert np.allclose(scores, score_rows(predictions, tasks), atol=1e-4)
    # So too in a fresh interpreter that has only the saved files (the chunking code among them).
    (tmp_path / "remote").mkdir()
    remote = assert_fresh_interpreter_reproduces_logits(output_dir, model, tmp_path / "remote")
    assert remote["predict"] == model.predict(["i love this movie"], AutoTokenizer.from_pretrained(output_dir))
    card = (output_dir / "README.md").read_text()
    assert f"in chunks of 16 tokens overlapping by 4 (at most 5), whose logits are pooled per text ({pooling})" in card

    # Prediction alone from the saved model reads the test texts in its own chunks.
    again = tmp_path / "again"
    assert cli(predict_alone(output_dir, again, long_files["test"])) == 0
    assert read_predictions(again) == predictions

    # ONNX Runtime, in the CLI and from the export alone, chunks and pools as the PyTorch model does.
    onnx_run = tmp_path / "onnx"
    assert cli(predict_alone(output_dir, onnx_run, long_files["test"], "--inference_backend", "onnx")) == 0
    assert np.allclose(score_rows(read_predictions(onnx_run), tasks), scores, atol=1e-4)
    classifier = OnnxMultiTaskClassifier.from_pretrained(onnx_run / "onnx")
    assert np.allclose(classifier.scores(test_texts, batch_size=4), scores, atol=1e-4)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--chunk_stride", "14"],
            "--chunk_stride 14 must be below the chunk length 16 minus the tokenizer's special tokens, 14",
        ),
        (["--max_seq_length", "2"], "--max_seq_length 2 (the chunk length): a chunk of 2 tokens holds no text beside"),
        (["--max_chunks", "0"], "--max_chunks must be at least 1, not 0"),
        (["--max_chunks", "-2"], "--max_chunks must be at least 1, not -2"),
        (["--text_pair_column_name", "mood"], "--text_pair_column_name: text pairs are not read in chunks"),
    ],
)
def test_bad_chunking_flags_exit_2_naming_the_flag(tiny_bert_dir, tmp_path, long_files, capsys, flags, message):
    assert cli(chunk_args(tiny_bert_dir, tmp_path / "out", long_files, "--do_train", *flags)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "config.json").exists()


def test_a_python_tokenizer_is_refused_for_chunks_by_name(tiny_bert_dir, tmp_path, long_files, capsys):
    """A Python tokenizer returns no chunk's text with its overflowing tokens: refused, not a failed batch."""
    vocabulary = AutoTokenizer.from_pretrained(tiny_bert_dir).get_vocab()
    (tmp_path / "vocab.txt").write_text("".join(f"{token}\n" for token in sorted(vocabulary, key=vocabulary.get)))
    slow = BertTokenizerLegacy(str(tmp_path / "vocab.txt"))
    with pytest.raises(ValueError, match="read in chunks by a fast tokenizer alone .* not by BertTokenizerLegacy"):
        Chunking(16, 4, 5).tokenize(slow, TEXTS)
    slow.save_pretrained(tmp_path / "slow")
    run = chunk_args(tiny_bert_dir, tmp_path / "out", long_files, "--tokenizer_name", str(tmp_path / "slow"))
    assert cli([*run, "--do_train"]) == 2
    assert (
        "--long_documents chunk: texts are read in chunks by a fast tokenizer alone (tokenizer.is_fast), not by "
        "BertTokenizerLegacy, a Python one; give a fast one with --tokenizer_name" in capsys.readouterr().err
    )


def test_a_saved_chunking_model_reads_its_own_chunks_until_trained_again(
    tiny_bert_dir, tmp_path, long_files, capsys, caplog
):
    output_dir = tmp_path / "out"
    assert cli(chunk_args(tiny_bert_dir, output_dir, long_files, "--do_train")) == 0
    predict = predict_alone(output_dir, tmp_path / "p", long_files["test"])
    assert cli([*predict, "--max_seq_length", "32"]) == 2
    assert "--max_seq_length 32: --model_name_or_path" in capsys.readouterr().err
    assert cli([*predict, "--chunk_pooling", "mean"]) == 2
    assert "an option of training changes only by training again" in capsys.readouterr().err
    # Trained again in chunks of 6 tokens, where its stride of 4 would leave no new token: the default stride.
    again = base_args(output_dir, tmp_path / "again", "--train_file", str(long_files["train"]), "--task_columns",
                      "mood,topic", "--max_seq_length", "6", "--do_train")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="mtl_model"):
        assert cli(again) == 0
    assert (
        "its stride of 4 tokens was for its chunks of 16; chunks of 6 overlap by the default, 1 tokens" in caplog.text
    )
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    assert (config["chunk_length"], config["chunk_stride"], config["max_chunks"]) == (6, 1, 5)


def test_the_default_config_truncates():
    config = MultiTaskConfig(tasks=TASKS)
    assert config.long_documents == "truncate" and Chunking.of(vars(config)) is None


def test_a_config_that_chunks_needs_its_chunk_length():
    config = MultiTaskConfig(tasks=TASKS, long_documents="chunk")
    with pytest.raises(ValueError, match="long_documents='chunk' needs the config's chunk_length"):
        Chunking.of(vars(config))


def test_a_plain_encoder_predicts_untrained_in_chunks_of_the_flags_length(tiny_bert_dir, tmp_path, long_files):
    output_dir = tmp_path / "out"
    run = chunk_args(tiny_bert_dir, output_dir, long_files, "--do_predict", "--inference_backend", "onnx")
    assert cli(run) == 0
    test_texts = [json.loads(line)["text"] for line in long_files["test"].read_text().splitlines()]
    assert [line["text"] for line in read_predictions(output_dir)] == test_texts
    config = json.loads((output_dir / "onnx" / "config.json").read_text())
    assert (config["chunk_length"], config["chunk_stride"], config["max_chunks"]) == (16, 4, 5)
    assert "in chunks of 16 tokens overlapping by 4 (at most 5)" in (output_dir / "README.md").read_text()


def test_texts_not_read_whole_are_counted_in_the_log_of_every_run(tiny_bert_dir, tmp_path, long_files, caplog):
    """Counted from the encoded splits, so also by a second run, whose encoding comes from the cache."""
    texts = [json.loads(line)["text"] for line in long_files["test"].read_text().splitlines()]
    chunked, dropped = Chunking(16, 4, max_chunks=5).tokenize(AutoTokenizer.from_pretrained(tiny_bert_dir), texts)
    several = [row + 1 for row, chunks in enumerate(chunked["input_ids"]) if len(chunks) > 1]
    cut = np.flatnonzero(dropped) + 1
    assert 5 < len(several) < len(texts) and 0 < len(cut) <= 5
    for run in ("first", "again"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mtl_model"):
            assert cli(chunk_args(tiny_bert_dir, tmp_path / run, long_files, "--do_predict")) == 0
        first = ", ".join(map(str, several[:5]))
        assert f"{long_files['test']}: {len(several)} texts longer than --max_seq_length 16 tokens (read in chunks) " \
               f"(rows {first}, …)" in caplog.text  # fmt: skip
        assert f": {len(cut)} texts of more than --max_chunks 5 chunks, {dropped.sum()} chunks dropped in all " \
               f"(their tokens are not read) (rows {', '.join(map(str, cut))})" in caplog.text  # fmt: skip


def test_chunk_flags_of_a_truncating_run_are_named_unused(tiny_bert_dir, tmp_path, long_files, caplog):
    model_args, data_args, _, _, given = parse_arguments(
        chunk_args(tiny_bert_dir, tmp_path / "out", long_files, "--long_documents", "truncate", "--chunk_budget", "4")
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    with caplog.at_level(logging.WARNING, logger="mtl_model"):
        assert text_chunking(model_args, data_args, TASKS, given, True, tokenizer) is None
    assert "--chunk_stride, --max_chunks, --chunk_budget: not used, the model truncates texts" in caplog.text


def test_chunk_flags_of_a_truncating_run_are_not_saved(tiny_bert_dir, tmp_path, long_files):
    output_dir = tmp_path / "out"
    run = chunk_args(tiny_bert_dir, output_dir, long_files, "--long_documents", "truncate", "--chunk_pooling", "mean")
    assert cli([*run, "--do_train"]) == 0
    config = json.loads((output_dir / "config.json").read_text())
    default = MultiTaskConfig()
    assert (config["chunk_pooling"], config["chunk_stride"], config["max_chunks"]) == (
        default.chunk_pooling, None, default.max_chunks
    )  # fmt: skip
    # Nor does prediction alone refuse them, or save the model anew for them: it writes only its predictions.
    predict = predict_alone(output_dir, tmp_path / "predicted", long_files["test"], "--max_seq_length", "16")
    assert cli([*predict, "--max_chunks", "3", "--chunk_pooling", "attention"]) == 0
    assert (tmp_path / "predicted" / "predictions.jsonl").exists()
    assert not (tmp_path / "predicted" / "config.json").exists()
