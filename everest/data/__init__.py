"""Video data: preparation into litdata shards, streaming loaders, sampling and transforms.

    build_dataloader(cfg, split)   -> batches {"video": uint8 [B, F, S, S, 3], "label", "index"}
    to_model_input(video, ...)     -> normalised float [B, 3, F, S, S] on the device
    prepare_dataset(videos, out)   -> shards (also `python launch/prepare_data.py`)
"""

from everest.data.loader import build_dataloader
from everest.data.prepare import prepare_dataset
from everest.data.transforms import to_model_input

__all__ = ["build_dataloader", "prepare_dataset", "to_model_input"]
