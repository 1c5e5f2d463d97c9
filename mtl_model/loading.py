"""Building the model from any encoder checkpoint (or one of ours, its options kept but those the user gave),
refusing what would train a random or wrong encoder, and making saved models load with remote code."""

import logging

from transformers import AutoConfig, PreTrainedConfig
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_MAPPING,
)

from .arguments import CHUNK_FLAGS
from .batching import Chunking, check_reads_chunks
from .configuration_mtl import (
    LEGACY_MODEL_TYPES,
    TRAINING,
    BertMultiTaskConfig,
    MultiTaskConfig,
    model_options,
    option_flag,
)
from .errors import ArgumentError, describe_labels
from .modeling_mtl import HEAD_MODULES, BertForMultiTaskMultiLabel, EncoderForMultiTaskMultiLabel, has_pooler

logger = logging.getLogger(__name__)

# The encoder configs' names for the dropout on attention probabilities (BERT's family and DeBERTa, ELECTRA,
# MPNet; ModernBERT and DistilBERT).
ATTENTION_DROPOUT_FIELDS = ("attention_probs_dropout_prob", "attention_dropout")
MODEL_CLASSES = {BertMultiTaskConfig: BertForMultiTaskMultiLabel, MultiTaskConfig: EncoderForMultiTaskMultiLabel}
# Checkpoint weights that are the encoder's but that no run of ours needs: a pooler we did not build.
POOLER_PREFIX = "pooler."
# What says how a text longer than one chunk is read: whether in chunks, and how the chunks are.
CHUNK_OPTIONS = ("long_documents", *CHUNK_FLAGS)


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
    options: dict | None = None,
    *,
    training: bool = False,
    cache_dir: str | None = None,
    attention_dropout: float | None = None,
) -> MultiTaskConfig:
    """The model's config. `options`: the model options the user gave (`ModelArguments.given_options`; a
    `pos_weight` computed from the training data, a `label_hierarchy` read from its file).

    A model of ours keeps every option it was saved with but those given, and an option that acts in training only
    (pooling, the losses, the hierarchy…) may differ from its saved value only when this run trains (`training`).
    A new model takes `options` over the config's defaults, from the encoder checkpoint's config (with
    `attention_dropout`, when given, as its dropout on the attention probabilities).
    """
    base, options = load_config(model_name_or_path, cache_dir), options or {}
    where = f"--model_name_or_path {model_name_or_path}"
    if isinstance(base, MultiTaskConfig):
        check_same_tasks(base.tasks, tasks, where)
        config = with_options(base, options, training, where)
        set_attention_dropout(config.encoder, attention_dropout)
    else:
        set_attention_dropout(base, attention_dropout)
        try:
            config = config_class_for(base.model_type)(encoder=base, tasks=tasks, **options)
        except ValueError as error:
            raise ArgumentError(f"the model options do not fit together: {error}") from None
    if config.pooling == "pooler" and not has_pooler(config):
        encoder_type = config.encoder.model_type
        raise ArgumentError(f"--pooling pooler: the {encoder_type} encoder has no pooler; use mean or cls")
    return config


def text_chunking(model_args, data_args, tasks: dict[str, list[str]], given: set[str], training: bool, tokenizer):
    """How the run reads a text longer than one chunk (`Chunking`), None where its model truncates: as the model's
    options say (those given over a saved model's own), in chunks of --max_seq_length tokens when it trains, of the
    model's own chunk length when it only predicts (its own stride too, unless trained again at another length).
    Refused by flag before any text is tokenized: text pairs, another --max_seq_length than the model's chunks,
    chunks too short for any text, a stride that leaves no new token to a chunk, a Python tokenizer; chunk flags
    given to a truncating run are named in the log."""
    where, options = model_args.model_name_or_path, model_args.given_options(tasks, given)

    def config_with(names: tuple[str, ...]):
        given_here = {name: value for name, value in options.items() if name in names}
        return build_config(where, tasks, given_here, training=training, cache_dir=model_args.cache_dir)

    # Whether it chunks first: the chunk options of a run that truncates are not used, so not checked either.
    if config_with(("long_documents",)).long_documents != "chunk":
        unused = [f"--{flag}" for flag in CHUNK_FLAGS if flag in given]
        if unused:
            logger.warning("%s: not used, the model truncates texts (--long_documents truncate)", ", ".join(unused))
        return None
    config = config_with(CHUNK_OPTIONS)
    if data_args.text_pair_column_name:
        raise ArgumentError("--text_pair_column_name: text pairs are not read in chunks (--long_documents chunk); "
                            "give one text column, or --long_documents truncate")  # fmt: skip
    # A plain encoder predicting untrained (no chunk length of its own yet) reads chunks of the flag's length.
    length = data_args.max_seq_length if training or config.chunk_length is None else config.chunk_length
    if "max_seq_length" in given and data_args.max_seq_length != length:
        raise ArgumentError(f"--max_seq_length {data_args.max_seq_length}: --model_name_or_path {where} reads texts "
                            f"in chunks of {length} tokens, as it was trained; leave the flag out, or train again "
                            "(--do_train)")  # fmt: skip
    # A saved stride fits its own chunk length: trained again at another, the default stride unless one is given.
    stride = config.chunk_stride if "chunk_stride" in given or length == config.chunk_length else None
    chunking = Chunking.of({**vars(config), "chunk_length": length, "chunk_stride": stride})
    if config.chunk_length is not None and stride is None and config.chunk_stride is not None:
        logger.warning("--model_name_or_path %s: its stride of %d tokens was for its chunks of %d; chunks of %d "
                       "overlap by the default, %d tokens, unless --chunk_stride says otherwise", where,
                       config.chunk_stride, config.chunk_length, length, chunking.stride)  # fmt: skip
    check_chunks_read_text(chunking, tokenizer)
    return chunking


