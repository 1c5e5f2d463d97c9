"""Multi-task, multi-label text classification on any transformer encoder with the Hugging Face Trainer."""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .configuration_mtl import BertMultiTaskConfig, MultiTaskConfig
from .modeling_mtl import BertForMultiTaskMultiLabel, EncoderForMultiTaskMultiLabel

# Our configs by their class's model type, for code that builds them by name; saved models carry `auto_map`.
for config_class, model_class in (
    (BertMultiTaskConfig, BertForMultiTaskMultiLabel),
    (MultiTaskConfig, EncoderForMultiTaskMultiLabel),
):
    AutoConfig.register(config_class.model_type, config_class)
    AutoModel.register(config_class, model_class)
    AutoModelForSequenceClassification.register(config_class, model_class)

__all__ = ["BertForMultiTaskMultiLabel", "BertMultiTaskConfig", "EncoderForMultiTaskMultiLabel", "MultiTaskConfig"]
