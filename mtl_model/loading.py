"""Building the model from any BERT checkpoint (or one of ours) and making saved models load with remote code."""

import dataclasses
import logging

from transformers import AutoConfig, BertConfig

from .configuration_mtl import BertMultiTaskConfig
from .modeling_mtl import BertForMultiTaskMultiLabel

logger = logging.getLogger(__name__)

# Fields that describe the task layout: taken from our arguments, never from the base checkpoint.
TASK_FIELDS = {"id2label", "label2id", "problem_type"}


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
    **loss_options,
) -> BertMultiTaskConfig:
    """The encoder's architecture from the checkpoint; tasks, pooling and loss options (`loss_type`, `pos_weight`,
    … see `BertMultiTaskConfig`) from us.

    A model of ours with the same tasks keeps its config and tuned thresholds; the options given here replace its own.
    """
    base = AutoConfig.from_pretrained(model_name_or_path, cache_dir=cache_dir)
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
