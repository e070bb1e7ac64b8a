"""Video data: preparation into litdata shards, streaming loaders, sampling and transforms.

    build_dataloader(cfg, split)   -> batches {"video": uint8 [B, F, S, S, 3], "label", "index"}
    to_model_input(video, ...)     -> normalised float [B, 3, F, S, S] on the device
    prepare_dataset(videos, out)   -> shards (also `python launch/prepare_data.py`)

The three are imported on first use, so that light submodules (annotations, codec, prepare's
command line) load without torch and litdata.
"""

from everest.lazy import lazy_getattr

_EXPORTS = {"build_dataloader": "loader", "prepare_dataset": "prepare", "to_model_input": "transforms"}

__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
