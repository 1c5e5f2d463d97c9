"""Building the model from any BERT checkpoint (or one of ours) and making saved models load with remote code."""

import dataclasses
import json
import logging
import os
import shutil

import torch
from transformers import AutoConfig, BertConfig
from transformers.trainer import OPTIMIZER_NAME, TRAINER_STATE_NAME
from transformers.trainer_utils import sort_checkpoints

from .arguments import ArgumentError
from .configuration_mtl import BertMultiTaskConfig
from .modeling_mtl import BertForMultiTaskMultiLabel

logger = logging.getLogger(__name__)

# Fields that describe the task layout: taken from our arguments, never from the base checkpoint.
TASK_FIELDS = {"id2label", "label2id", "problem_type"}
# Fields that fix the encoder's weight shapes: a checkpoint to resume from must agree on all of them.
SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


def trained_tasks(model_name_or_path: str, cache_dir: str | None = None) -> dict[str, list[str]] | None:
    """The tasks of a model trained with this recipe, or None for a plain BERT checkpoint."""
    config = AutoConfig.from_pretrained(model_name_or_path, cache_dir=cache_dir)
    return config.tasks if isinstance(config, BertMultiTaskConfig) else None


def build_config(
    model_name_or_path: str,
    tasks: dict[str, list[str]],
    pooling: str,
    task_weights: dict[str, float] | None = None,
    classifier_dropout: float | None = None,
    cache_dir: str | None = None,
    attention_dropout: float | None = None,
    **loss_options,
) -> BertMultiTaskConfig:
    """The encoder's architecture from the checkpoint (with `attention_dropout`, when given, as its dropout on the
    attention probabilities); tasks, pooling and loss options (`loss_type`, `pos_weight`, … see
    `BertMultiTaskConfig`) from us.

    A model of ours with the same tasks keeps its config and tuned thresholds; the options given here replace its own.
    """
    base = AutoConfig.from_pretrained(model_name_or_path, cache_dir=cache_dir)
    if attention_dropout is not None:
        base.attention_probs_dropout_prob = attention_dropout  # part of the architecture either way below
    if isinstance(base, BertMultiTaskConfig) and base.tasks == tasks:
        base.pooling = pooling
        base.task_weights = {**base.task_weights, **(task_weights or {})}
        base.classifier_dropout = classifier_dropout if classifier_dropout is not None else base.classifier_dropout
        for name, value in loss_options.items():
            setattr(base, name, value)
        return base
    if base.model_type not in ("bert", BertMultiTaskConfig.model_type):
        logger.warning("%s is a %r model; loading its weights into BERT layers", model_name_or_path, base.model_type)
    architecture = {
        item.name: getattr(base, item.name)
        for item in dataclasses.fields(BertConfig)
        if item.name not in TASK_FIELDS and hasattr(base, item.name)
    }
    return BertMultiTaskConfig(
        **{**architecture, "classifier_dropout": classifier_dropout},
        tasks=tasks,
        pooling=pooling,
        task_weights=task_weights,
        **loss_options,
    )


def load_model(model_name_or_path: str, config: BertMultiTaskConfig, cache_dir: str | None = None):
    """Encoder weights from the checkpoint, fresh heads (or the trained ones of a model of ours)."""
    model = BertForMultiTaskMultiLabel.from_pretrained(model_name_or_path, config=config, cache_dir=cache_dir)
    enable_remote_code(model)
    return model


def freeze_word_embeddings(model: BertForMultiTaskMultiLabel) -> None:
    """No gradient for the word-embedding matrix [vocab, hidden]: the Trainer's optimizer skips parameters that do
    not require one, so neither its dense gradient nor its two AdamW moments are ever allocated."""
    model.get_input_embeddings().weight.requires_grad_(False)


def enable_remote_code(model: BertForMultiTaskMultiLabel) -> None:
    """Make `save_pretrained` copy our two model files and write an `auto_map` for AutoConfig, AutoModel and
    AutoModelForSequenceClassification. `register_for_auto_class` records one auto class per model class, so the
    third entry is added to the config by hand."""
    model.config.register_for_auto_class("AutoConfig")
    model.register_for_auto_class("AutoModel")
    model.config.auto_map = {
        "AutoConfig": "configuration_mtl.BertMultiTaskConfig",
        "AutoModel": "modeling_mtl.BertForMultiTaskMultiLabel",
        "AutoModelForSequenceClassification": "modeling_mtl.BertForMultiTaskMultiLabel",
    }


