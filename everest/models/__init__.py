"""The EVEREST / VideoMAE model family and its checkpoint formats.

The names below are imported on first use, so that light submodules (`presets`) load without torch.
"""

from everest.lazy import lazy_getattr

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
__getattr__ = lazy_getattr(__name__, _EXPORTS)
