"""Using a trained encoder: feature extraction and prediction on raw video files.

    load_feature_encoder(ckpt, config)  -> FeatureEncoder (also everest.load_encoder)
    extract(encoder, videos, ...)       -> VideoFeatures per video (also everest.extract)
    extract_to_folder(...)              -> .npy per video + index.csv (launch/extract_features.py)
    predict_sources(...)                -> multi-view predictions (launch/predict.py)

Submodules are imported on first use, so that `everest.inference.sampling` stays light.
"""

from __future__ import annotations

from everest.lazy import lazy_getattr

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
__getattr__ = lazy_getattr(__name__, _EXPORTS)
