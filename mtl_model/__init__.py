"""Multi-task, multi-label text classification on BERT with the Hugging Face Trainer."""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .configuration_mtl import BertMultiTaskConfig
from .modeling_mtl import BertForMultiTaskMultiLabel

# Local use needs no trust_remote_code; saved models carry `auto_map` for everyone else.
AutoConfig.register(BertMultiTaskConfig.model_type, BertMultiTaskConfig)
AutoModel.register(BertMultiTaskConfig, BertForMultiTaskMultiLabel)
AutoModelForSequenceClassification.register(BertMultiTaskConfig, BertForMultiTaskMultiLabel)

__all__ = ["BertForMultiTaskMultiLabel", "BertMultiTaskConfig"]
