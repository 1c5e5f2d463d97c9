"""The Trainer subclass: an exact multi-task loss under gradient accumulation and data parallelism, per-task loss
logging, a learning rate of its own for the heads, an exponential moving average of the weights, length-grouped
batches for training and length-sorted ones for evaluation and prediction, prediction through ONNX Runtime, training
arguments saved as JSON, our own model card, and freed memory handed back to the system while training on the CPU."""

import ctypes
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import SequentialSampler
from transformers import EvalPrediction, Trainer, TrainerCallback
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_pt_utils import LengthGroupedSampler, nested_gather
from transformers.trainer_utils import PredictionOutput, speed_metrics

from .batching import CHUNK_TEXT, longest_first
from .configuration_mtl import IGNORE_INDEX
from .data import token_lengths
from .errors import ArgumentError
from .metrics import tune_thresholds
from .model_card import CardFacts, build_model_card
from .modeling_mtl import HEAD_MODULES
from .onnx_classifier import ONNX_EVAL_BATCH_SIZE

logger = logging.getLogger(__name__)
# The weight average's state in a checkpoint, beside the optimizer's.
WEIGHT_AVERAGE_NAME = "weight_average.pt"


def libc_malloc_trim():
    """glibc's malloc_trim among the symbols already loaded into the process (no search for the library file), or
    None."""
    return getattr(ctypes.CDLL(None), "malloc_trim", None) if os.name == "posix" else None


class ReleaseFreedMemory(TrainerCallback):
    """Every `every` optimizer steps, glibc's `malloc_trim(0)`: freed heap pages go back to the system.

    Written by hand because neither torch nor the Trainer offers it. Each batch has its own shape, so its tensors
    have their own sizes; glibc keeps the blocks they free in its heap, split and merged, and on the CPU the
    process grows from step to step although live memory does not (measured in BENCHMARKS.md, "Peak RSS").
    """

    def __init__(self, malloc_trim, every: int):
        self.malloc_trim, self.every = malloc_trim, every

    @classmethod
    def for_training(cls, args) -> "ReleaseFreedMemory | None":
        """The callback when training runs on the CPU under glibc and `args.malloc_trim_steps` > 0, else None."""
        every = getattr(args, "malloc_trim_steps", 0)
        if not every or args.device.type != "cpu":
            return None
        malloc_trim = libc_malloc_trim()
        return cls(malloc_trim, every) if malloc_trim is not None else None

    def __getstate__(self) -> dict:
        # A ctypes function does not pickle, and Ray Tune pickles the whole trainer: looked up again where unpickled.
        return {"every": self.every}

    def __setstate__(self, state: dict) -> None:
        self.malloc_trim, self.every = libc_malloc_trim(), state["every"]

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self.malloc_trim(0)


