import ctypes
import platform
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_BERT
from datasets import Dataset
from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments

from mtl_model import BertForMultiTaskMultiLabel, BertMultiTaskConfig
from mtl_model.arguments import MultiTaskTrainingArguments
from mtl_model.metrics import build_compute_metrics
from mtl_model.trainer import MultiTaskTrainer, ReleaseFreedMemory

TASKS = {"emotion": ["joy", "anger", "fear"], "sentiment": ["positive", "negative"]}
M = -100.0
# Eight examples whose masks differ between the two halves: the first four annotate `emotion` once, the last four
# three times, so a per-micro-batch mean weighs entries differently from the exact per-task normalisation.
LABELS = [
    [1, 0, 0, 1, 0],
    [M, M, M, 0, 1],
    [M, M, M, 1, 1],
    [M, M, M, 0, 0],
    [0, 1, 0, M, M],
    [1, 1, 0, 1, 0],
    [0, 0, 1, M, M],
    [M, M, M, 0, 1],
]


def tiny_model() -> BertForMultiTaskMultiLabel:
    torch.manual_seed(0)
    return BertForMultiTaskMultiLabel(BertMultiTaskConfig(**TINY_BERT, tasks=TASKS))


def tiny_dataset() -> Dataset:
    rng = np.random.default_rng(0)
    lengths = [5, 9, 3, 7, 12, 4, 6, 8]
    input_ids = [[2, *rng.integers(5, 100, size=n).tolist(), 3] for n in lengths]
    return Dataset.from_dict(
        {"input_ids": input_ids, "attention_mask": [[1] * len(ids) for ids in input_ids], "labels": LABELS}
    )


def train_one_step(tmp_path, tiny_bert_dir, batch_size: int, accumulation: int):
    model = tiny_model()
    args = TrainingArguments(
        output_dir=str(tmp_path / f"b{batch_size}x{accumulation}"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=0.5,
        optim="sgd",  # plain SGD: AdamW's normalisation would hide a wrongly scaled loss
        lr_scheduler_type="constant",
        train_sampling_strategy="sequential",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
    )
    trainer = MultiTaskTrainer(
        model=model,
        args=args,
        train_dataset=tiny_dataset(),
        data_collator=DataCollatorWithPadding(AutoTokenizer.from_pretrained(tiny_bert_dir)),
    )
    trainer.train()
    return model, trainer.state.log_history[0]


def test_gradient_accumulation_2x4_equals_1x8_under_sgd(tmp_path, tiny_bert_dir):
    full, full_log = train_one_step(tmp_path, tiny_bert_dir, batch_size=8, accumulation=1)
    accumulated, accumulated_log = train_one_step(tmp_path, tiny_bert_dir, batch_size=4, accumulation=2)

    initial = dict(tiny_model().named_parameters())
    moved = max((p - initial[name]).abs().max().item() for name, p in full.named_parameters())
    assert moved > 1e-3  # the step really changed the weights
    for (name, p_full), (_, p_accumulated) in zip(full.named_parameters(), accumulated.named_parameters()):
        torch.testing.assert_close(p_accumulated, p_full, atol=1e-6, rtol=1e-5, msg=name)
    for key in ("loss", "emotion_loss", "sentiment_loss"):
        assert accumulated_log[key] == pytest.approx(full_log[key], abs=1e-3), key


def test_exact_loss_differs_from_mean_of_micro_batch_losses(tiny_bert_dir):
    """Guards the test above: with these masks, the naive per-micro-batch mean gives another loss."""
    model = tiny_model().eval()
    collate = DataCollatorWithPadding(AutoTokenizer.from_pretrained(tiny_bert_dir))
    rows = list(tiny_dataset())
    full = model(**collate(rows)).loss
    halves = (model(**collate(rows[:4])).loss + model(**collate(rows[4:])).loss) / 2
    assert abs(full.item() - halves.item()) > 1e-3


def test_logged_task_losses_match_the_model_and_predictions_hold_only_logits(tmp_path, tiny_bert_dir):
    model, log = train_one_step(tmp_path, tiny_bert_dir, batch_size=8, accumulation=1)
    initial = tiny_model().eval()
    collate = DataCollatorWithPadding(AutoTokenizer.from_pretrained(tiny_bert_dir))
    with torch.no_grad():
        expected = initial(**collate(list(tiny_dataset()))).task_losses
    assert log["emotion_loss"] == pytest.approx(expected[0].item(), abs=1e-4)
    assert log["sentiment_loss"] == pytest.approx(expected[1].item(), abs=1e-4)

    trainer = MultiTaskTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path / "predict"), report_to="none", per_device_eval_batch_size=3),
        data_collator=collate,
        compute_metrics=build_compute_metrics(model.config),
    )
    output = trainer.predict(tiny_dataset())
    assert isinstance(output.predictions, np.ndarray) and output.predictions.shape == (8, 5)
    assert "test_emotion_macro_f1" in output.metrics and "test_micro_f1" in output.metrics


