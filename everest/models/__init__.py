"""The EVEREST / VideoMAE model family and its checkpoint formats.

The names below are imported on first use, so that light submodules (`presets`) load without torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "PRESETS": "presets",
    "PretrainAutoencoder": "pretrain",
    "VideoClassifier": "finetune",
    "VideoEncoder": "vit",
    "VideoViTSpec": "vit",
    "count_parameters": "vit",
    "spec_for": "vit",
    "WeightsError": "weights",
    "export_huggingface": "weights",
    "export_videomae": "weights",
    "load_classifier": "weights",
    "load_encoder": "weights",
    "load_pretrain_model": "weights",
    "read_weights": "weights",
    "save_everest": "weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'everest.models' has no attribute {name!r}")
    return getattr(import_module(f"everest.models.{_EXPORTS[name]}"), name)
