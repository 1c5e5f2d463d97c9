"""The output directory and resuming: refuse to train over a finished model, clear an overwritten run's checkpoints,
find the checkpoint an interrupted run left, and check that it is this run's model before the Trainer loads it."""

import json
import logging
import os
import shutil

import torch
from transformers.trainer import OPTIMIZER_NAME, TRAINER_STATE_NAME
from transformers.trainer_utils import sort_checkpoints

from .configuration_mtl import MultiTaskConfig
from .errors import ArgumentError
from .loading import is_ours, load_config, task_difference
from .modeling_mtl import EncoderForMultiTaskMultiLabel

logger = logging.getLogger(__name__)

# Fields that fix the encoder's weight shapes: a checkpoint to resume from must agree on all of them.
SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


def check_output_dir(training_args, model_name_or_path: str, saves_model: bool) -> None:
    """Refuse to train into an output_dir that already holds a finished model (the final `save_model` writes
    config.json at its top level; an interrupted run has only checkpoints there and is resumed instead), or to save
    a model changed without training (tuned thresholds, a decoding option given) over another model than itself."""
    output_dir = training_args.output_dir
    finished = os.path.isfile(os.path.join(output_dir, "config.json"))
    if not finished or training_args.overwrite_output_dir:
        return
    if training_args.do_train and not training_args.resume_from_checkpoint:
        raise ArgumentError(
            f"{output_dir} already holds a trained model; pass --overwrite_output_dir to train over it (its "
            "checkpoints are removed), or choose another --output_dir"
        )
    its_own_folder = os.path.isdir(model_name_or_path) and os.path.samefile(output_dir, model_name_or_path)
    if not training_args.do_train and saves_model and not its_own_folder:
        raise ArgumentError(
            f"{output_dir} holds another model than --model_name_or_path {model_name_or_path}, and this run saves "
            "the model it changes there; choose another --output_dir, or pass --overwrite_output_dir"
        )


def remove_old_checkpoints(training_args) -> None:
    """--overwrite_output_dir: delete the checkpoints an earlier run left in output_dir. Left in place, a later resume
    or the Trainer's checkpoint rotation (by step number) could mistake them for the new run's."""
    if not training_args.overwrite_output_dir or not os.path.isdir(training_args.output_dir):
        return
    with training_args.main_process_first(desc="clearing old checkpoints"):
        for checkpoint in sort_checkpoints(training_args.output_dir) if training_args.should_save else []:
            logger.info("--overwrite_output_dir: removing %s", checkpoint)
            shutil.rmtree(checkpoint)


def checkpoint_to_resume(training_args) -> str | None:
    """An explicit --resume_from_checkpoint; else, unless --overwrite_output_dir, the newest complete checkpoint that
    an interrupted run left in output_dir."""
    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    if training_args.overwrite_output_dir or not os.path.isdir(training_args.output_dir):
        return None
    checkpoint = newest_complete_checkpoint(training_args.output_dir)
    if checkpoint:
        logger.info("Resuming from %s", checkpoint)
    return checkpoint


def newest_complete_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint-N in output_dir that its run finished writing. The Trainer writes trainer_state.json
    last, so a checkpoint without a readable one was cut short (a kill while saving) and is skipped. Not
    `transformers.trainer_utils.get_last_checkpoint`: it returns the newest checkpoint only, complete or not, and a
    cut-short newest one must fall back to the one before it; `sort_checkpoints` gives the library's order."""
    for checkpoint in reversed(sort_checkpoints(output_dir)):
        if read_json(os.path.join(checkpoint, TRAINER_STATE_NAME)) is not None:
            return checkpoint
        logger.warning("Skipping %s: its trainer state is missing or unreadable (cut short while saving)", checkpoint)
    return None


def check_resumable(checkpoint: str, model: EncoderForMultiTaskMultiLabel) -> None:
    """Fail before training when `checkpoint` is not this model with these tasks and these trained parameters,
    naming the difference, instead of a shape error from deep inside the Trainer's weight or optimizer loading."""
    check_resumable_config(checkpoint, model.config)
    check_optimizer_covers(checkpoint, model)


def check_optimizer_covers(checkpoint: str, model: EncoderForMultiTaskMultiLabel) -> None:
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


def check_resumable_config(checkpoint: str, config: MultiTaskConfig) -> None:
    saved_dict = read_json(os.path.join(checkpoint, "config.json"))
    if saved_dict is None:
        raise ArgumentError(f"cannot resume from {checkpoint}: no readable config.json (not a checkpoint)")
    if not is_ours(saved_dict):
        raise ArgumentError(f"cannot resume from {checkpoint}: its config has no tasks (not a model of this recipe)")
    saved = load_config(checkpoint)
    if saved.encoder.model_type != config.encoder.model_type:
        raise ArgumentError(
            f"cannot resume from {checkpoint}: it holds a {saved.encoder.model_type!r} encoder, this run trains a "
            f"{config.encoder.model_type!r} encoder"
        )
    for field in SHAPE_FIELDS:
        if getattr(saved.encoder, field, None) != getattr(config.encoder, field, None):
            raise ArgumentError(
                f"cannot resume from {checkpoint}: its {field} is {getattr(saved.encoder, field, None)}, this run's "
                f"encoder has {getattr(config.encoder, field, None)}"
            )
    difference = task_difference(saved.tasks, config.tasks)
    if difference:
        raise ArgumentError(f"cannot resume from {checkpoint}: its tasks differ from this run's data: {difference}")


def read_json(path: str):
    """A JSON file's content, or None when it is missing or cut short."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None
