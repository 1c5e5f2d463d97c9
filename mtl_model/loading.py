"""Building the model from any encoder checkpoint (or one of ours), refusing what would train a random or wrong
encoder, and making saved models load with remote code."""

import json
import logging
import os
import shutil

import torch
from transformers import AutoConfig, PreTrainedConfig
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_MAPPING,
)
from transformers.trainer import OPTIMIZER_NAME, TRAINER_STATE_NAME
from transformers.trainer_utils import sort_checkpoints

from .configuration_mtl import LEGACY_MODEL_TYPES, BertMultiTaskConfig, MultiTaskConfig
from .errors import ArgumentError, describe_labels
from .modeling_mtl import BertForMultiTaskMultiLabel, EncoderForMultiTaskMultiLabel, has_pooler

logger = logging.getLogger(__name__)

# Fields that fix the encoder's weight shapes: a checkpoint to resume from must agree on all of them.
SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
# The encoder configs' names for the dropout on attention probabilities (BERT's family and DeBERTa, ELECTRA,
# MPNet; ModernBERT and DistilBERT).
ATTENTION_DROPOUT_FIELDS = ("attention_probs_dropout_prob", "attention_dropout")
MODEL_CLASSES = {BertMultiTaskConfig: BertForMultiTaskMultiLabel, MultiTaskConfig: EncoderForMultiTaskMultiLabel}
# Checkpoint weights that are the encoder's but that no run of ours needs: a pooler we did not build.
POOLER_PREFIX = "pooler."
HEADS_PREFIX = "heads."


def is_ours(config_dict: dict) -> bool:
    """Whether a saved config.json is one of this recipe's (a flat encoder config with our task fields)."""
    return "tasks" in config_dict and "thresholds" in config_dict


def config_class_for(encoder_type: str) -> type[MultiTaskConfig]:
    """BERT encoders keep their own classes (`BertForMultiTaskMultiLabel`, the name users know); others share one."""
    return BertMultiTaskConfig if LEGACY_MODEL_TYPES.get(encoder_type, encoder_type) == "bert" else MultiTaskConfig


def load_config(model_name_or_path: str, cache_dir: str | None = None) -> PreTrainedConfig:
    """A checkpoint's config: ours (`MultiTaskConfig`) for a model of this recipe, else the encoder's own, refused
    when it is no text encoder (`check_text_encoder`)."""
    try:
        config_dict, _ = PreTrainedConfig.get_config_dict(model_name_or_path, cache_dir=cache_dir)
    except OSError as error:
        raise ArgumentError(f"--model_name_or_path {model_name_or_path}: {error}") from None
    if is_ours(config_dict):
        return config_class_for(config_dict.get("model_type")).from_pretrained(model_name_or_path, cache_dir=cache_dir)
    try:
        config = AutoConfig.from_pretrained(model_name_or_path, cache_dir=cache_dir)
    except ValueError as error:  # an unknown model type
        raise ArgumentError(f"--model_name_or_path {model_name_or_path}: {error}") from None
    check_text_encoder(config, model_name_or_path)
    return config


def trained_tasks(model_name_or_path: str, cache_dir: str | None = None) -> dict[str, list[str]] | None:
    """The tasks of a model trained with this recipe, or None for a plain encoder checkpoint."""
    config = load_config(model_name_or_path, cache_dir)
    return config.tasks if isinstance(config, MultiTaskConfig) else None


def check_text_encoder(config: PreTrainedConfig, model_name_or_path: str) -> None:
    """Refuse, by name, a checkpoint without a text encoder this recipe can pool: an encoder-decoder, a decoder-only
    language model (its last-token pooling and left padding are not implemented), a vision or audio model."""
    model_type = config.model_type
    where = f"--model_name_or_path {model_name_or_path}"
    if config.is_encoder_decoder:
        raise ArgumentError(
            f"{where} is an encoder-decoder model ({model_type}); use an encoder checkpoint (BERT, RoBERTa, "
            "DeBERTa-v3, ModernBERT, XLM-R, …)"
        )
    if getattr(config, "is_decoder", False) or (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    ):
        raise ArgumentError(
            f"{where} is a decoder-only language model ({model_type}), which this recipe does not support; use an "
            "encoder checkpoint (BERT, RoBERTa, DeBERTa-v3, ModernBERT, XLM-R, …)"
        )
    if model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES or type(config) not in MODEL_MAPPING:
        raise ArgumentError(
            f"{where} is a {model_type!r} model, not a text encoder this recipe can use (one with a masked-language "
            "model in transformers: BERT, RoBERTa, DeBERTa-v2/v3, ModernBERT, XLM-R, DistilBERT, ELECTRA, MPNet, …)"
        )