class WeightAverage(TrainerCallback):
    """An exponential moving average of the model's weights (`--ema_decay`), updated after every optimizer step:
    torch's `AveragedModel` with its EMA update, W_avg ← decay · W_avg + (1 - decay) · W, starting at the first
    step's weights."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.average.update_parameters(model)

    def copy_to(self, model: torch.nn.Module) -> None:
        """The averaged weights into `model` (the average of nothing, before the first step, is the model itself)."""
        if self.average.n_averaged > 0:
            with torch.no_grad():
                for averaged, parameter in zip(self.average.module.parameters(), model.parameters()):
                    parameter.copy_(averaged)

    @contextmanager
    def applied(self, model: torch.nn.Module):
        """`model` with the averaged weights inside the block, its own weights back after it."""
        own = [parameter.detach().clone() for parameter in model.parameters()]
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for saved, parameter in zip(own, model.parameters()):
                    parameter.copy_(saved)

    def save(self, checkpoint: str) -> None:
        torch.save(self.average.state_dict(), Path(checkpoint) / WEIGHT_AVERAGE_NAME)

    def load(self, checkpoint: str) -> None:
        path = Path(checkpoint) / WEIGHT_AVERAGE_NAME
        if not path.is_file():
            # A checkpoint of a run without --ema_decay: the average starts again from the weights resumed.
            logger.warning("%s has no weight average; it starts again from the checkpoint's weights", checkpoint)
            return
        self.average.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


class MultiTaskTrainer(Trainer):
    """`Trainer` whose loss is Σ_task weight_task · (BCE summed over the task's annotated entries in the whole
    accumulated, all-process batch) / (that task's annotated entry count), independent of how the batch is split.

    The Trainer's own `num_items_in_batch` is a single count for all tasks, so this class counts per task in
    `get_batch_samples` and passes the counts to the model, and says the loss is already scaled for accumulation.
    """

    loss_is_scaled_for_ga = True

    def __init__(self, *args, head_learning_rate: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.n_gpu > 1 and getattr(self.model.config, "long_documents", None) == "chunk":
            # `nn.DataParallel` splits chunk tensors by chunk and labels by text, so a text's chunks would be pooled
            # on several replicas, against another replica's labels.
            raise ArgumentError(
                f"--long_documents chunk: this process sees {self.args.n_gpu} GPUs, which the Trainer would share "
                "out as nn.DataParallel, splitting texts' chunks; launch one process per GPU (accelerate launch or "
                "torchrun), or show this one a single GPU (CUDA_VISIBLE_DEVICES=0)"
            )
        release = ReleaseFreedMemory.for_training(self.args)
        if release is not None:
            self.add_callback(release)
        self.head_learning_rate = head_learning_rate
        self.weight_average = None
        if getattr(self.args, "ema_decay", None) is not None:
            self.weight_average = WeightAverage(self.model, self.args.ema_decay)
            self.add_callback(self.weight_average)
        # What our model card says beyond the trainer's own state; set when the run's results are in. Until then
        # `create_model_card` (and so `push_to_hub`) writes no card, and never the Trainer's generic one.
        self.card_facts: CardFacts | None = None
        self._task_loss_sum = None  # [num_tasks], summed since the last log
        self._task_loss_logged_step = 0
        # Under a hyper-parameter search (`mtl_model.search`): what a trial's settings set, and the trial running.
        self.trial_setup = None
        self.current_trial = None

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the task heads in their own parameter groups at `head_learning_rate`.

        Fresh heads start from nothing while the encoder only needs nudging; at an encoder-sized learning rate the
        heads of rare labels barely leave their prior within an epoch. The schedule scales every group alike.
        """
        if self.optimizer is None and self.head_learning_rate is not None:
            model = model if model is not None else self.model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            decay = set(self.get_decay_parameter_names(model))
            groups = []
            for is_head in (False, True):
                for decays in (True, False):
                    params = [
                        parameter
                        for name, parameter in model.named_parameters()
                        if parameter.requires_grad
                        and name.startswith(HEAD_MODULES) == is_head
                        and (name in decay) == decays
                    ]
                    group = {"params": params, "weight_decay": self.args.weight_decay if decays else 0.0}
                    groups.append({**group, "lr": self.head_learning_rate} if is_head else group)
            self.optimizer = optimizer_cls([group for group in groups if group["params"]], **optimizer_kwargs)
        return super().create_optimizer(model)

    def _get_train_sampler(self, train_dataset=None):
        """The stock length-grouped sampler, given the lengths stored at tokenization: the stock path would read
        every row's input_ids first (the dataset it receives has lost the length column to column pruning)."""
        if self.args.train_sampling_strategy != "group_by_length" or not hasattr(self.train_dataset, "column_names"):
            return super()._get_train_sampler(train_dataset)
        batch_size = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return LengthGroupedSampler(batch_size, lengths=token_lengths(self.train_dataset).tolist())

    def _get_eval_sampler(self, eval_dataset):
        """Rows in order. `evaluate` and `predict` sort them by length themselves; the stock sampler under
        group_by_length would shuffle them and so the returned predictions."""
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def train(self, *args, **kwargs):
        """The Trainer's training; with `--ema_decay`, the model holds the weights' average afterwards, so that
        tuning, evaluation, prediction and the saved model all use it."""
        output = super().train(*args, **kwargs)
        if self.weight_average is not None:
            self.weight_average.copy_to(self.model)
        return output

    def _hp_search_setup(self, trial) -> None:
        """The Trainer's start of a search trial, which sets the trial's TrainingArguments fields; here also the
        heads' learning rate, ours (the model options reach the model through `model_init`). A Ray trial is the dict
        of every entry sampled, on which the Trainer would set (or warn of) each key: it gets the fields alone."""
        if trial is not None and self.trial_setup is not None:
            self.current_trial = trial
            self.head_learning_rate = self.trial_setup.head_learning_rate(trial)
            if isinstance(trial, dict):
                trial = self.trial_setup.training_arguments(trial)
        super()._hp_search_setup(trial)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.weight_average is not None and self.args.should_save:
            self.weight_average.save(output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if self.weight_average is not None and checkpoint is not None:
            self.weight_average.load(checkpoint)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Evaluation over the rows sorted longest first: batches of similar length carry little padding, and the
        metrics do not depend on the order. While training with `--ema_decay`, of the averaged weights."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if hasattr(dataset, "column_names"):
            dataset = dataset.select(longest_first(token_lengths(dataset)))
        if self.weight_average is not None and self.is_in_train:
            with self.weight_average.applied(self.model):
                return super().evaluate(dataset, ignore_keys, metric_key_prefix)
        return super().evaluate(dataset, ignore_keys, metric_key_prefix)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test"):
        """Prediction over the rows sorted longest first, returned in the dataset's order."""
        if not hasattr(test_dataset, "column_names"):
            return super().predict(test_dataset, ignore_keys, metric_key_prefix)
        order = longest_first(token_lengths(test_dataset))
        output = super().predict(test_dataset.select(order), ignore_keys, metric_key_prefix)
        in_input_order = np.argsort(order)
        return output._replace(
            predictions=output.predictions[in_input_order],
            label_ids=None if output.label_ids is None else output.label_ids[in_input_order],
        )

    def predict_onnx(
        self, test_dataset, int8: bool = False, batch_size: int = ONNX_EVAL_BATCH_SIZE, metric_key_prefix: str = "test"
    ) -> PredictionOutput:
        """`predict` through ONNX Runtime: the model exported to output_dir/onnx/ (`mtl_model.export`), the rows run
        by `OnnxMultiTaskClassifier` in length-sorted batches, the metrics and speed figures of `predict`."""
        from .export import export_onnx
        from .onnx_classifier import OnnxMultiTaskClassifier

        directory = export_onnx(self.model, self.processing_class, Path(self.args.output_dir) / "onnx", int8)
        classifier = OnnxMultiTaskClassifier.from_pretrained(directory, int8=int8)
        start = time.time()
        features = test_dataset.select_columns(classifier.input_names).to_dict()
        logits = classifier.logits_of_encoded(features, batch_size)
        labels = np.array(test_dataset["labels"]) if "labels" in test_dataset.column_names else None
        metrics = self.compute_metrics(EvalPrediction(logits, labels)) if labels is not None else {}
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in metrics.items()}
        metrics.update(speed_metrics(metric_key_prefix, start, num_samples=len(test_dataset)))
        return PredictionOutput(predictions=logits, label_ids=labels, metrics=metrics)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """The Trainer's save, with the training arguments written as JSON instead of pickled: nothing in output_dir,
        and so nothing pushed to the Hub, needs unpickling to be read. Resuming does not read them."""
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            directory = Path(output_dir if output_dir is not None else self.args.output_dir)
            (directory / TRAINING_ARGS_NAME).unlink(missing_ok=True)
            (directory / "training_args.json").write_text(self.args.to_json_string(), encoding="utf-8")

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        return batch_samples, self.annotated_entries_per_task(batch_samples, device)

    def annotated_entries_per_task(self, batch_samples: list[dict], device) -> torch.Tensor | None:
        """Annotated label entries of each task over the micro-batches of one optimizer step, summed over all
        processes: shape [num_tasks]; [n_gpu, num_tasks], the same row repeated, under `nn.DataParallel` (several
        GPUs in one process), which splits every tensor argument along its first axis, one row to each replica, as
        the stock Trainer expands its own count."""
        if not batch_samples or "labels" not in batch_samples[0]:
            return None
        slices = list(self.model.config.task_slices.values())
        counts = torch.zeros(len(slices), dtype=torch.long, device=device)
        for batch in batch_samples:
            annotated = batch["labels"].to(device) != IGNORE_INDEX  # [batch, total_labels]
            counts += torch.stack([annotated[:, task_slice].sum() for task_slice in slices])
        if self.args.world_size > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        if self.args.n_gpu > 1:
            counts = counts.unsqueeze(0).expand(self.args.n_gpu, -1)
        return counts

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        training = model.training and num_items_in_batch is not None
        if training and CHUNK_TEXT in inputs:  # a batch of chunked texts holds the activations of a budget of chunks
            inputs = {**inputs, "chunk_budget": self.args.chunk_budget or self.args.per_device_train_batch_size}
        outputs = model(**inputs, num_items_in_batch=num_items_in_batch if training else None)
        loss = outputs.loss
        # Each process and each DataParallel replica divides its part's summed loss by the whole batch's count, so
        # the exact loss is the sum of the parts; DDP averages gradients over processes, and the Trainer averages
        # the replicas' losses ([n_gpu], gathered), so scale both back up.
        replicas = max(self.args.n_gpu, 1)
        if training:
            loss = loss * self.args.world_size * replicas
        if training and outputs.task_losses is not None:
            # [num_tasks], or [n_gpu * num_tasks] gathered from the replicas
            task_losses = outputs.task_losses.detach().view(replicas, -1).sum(0) * self.args.world_size
            self._task_loss_sum = task_losses if self._task_loss_sum is None else self._task_loss_sum + task_losses
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The Trainer's, the encoder on at most --per_device_eval_batch_size chunks at once for chunked texts."""
        if CHUNK_TEXT in inputs:
            inputs = {**inputs, "chunk_budget": self.args.per_device_eval_batch_size}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add each task's training loss, averaged over the optimizer steps since the last log, to training logs."""
        steps = self.state.global_step - self._task_loss_logged_step
        if "loss" in logs and self._task_loss_sum is not None and steps > 0:
            per_task = (
                nested_gather(self._task_loss_sum, self.args.parallel_mode)
                .view(-1, len(self.model.config.tasks))
                .mean(0)
            )
            for task, value in zip(self.model.config.tasks, per_task.tolist()):
                logs[f"{task}_loss"] = round(value / steps, 4)
            self._task_loss_sum = None
            self._task_loss_logged_step = self.state.global_step
        super().log(logs, start_time)

    def tune_thresholds(
        self, output: PredictionOutput, min_positives: int = 5, objective: str = "label_f1"
    ) -> dict[str, list[float]]:
        """Per-label thresholds tuned on `output` (`predict` on the validation split, never the test split) for
        `objective` (see `metrics.tune_thresholds`), stored in the model config so that evaluation, prediction and
        the saved model use them."""
        config = self.model.config
        config.thresholds = tune_thresholds(output.predictions, output.label_ids, config, min_positives, objective)
        return config.thresholds

    def evaluation_metrics(self, output: PredictionOutput, metric_key_prefix: str = "eval") -> dict[str, float]:
        """What `evaluate` returns, from predictions already made (`predict` with the same prefix), so that a split
        tuned on, evaluated and reported on is predicted once: F1 at the thresholds now in the config, the loss and
        throughput of the prediction, and the epoch; logged as `evaluate` logs them."""
        scores = self.compute_metrics(EvalPrediction(predictions=output.predictions, label_ids=output.label_ids))
        metrics = {**output.metrics, **{f"{metric_key_prefix}_{name}": value for name, value in scores.items()}}
        if self.state.epoch is not None:
            metrics["epoch"] = self.state.epoch
        self.log(metrics)
        return metrics

    def create_model_card(self, *args, **kwargs) -> None:
        """Our card, from the model's config, the metrics this run saved (`all_results.json`, written by
        `save_metrics`) and `card_facts`, as `README.md` in the output directory."""
        if self.card_facts is None or not self.is_world_process_zero():
            return
        results = Path(self.args.output_dir) / "all_results.json"
        metrics = json.loads(results.read_text(encoding="utf-8")) if results.is_file() else {}
        card = build_model_card(self.model.config, metrics, self.args, self.card_facts)
        card.save(Path(self.args.output_dir) / "README.md")