def checkpoint_to_resume(training_args) -> str | None:
    """An explicit --resume_from_checkpoint; else, unless --overwrite_output_dir, the newest complete checkpoint that
    an interrupted run left in output_dir. Overwriting clears the old checkpoints first: left in place, a later
    resume or the Trainer's checkpoint rotation (by step number) could mistake them for the new run's."""
    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    if not os.path.isdir(training_args.output_dir):
        return None
    if training_args.overwrite_output_dir:
        with training_args.main_process_first(desc="clearing old checkpoints"):
            for checkpoint in sort_checkpoints(training_args.output_dir) if training_args.should_save else []:
                logger.info("--overwrite_output_dir: removing %s", checkpoint)
                shutil.rmtree(checkpoint)
        return None
    checkpoint = newest_complete_checkpoint(training_args.output_dir)
    if checkpoint:
        logger.info("Resuming from %s", checkpoint)
    return checkpoint


def newest_complete_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint-N in output_dir that its run finished writing. The Trainer writes trainer_state.json
    last, so a checkpoint without a readable one was cut short (a kill while saving) and is skipped."""
    for checkpoint in reversed(sort_checkpoints(output_dir)):
        if read_json(os.path.join(checkpoint, TRAINER_STATE_NAME)) is not None:
            return checkpoint
        logger.warning("Skipping %s: its trainer state is missing or unreadable (cut short while saving)", checkpoint)
    return None


def check_resumable(checkpoint: str, model: BertForMultiTaskMultiLabel) -> None:
    """Fail before training when `checkpoint` is not this model with these tasks and these trained parameters,
    naming the difference, instead of a shape error from deep inside the Trainer's weight or optimizer loading."""
    check_resumable_config(checkpoint, model.config)
    check_optimizer_covers(checkpoint, model)


def check_optimizer_covers(checkpoint: str, model: BertForMultiTaskMultiLabel) -> None:
    """The checkpoint's optimizer state must hold one entry per parameter this run trains: a run that trained its
    word embeddings cannot go on with them frozen, or the other way round."""
    path = os.path.join(checkpoint, OPTIMIZER_NAME)
    if not os.path.isfile(path):
        return  # sharded or DeepSpeed optimizer states: the Trainer loads and checks them itself
    # Memory-mapped: only the parameter groups are read here, not the moments, which the Trainer loads itself.
    groups = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["param_groups"]
    saved = sum(len(group["params"]) for group in groups)
    trained = sum(1 for parameter in model.parameters() if parameter.requires_grad)
    if saved != trained:
        raise ArgumentError(
            f"cannot resume from {checkpoint}: its optimizer state covers {saved} parameter tensors, this run trains "
            f"{trained}; was it trained with another --freeze_word_embeddings?"
        )


def check_resumable_config(checkpoint: str, config: BertMultiTaskConfig) -> None:
    saved = read_json(os.path.join(checkpoint, "config.json"))
    if saved is None:
        raise ArgumentError(f"cannot resume from {checkpoint}: no readable config.json (not a checkpoint)")
    if saved.get("model_type") != config.model_type:
        raise ArgumentError(
            f"cannot resume from {checkpoint}: it holds a {saved.get('model_type')!r} model, this run trains a "
            f"{config.model_type!r} model"
        )
    for field in SHAPE_FIELDS:
        if saved.get(field) != getattr(config, field):
            raise ArgumentError(
                f"cannot resume from {checkpoint}: its {field} is {saved.get(field)}, this run's encoder has "
                f"{getattr(config, field)}"
            )
    difference = task_difference(BertMultiTaskConfig.from_pretrained(checkpoint).tasks, config.tasks)
    if difference:
        raise ArgumentError(f"cannot resume from {checkpoint}: its tasks differ from this run's data: {difference}")


def task_difference(saved: dict[str, list[str]], current: dict[str, list[str]]) -> str | None:
    """The first difference between two task layouts, in words, or None when they are the same."""
    if list(saved) != list(current):
        return f"tasks {list(saved)} in the checkpoint, {list(current)} now"
    for task, labels in current.items():
        if saved[task] != labels:
            only_saved = [label for label in saved[task] if label not in labels]
            only_current = [label for label in labels if label not in saved[task]]
            if not only_saved and not only_current:
                return f"task {task!r}: the labels are in another order"
            return f"task {task!r}: labels only in the checkpoint {only_saved}, only in this run's data {only_current}"
    return None


def read_json(path: str):
    """A JSON file's content, or None when it is missing or cut short."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None