def set_attention_dropout(encoder: PreTrainedConfig, value: float | None) -> None:
    """The dropout on attention probabilities, under the encoder's own field name."""
    if value is None:
        return
    field = next((name for name in ATTENTION_DROPOUT_FIELDS if hasattr(encoder, name)), None)
    if field is not None:
        setattr(encoder, field, value)
    elif value:
        raise ArgumentError(
            f"--attention_dropout {value}: the {encoder.model_type} encoder has no dropout on attention probabilities"
        )


def build_config(
    model_name_or_path: str,
    tasks: dict[str, list[str]],
    pooling: str,
    task_weights: dict[str, float] | None = None,
    classifier_dropout: float | None = None,
    cache_dir: str | None = None,
    attention_dropout: float | None = None,
    **options,
) -> MultiTaskConfig:
    """The encoder's config from the checkpoint (with `attention_dropout`, when given, as its dropout on the
    attention probabilities); tasks, pooling, loss, hierarchy and decoding options (`loss_type`, `pos_weight`,
    `label_hierarchy`, `at_least_one`, … see `MultiTaskConfig`) from us.

    A model of ours with the same tasks keeps its config and tuned thresholds; the options given here replace its own.
    """
    base = load_config(model_name_or_path, cache_dir)
    encoder = base.encoder if isinstance(base, MultiTaskConfig) else base
    set_attention_dropout(encoder, attention_dropout)
    if isinstance(base, MultiTaskConfig) and base.tasks == tasks and list(base.tasks) != list(tasks):
        # Dict equality ignores order; reusing this config would pair each head with another task's labels.
        raise ArgumentError(
            f"--model_name_or_path {model_name_or_path} holds the tasks {list(base.tasks)} in this order; give "
            f"them in that order (--task_columns / --wide_tasks), not as {list(tasks)}"
        )
    if isinstance(base, MultiTaskConfig) and base.tasks != tasks:
        # Its heads are shaped for its own labels: loading them would stop on a size mismatch, or, at equal sizes,
        # score other labels. Fine-tuning on new labels with fresh heads is not built yet.
        raise ArgumentError(
            f"--model_name_or_path {model_name_or_path} is a model of this recipe with other label sets "
            f"({task_difference(base.tasks, tasks)}); give its label sets with --labels_file, or train from the "
            "encoder checkpoint it started from"
        )
    if isinstance(base, MultiTaskConfig):
        base.pooling = pooling
        base.task_weights = {**base.task_weights, **(task_weights or {})}
        base.classifier_dropout = classifier_dropout if classifier_dropout is not None else base.classifier_dropout
        for name, value in options.items():
            setattr(base, name, value)
        config = base
    else:
        config = config_class_for(encoder.model_type)(
            encoder=encoder,
            classifier_dropout=classifier_dropout,
            tasks=tasks,
            pooling=pooling,
            task_weights=task_weights,
            **options,
        )
    if pooling == "pooler" and not has_pooler(config):
        raise ArgumentError(f"--pooling pooler: the {encoder.model_type} encoder has no pooler; use mean or cls")
    return config


def load_model(
    model_name_or_path: str,
    config: MultiTaskConfig,
    cache_dir: str | None = None,
    attn_implementation: str | None = None,
) -> EncoderForMultiTaskMultiLabel:
    """Encoder weights from the checkpoint, fresh heads (or the trained ones of a model of ours with these tasks).

    The checkpoint's encoder weights are renamed to where our model keeps its encoder (a `RobertaForMaskedLM`'s
    `roberta.*` become `encoder.*`). Every encoder weight must be found and used: see `check_encoder_loaded`.
    """
    model_class = MODEL_CLASSES[type(config)]
    saved = load_config(model_name_or_path, cache_dir)
    key_mapping = {}
    if not isinstance(saved, MultiTaskConfig):  # a model of ours already names its encoder as we do
        checkpoint_prefix = MODEL_MAPPING[type(config.encoder)].base_model_prefix
        if checkpoint_prefix != model_class.base_model_prefix:
            key_mapping[rf"^{checkpoint_prefix}\."] = f"{model_class.base_model_prefix}."
    try:
        model, loading_info = model_class.from_pretrained(
            model_name_or_path,
            config=config,
            cache_dir=cache_dir,
            key_mapping=key_mapping or None,
            attn_implementation=attn_implementation,
            output_loading_info=True,
        )
    except OSError as error:  # e.g. a config without weights
        raise ArgumentError(f"--model_name_or_path {model_name_or_path}: no weights to load ({error})") from None
    except (ValueError, ImportError) as error:
        if attn_implementation is None:
            raise
        # The encoder's own check: an unknown kernel, one the architecture lacks, or one not installed.
        raise ArgumentError(f"--attn_implementation {attn_implementation}: {error}") from None
    check_encoder_loaded(model, loading_info, model_name_or_path)
    # `from_pretrained` keeps the renamings it applied, and `save_pretrained` would undo them, writing the weights
    # back under the checkpoint's names (`roberta.*`), which our model would not find on reload. Forgetting them makes
    # it save as a model built in code does: under our names, with transformers' own per-architecture conversions.
    model._weight_conversions = None
    enable_remote_code(model)
    return model


