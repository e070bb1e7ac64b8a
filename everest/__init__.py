"""everest: DeepSpeed-first training of EVEREST masked video autoencoders.

    encoder = everest.load_encoder(checkpoint, config=None)   # any checkpoint format
    for video in everest.extract(encoder, "my_videos/"):      # folder, glob, list file, shards
        video.path, video.features, video.times                # [windows, D] numpy, seconds

Both are imported on first use (nothing heavy happens on `import everest`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["extract", "load_encoder"]


def __getattr__(name: str) -> Any:
    if name == "load_encoder":
        from everest.inference.encoder import load_feature_encoder

        return load_feature_encoder
    if name == "extract":
        from everest.inference.extract import extract

        return extract
    raise AttributeError(f"module 'everest' has no attribute {name!r}")