def test_head_learning_rate_puts_heads_in_their_own_groups(tmp_path):
    model = tiny_model()
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-4, weight_decay=0.01, report_to="none")
    trainer = MultiTaskTrainer(model=model, args=args, head_learning_rate=1e-2)
    optimizer = trainer.create_optimizer()
    learning_rate_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert len(learning_rate_of) == sum(1 for _ in model.parameters())  # every parameter, once
    for name, parameter in model.named_parameters():
        assert learning_rate_of[id(parameter)] == (1e-2 if name.startswith("heads.") else 1e-4), name
    decays = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert decays[id(model.heads[0].weight)] == 0.01 and decays[id(model.heads[0].bias)] == 0.0


def test_evaluation_and_prediction_run_longest_first_and_return_rows_in_input_order(tmp_path, tiny_bert_dir):
    model = tiny_model().eval()
    collate = DataCollatorWithPadding(AutoTokenizer.from_pretrained(tiny_bert_dir))
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to="none", per_device_eval_batch_size=3)
    assert args.train_sampling_strategy == "group_by_length"  # the stock eval sampler would then shuffle rows
    trainer = MultiTaskTrainer(
        model=model, args=args, data_collator=collate, compute_metrics=build_compute_metrics(model.config)
    )
    batch_lengths = []
    model.register_forward_pre_hook(lambda _, args, kwargs: batch_lengths.append(kwargs["input_ids"].shape[1]),
                                    with_kwargs=True)  # fmt: skip
    dataset = tiny_dataset()
    output = trainer.predict(dataset)

    with torch.no_grad():
        one_by_one = [model(**collate([row])).logits[0].numpy() for row in dataset]
    np.testing.assert_allclose(output.predictions, np.stack(one_by_one), atol=1e-5)
    np.testing.assert_array_equal(output.label_ids, np.array(LABELS))
    assert batch_lengths[:3] == [14, 9, 6]  # rows of 14, 11, 10 | 9, 8, 7 | 6, 5 tokens
    metrics = trainer.evaluate(dataset)
    assert metrics["eval_micro_f1"] == pytest.approx(output.metrics["test_micro_f1"])


def test_length_grouped_sampler_reads_the_stored_lengths(tmp_path):
    dataset = tiny_dataset()
    # Stored lengths unlike the rows' own: the stock sampler, which counts input_ids, would not give these back.
    stored = [100 + index for index in range(len(dataset))]
    assert stored != [len(ids) for ids in dataset["input_ids"]]
    dataset = dataset.add_column("length", stored)
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to="none", per_device_train_batch_size=2)
    trainer = MultiTaskTrainer(model=tiny_model(), args=args, train_dataset=dataset)
    sampler = trainer._get_train_sampler()
    assert sampler.lengths == stored
    assert sorted(sampler) == list(range(len(dataset)))  # every row once