def check_encoder_loaded(model: EncoderForMultiTaskMultiLabel, loading_info: dict, model_name_or_path: str) -> None:
    """Stop before training when an encoder weight was initialised at random (not in the checkpoint) or a
    checkpoint's encoder weight went unused (another architecture or size than its config says). Fresh heads, a
    pooler we do not build and the checkpoint's own heads (a masked-LM head, say) are expected."""
    prefix = f"{model.base_model_prefix}."
    problems = {
        "newly initialised": [key for key in loading_info["missing_keys"] if not key.startswith(HEADS_PREFIX)],
        "in the checkpoint but unused": [
            key
            for key in loading_info["unexpected_keys"]
            if key.startswith(prefix) and not key.startswith(prefix + POOLER_PREFIX)
        ],
        "of another shape in the checkpoint": [str(item) for item in loading_info["mismatched_keys"]],
    }
    pooler = prefix + POOLER_PREFIX
    if problems["newly initialised"] and all(key.startswith(pooler) for key in problems["newly initialised"]):
        raise ArgumentError(
            f"--model_name_or_path {model_name_or_path}: the checkpoint has no trained pooler (a masked-LM "
            "checkpoint, say), so --pooling pooler would start from a random one; use --pooling mean or cls"
        )
    for what, keys in problems.items():
        if keys:
            raise ArgumentError(
                f"--model_name_or_path {model_name_or_path}: {len(keys)} weights of the "
                f"{model.config.encoder.model_type} encoder are {what}, e.g. {sorted(keys)[:3]}; the checkpoint does "
                "not match its config (training would start from random weights)"
            )


def freeze_word_embeddings(model: EncoderForMultiTaskMultiLabel) -> None:
    """No gradient for the word-embedding matrix [vocab, hidden]: the Trainer's optimizer skips parameters that do
    not require one, so neither its dense gradient nor its two AdamW moments are ever allocated."""
    model.get_input_embeddings().weight.requires_grad_(False)


def enable_remote_code(model: EncoderForMultiTaskMultiLabel) -> None:
    """Make `save_pretrained` copy our two model files and write an `auto_map` for AutoConfig, AutoModel and
    AutoModelForSequenceClassification. `register_for_auto_class` records one auto class per model class, so the
    third entry is added to the config by hand."""
    model.config.register_for_auto_class("AutoConfig")
    model.register_for_auto_class("AutoModel")
    model_class = f"modeling_mtl.{type(model).__name__}"
    model.config.auto_map = {
        "AutoConfig": f"configuration_mtl.{type(model.config).__name__}",
        "AutoModel": model_class,
        "AutoModelForSequenceClassification": model_class,
    }


def check_output_dir(training_args) -> None:
    """Refuse to train into an output_dir that already holds a finished model (the final `save_model` writes
    config.json at its top level; an interrupted run has only checkpoints there and is resumed instead)."""
    finished = os.path.isfile(os.path.join(training_args.output_dir, "config.json"))
    explicit_resume = training_args.resume_from_checkpoint
    if training_args.do_train and finished and not (training_args.overwrite_output_dir or explicit_resume):
        raise ArgumentError(
            f"{training_args.output_dir} already holds a trained model; pass --overwrite_output_dir to train "
            "over it (its checkpoints are removed), or choose another --output_dir"
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
            return (
                f"task {task!r}: labels only in the checkpoint {describe_labels(only_saved)}, only in this run's "
                f"data {describe_labels(only_current)}"
            )
    return None


def read_json(path: str):
    """A JSON file's content, or None when it is missing or cut short."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None
