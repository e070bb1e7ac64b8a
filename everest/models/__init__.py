"""The EVEREST / VideoMAE model family and its checkpoint formats."""

from everest.models.finetune import VideoClassifier
from everest.models.pretrain import PretrainAutoencoder
from everest.models.vit import PRESETS, VideoEncoder, VideoViTSpec, count_parameters, spec_for
from everest.models.weights import (
    WeightsError,
    export_huggingface,
    export_videomae,
    load_classifier,
    load_encoder,
    load_pretrain_model,
    read_weights,
    save_everest,
)

__all__ = [
    "PRESETS",
    "PretrainAutoencoder",
    "VideoClassifier",
    "VideoEncoder",
    "VideoViTSpec",
    "WeightsError",
    "count_parameters",
    "export_huggingface",
    "export_videomae",
    "load_classifier",
    "load_encoder",
    "load_pretrain_model",
    "read_weights",
    "save_everest",
    "spec_for",
]
