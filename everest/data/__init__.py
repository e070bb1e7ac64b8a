"""Video data: preparation into litdata shards, streaming loaders, sampling and transforms.

    build_dataloader(cfg, split)   -> batches {"video": uint8 [B, F, S, S, 3], "label", "index"}
    to_model_input(video, ...)     -> normalised float [B, 3, F, S, S] on the device
    prepare_dataset(videos, out)   -> shards (also `python launch/prepare_data.py`)

The three are imported on first use, so that light submodules (annotations, codec, prepare's
command line) load without torch and litdata.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "build_dataloader": "everest.data.loader",
    "prepare_dataset": "everest.data.prepare",
    "to_model_input": "everest.data.transforms",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'everest.data' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
