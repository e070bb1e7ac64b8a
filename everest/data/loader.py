"""`build_dataloader`: a config and a split -> litdata StreamingDataLoader of clip batches.

Batches are dicts:
    "video": uint8 [B, F, S, S, 3]; with multiview, [B, V, F, S, S, 3] where
             V = test_num_segment * test_num_crop and view v = segment * test_num_crop + crop
    "label": int64 [B] (class index; -1 when unlabeled) or float32 [B, D] (regression targets)
    "index": int64 [B]: the video's line in the annotation file (its id in everest_index.json)

Training loaders shuffle (seeded by training.seed, a new order every epoch) and give every rank
the same number of full batches (litdata's drop_last: up to world_size * batch_size - 1 clips
sit out each epoch, a different set every epoch); evaluation loaders keep every clip exactly once
(the last rank may get more batches). `state_dict()` / `load_state_dict()` resume mid-epoch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from litdata import StreamingDataLoader

from everest.config import Config, ConfigError
from everest.data.clips import ClipMaker, Temporal
from everest.data.dataset import VideoClipDataset
from everest.data.remote import check_remote_dataset, is_remote, storage_options
from everest.data.transforms import ClipRandAugment, ClipRandomErasing

SPLITS = ("train", "val", "test", "probe")  # probe: the representation probe's labelled clips


class VideoDataLoader(StreamingDataLoader):
    """StreamingDataLoader plus `set_epoch`, so that the shuffle and the augmentations follow the
    trainer's epoch count (also after a resume at an epoch boundary)."""

    def set_epoch(self, epoch: int) -> None:
        if not self.restore:  # a mid-epoch state_dict, once loaded, decides the epoch itself
            self.current_epoch = epoch  # __iter__ adds one: litdata counts epochs from 1


def _dataset_location(cfg: Config, split: str) -> str:
    key = "probe_train_dir" if split == "probe" else f"{split}_optimized_dir"
    location = getattr(cfg.data, key)
    if location is None:
        if not cfg.has_split(split):
            raise ConfigError(
                f"data.{key} is not set: point it at a folder (or s3:// URL) prepared with "
                "`python launch/prepare_data.py`, or set data.synthetic=true for the built-in videos"
            )
        from everest.data.builtin.synthetic import ensure_builtin_dataset

        labels = "speed" if cfg.model.task_type == "regression" else "motion"
        return str(ensure_builtin_dataset(cfg.data, labels=labels) / split)
    if is_remote(location):
        check_remote_dataset(location, cfg.data.cloud_type)
        return location
    path = Path(location).expanduser()
    if not (path / "index.json").is_file():
        raise ConfigError(
            f"data.{key}={location}: no prepared dataset there (index.json missing); "
            "create it with `python launch/prepare_data.py --videos ... --output ...`"
        )
    try:
        json.loads((path / "index.json").read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"data.{key}={location}: index.json cannot be read ({err}); "
            "prepare the dataset again with `python launch/prepare_data.py ... --overwrite`"
        ) from None
    return str(path.resolve())


def clip_maker(cfg: Config, split: str, multiview: bool) -> ClipMaker:
    """The sampling/transform recipe of a split (see ClipMaker for the modes)."""
    t, a, m, d = cfg.training, cfg.augmentation, cfg.model, cfg.data
    train = split == "train" and not multiview
    return ClipMaker(
        mode="multiview" if multiview else ("train" if train else "eval"),
        temporal=Temporal.of(t),
        size=m.input_size,
        seed=t.seed,
        short_side=a.short_side_size,
        train_crop=a.train_crop,
        crop_scales=tuple(a.crop_scales),
        flip=a.horizontal_flip,
        rand_augment=ClipRandAugment(a.rand_augment, d.normalize_mean) if train and a.rand_augment else None,
        random_erasing=ClipRandomErasing(a.reprob, d.normalize_mean, d.normalize_std)
        if train and a.reprob > 0
        else None,
        segments=t.test_num_segment if multiview else 1,
        crops=t.test_num_crop if multiview else 1,
        label_target="regression" if m.task_type == "regression" else "raw",
    )


def _check_world() -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise RuntimeError(
            f"WORLD_SIZE={world} but torch.distributed is not initialised: initialise it before "
            "build_dataloader so that every rank reads its own shard"
        )


def build_dataloader(
    cfg: Config, split: str, *, shuffle: bool | None = None, multiview: bool | None = None
) -> VideoDataLoader:
    """The loader of `split` ('train', 'val', 'test' or 'probe') for this rank; see the module docstring
    for the batch format. `shuffle` defaults to True for 'train' only; `multiview` (test-time
    segments x crops) to True for 'test' only."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    _check_world()
    multiview = split == "test" if multiview is None else multiview
    shuffle = split == "train" if shuffle is None else shuffle
    location = _dataset_location(cfg, split)
    d, t = cfg.data, cfg.training
    dataset = VideoClipDataset(
        location,
        clip_maker(cfg, split, multiview),
        cache_dir=str(Path(d.cache_dir).expanduser().resolve()) if is_remote(location) else None,
        max_cache_size=d.max_cache_size,
        storage_options=storage_options(d.cloud_type) if is_remote(location) else None,
        shuffle=shuffle,
        drop_last=split == "train",
        seed=t.seed,
        subsample=float(d.subset_ratio or 1.0),
    )
    batch_size = t.batch_size if split == "train" else (t.val_batch_size or t.batch_size)
    return VideoDataLoader(
        dataset, batch_size=batch_size, num_workers=t.num_workers, pin_memory=t.pin_memory and torch.cuda.is_available()
    )
