"""Multi-task, multi-label text classification on any transformer encoder with the Hugging Face Trainer.

The model classes load on first use (PEP 562's module `__getattr__`): importing the ONNX runtime
(`mtl_model.onnx_classifier`) runs this file first, and a deploy environment has neither torch nor transformers.
"""

import importlib

# Public name → the module that defines it.
_PUBLIC = {
    "BertMultiTaskConfig": "configuration_mtl",
    "MultiTaskConfig": "configuration_mtl",
    "BertForMultiTaskMultiLabel": "modeling_mtl",
    "EncoderForMultiTaskMultiLabel": "modeling_mtl",
}


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    register_auto_classes()
    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)


def register_auto_classes() -> None:
    """Our configs by their class's model type, and our models for them, in transformers' Auto classes (for code
    that builds them by name; saved models carry `auto_map`). Once: a second registration is refused."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    from .configuration_mtl import BertMultiTaskConfig, MultiTaskConfig
    from .modeling_mtl import BertForMultiTaskMultiLabel, EncoderForMultiTaskMultiLabel

    for config_class, model_class in (
        (BertMultiTaskConfig, BertForMultiTaskMultiLabel),
        (MultiTaskConfig, EncoderForMultiTaskMultiLabel),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoModelForSequenceClassification.register(config_class, model_class, exist_ok=True)


__all__ = list(_PUBLIC)
