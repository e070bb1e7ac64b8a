"""Using a trained encoder: feature extraction and prediction on raw video files.

    load_feature_encoder(ckpt, config)  -> FeatureEncoder (also everest.load_encoder)
    extract(encoder, videos, ...)       -> VideoFeatures per video (also everest.extract)
    extract_to_folder(...)              -> .npy per video + index.csv (launch/extract_features.py)
    predict_sources(...)                -> multi-view predictions (launch/predict.py)

Submodules are imported on first use, so that `everest.inference.sampling` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FeatureEncoder": "encoder",
    "load_feature_encoder": "encoder",
    "VideoFeatures": "extract",
    "Skipped": "extract",
    "extract": "extract",
    "extract_to_folder": "extract",
    "iter_features": "extract",
    "find_videos": "sources",
    "VideoSource": "sources",
    "Sampling": "sampling",
    "Span": "sampling",
    "predict_sources": "predict",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'everest.inference' has no attribute {name!r}")
    return getattr(importlib.import_module(f"everest.inference.{_EXPORTS[name]}"), name)