def check_chunks_read_text(chunking: Chunking, tokenizer) -> None:
    """Each chunk reads a token of text the one before did not, through the tokenizer's own overflow."""
    special = tokenizer.num_special_tokens_to_add(pair=False)
    room = chunking.length - special
    if room < 1:
        raise ArgumentError(f"--max_seq_length {chunking.length} (the chunk length): a chunk of {chunking.length} "
                            f"tokens holds no text beside the tokenizer's {special} special tokens")  # fmt: skip
    if chunking.stride >= room:
        raise ArgumentError(f"--chunk_stride {chunking.stride} must be below the chunk length {chunking.length} "
                            f"minus the tokenizer's special tokens, {room}: each chunk must read a token the one "
                            "before did not")  # fmt: skip
    try:
        check_reads_chunks(tokenizer)
    except ValueError as error:
        raise ArgumentError(
            f"--long_documents chunk: {error}; give a fast one with --tokenizer_name, or --long_documents truncate"
        ) from None


def check_same_tasks(saved: dict[str, list[str]], tasks: dict[str, list[str]], where: str) -> None:
    """A model of ours is reused with exactly its own tasks, in its own order."""
    if saved == tasks and list(saved) != list(tasks):
        # Dict equality ignores order; reusing this config would pair each head with another task's labels.
        raise ArgumentError(
            f"{where} holds the tasks {list(saved)} in this order; give them in that order (--task_columns / "
            f"--wide_tasks), not as {list(tasks)}"
        )
    if saved != tasks:
        # Its heads are shaped for its own labels: loading them would stop on a size mismatch, or, at equal sizes,
        # score other labels. Fine-tuning on new labels with fresh heads is not built yet.
        raise ArgumentError(
            f"{where} is a model of this recipe with other label sets ({task_difference(saved, tasks)}); give its "
            "label sets with --labels_file, or train from the encoder checkpoint it started from"
        )


def with_options(saved: MultiTaskConfig, options: dict, training: bool, where: str) -> MultiTaskConfig:
    """A saved config with the options given over its own values, checked as a config built in Python is (the
    same `__post_init__`); without training, a training option given with another value than the saved one is an
    error naming both."""
    try:
        config = type(saved).from_dict({**saved.to_dict(), **options})
    except ValueError as error:
        raise ArgumentError(f"{where}: the model options do not fit together: {error}") from None
    for declared in model_options():
        name = declared.name
        if training or name not in options or declared.metadata["applies"] != TRAINING:
            continue
        if getattr(config, name) != getattr(saved, name):
            raise ArgumentError(
                f"--{option_flag(declared) or name} {options[name]!r}: {where} was trained with {name}="
                f"{getattr(saved, name)!r}; an option of training changes only by training again (--do_train)"
            )
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
    enable_remote_code(model)
    return model


def check_encoder_loaded(model: EncoderForMultiTaskMultiLabel, loading_info: dict, model_name_or_path: str) -> None:
    """Stop before training when an encoder weight was initialised at random (not in the checkpoint) or a
    checkpoint's encoder weight went unused (another architecture or size than its config says). Fresh heads, a
    pooler we do not build and the checkpoint's own heads (a masked-LM head, say) are expected."""
    prefix = f"{model.base_model_prefix}."
    # A checkpoint's unused encoder weights come back under our prefix, or, from a base-model checkpoint (a
    # `BertModel`'s weights carry no `bert.`), under the encoder's own module names (`encoder.layer.2.…`).
    encoder_modules = set(model.base_model._modules)

    def is_encoders(key: str) -> bool:
        ours = key.startswith(prefix) or key.split(".")[0] in encoder_modules
        return ours and not key.removeprefix(prefix).startswith(POOLER_PREFIX)

    problems = {
        "newly initialised": [key for key in loading_info["missing_keys"] if not key.startswith(HEAD_MODULES)],
        "in the checkpoint but unused": [key for key in loading_info["unexpected_keys"] if is_encoders(key)],
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