def test_training_on_the_cpu_trims_the_heap_every_n_steps(tmp_path, tiny_bert_dir, monkeypatch):
    trims = []
    monkeypatch.setattr("mtl_model.trainer.ctypes.CDLL", lambda library: SimpleNamespace(malloc_trim=trims.append))
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, per_device_train_batch_size=2, max_steps=5,
        malloc_trim_steps=2, save_strategy="no",
    )  # fmt: skip
    collate = DataCollatorWithPadding(AutoTokenizer.from_pretrained(tiny_bert_dir))
    MultiTaskTrainer(model=tiny_model(), args=args, train_dataset=tiny_dataset(), data_collator=collate).train()
    assert trims == [0, 0]  # after steps 2 and 4


def test_heap_trimming_is_off_when_disabled_or_not_on_the_cpu(tmp_path):
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, malloc_trim_steps=0)
    trainer = MultiTaskTrainer(model=tiny_model(), args=args)
    assert not any(isinstance(callback, ReleaseFreedMemory) for callback in trainer.callback_handler.callbacks)
    on_a_gpu = SimpleNamespace(malloc_trim_steps=10, device=torch.device("cuda"))
    assert ReleaseFreedMemory.for_training(on_a_gpu) is None


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_heap_trimming_finds_glibc_by_default(tmp_path):
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = MultiTaskTrainer(model=tiny_model(), args=args)
    callbacks = trainer.callback_handler.callbacks
    (release,) = [callback for callback in callbacks if isinstance(callback, ReleaseFreedMemory)]
    assert release.every == 10
    # The C library's own malloc_trim, not a stand-in: the same function as the one loaded from libc by name.
    address = ctypes.cast(release.malloc_trim, ctypes.c_void_p).value
    assert address == ctypes.cast(ctypes.CDLL("libc.so.6").malloc_trim, ctypes.c_void_p).value


class SimulatedDataParallel(torch.nn.Module):
    """`nn.DataParallel` on one device: every tensor argument split along its first axis into `replicas` parts
    (`torch.chunk`, as its scatter splits them), the module run on each part, and the outputs gathered as it gathers
    them: the replicas' scalar losses stacked into [replicas], other tensors concatenated along the first axis."""

    def __init__(self, module: torch.nn.Module, replicas: int):
        super().__init__()
        self.module, self.replicas = module, replicas

    def forward(self, **inputs):
        parts = [{name: value.chunk(self.replicas)[replica] for name, value in inputs.items()}
                 for replica in range(self.replicas)]  # fmt: skip
        outputs = [self.module(**part) for part in parts]
        return SimpleNamespace(loss=torch.stack([output.loss for output in outputs]),
                               task_losses=torch.cat([output.task_losses for output in outputs]))  # fmt: skip


@pytest.mark.parametrize("replicas", [2, 4])
def test_data_parallel_replicas_together_give_the_exact_loss(tmp_path, tiny_bert_dir, replicas):
    """Several GPUs in one process (the Trainer's `nn.DataParallel`): each replica gets its row of the per-task
    counts, and the Trainer's mean of the replicas' losses is the loss of the whole batch."""
    torch.manual_seed(0)
    model = BertForMultiTaskMultiLabel(
        BertMultiTaskConfig(**TINY_BERT, tasks={**TASKS, "topic": ["day", "movie"]}, classifier_dropout=0.0)
    ).train()
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = MultiTaskTrainer(model=model, args=args)
    trainer.args._n_gpu = replicas  # what TrainingArguments counts on a machine with `replicas` GPUs
    collate = DataCollatorWithPadding(AutoTokenizer.from_pretrained(tiny_bert_dir))
    labels = [[*row, *([M, M] if index % 3 else [1, 0])] for index, row in enumerate(LABELS)]  # three tasks
    batch = collate([{**row, "labels": label} for row, label in zip(tiny_dataset(), labels)])
    counts = trainer.annotated_entries_per_task([batch], torch.device("cpu"))
    assert counts.shape == (replicas, 3)
    loss = trainer.compute_loss(SimulatedDataParallel(model, replicas), batch, num_items_in_batch=counts)
    with torch.no_grad():
        whole = model(**batch)  # each task's masked mean over the whole batch: the exact loss
    assert loss.shape == (replicas,)
    torch.testing.assert_close(loss.mean(), whole.loss)
    torch.testing.assert_close(trainer._task_loss_sum, whole.task_losses)
