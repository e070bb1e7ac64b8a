"""Spatial transforms of uint8 clips [F, H, W, 3] (torch), and normalisation on the device.

Workers crop, resize, flip and augment uint8 clips; only `to_model_input` turns them into
normalised floats, on the device. Random choices come from the caller's numpy Generator, or,
for the timm/torchvision pieces that draw from the global RNGs, from `seeded_global_rngs`.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor

Box = tuple[int, int, int, int]  # top, left, height, width


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed Python's, numpy's and torch's global RNGs for the block, then restore them (timm and
    torchvision draw from those; restoring keeps a main-process loader from disturbing training)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def multi_scale_crop_box(
    height: int, width: int, scales: Sequence[float], rng: np.random.Generator, max_distort: int = 1
) -> Box:
    """VideoMAE's GroupMultiScaleCrop: crop sides drawn from `scales` x the short side (the two
    sides at most `max_distort` scale steps apart), placed at one of 13 fixed positions."""
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    pairs = [(h, w) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= max_distort]
    crop_h, crop_w = pairs[rng.integers(len(pairs))]
    step_h, step_w = (height - crop_h) // 4, (width - crop_w) // 4
    grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (0, 2), (4, 2), (2, 0), (2, 4), (1, 1), (1, 3), (3, 1), (3, 3)]
    gy, gx = grid[rng.integers(len(grid))]
    return gy * step_h, gx * step_w, crop_h, crop_w


def random_resized_crop_box(
    height: int,
    width: int,
    seed: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """torchvision's RandomResizedCrop box (VideoMAE fine-tuning's crop), drawn under `seed`."""
    from torchvision.transforms import RandomResizedCrop

    with seeded_global_rngs(seed):
        return tuple(RandomResizedCrop.get_params(torch.empty(1, height, width), list(scale), list(ratio)))


def resized_crop(clip: Tensor, box: Box, size: int) -> Tensor:
    """uint8 [F, H, W, 3] -> the `box` region resized to [F, size, size, 3] (antialiased)."""
    top, left, h, w = box
    region = clip[:, top : top + h, left : left + w].permute(0, 3, 1, 2)  # channels-last view: fast uint8 path
    return TF.resize(region, [size, size], antialias=True).permute(0, 2, 3, 1)


def resize_short_side(clip: Tensor, short_side: int) -> Tensor:
    """uint8 [F, H, W, 3] with the short side resized to `short_side`."""
    _, height, width, _ = clip.shape
    scale = short_side / min(height, width)
    size = [max(short_side, round(height * scale)), max(short_side, round(width * scale))]
    if size == [height, width]:
        return clip
    return TF.resize(clip.permute(0, 3, 1, 2), size, antialias=True).permute(0, 2, 3, 1)


def spatial_crop_boxes(height: int, width: int, size: int, count: int) -> list[Box]:
    """`count` size x size boxes spread evenly along the long side, centred on the short one
    (VideoMAE's test crops: left/centre/right for 3; the centre crop for 1)."""
    if min(height, width) < size:
        raise ValueError(f"a {size}x{size} crop does not fit a {height}x{width} frame")
    boxes = []
    for k in range(count):
        along = 0.5 if count == 1 else k / (count - 1)
        if width >= height:
            boxes.append(((height - size) // 2, int(round((width - size) * along)), size, size))
        else:
            boxes.append((int(round((height - size) * along)), (width - size) // 2, size, size))
    return boxes


def horizontal_flip(clip: Tensor) -> Tensor:
    return clip.flip(2)


class ClipRandAugment:
    """timm's RandAugment (e.g. 'rand-m7-n4-mstd0.5-inc1'), the same ops and magnitudes on every
    frame of a clip: each frame replays the random state the first frame started from."""

    def __init__(self, config: str, fill: Sequence[float] = (0.485, 0.456, 0.406)):
        from timm.data.auto_augment import rand_augment_transform

        self.config = config
        self._augment = rand_augment_transform(config, {"img_mean": tuple(round(255 * m) for m in fill)})

    def __call__(self, clip: Tensor, seed: int) -> Tensor:
        frames = []
        for frame in clip.numpy():
            with seeded_global_rngs(seed):
                frames.append(np.asarray(self._augment(Image.fromarray(frame))))
        return torch.from_numpy(np.stack(frames))


class ClipRandomErasing:
    """timm's RandomErasing ('pixel' mode, one box per frame, as VideoMAE applies it) on a uint8
    clip: the erased pixels get mean + std * N(0, 1) in pixel units, which is what timm writes into
    a normalised clip, so the clip can stay uint8 until it reaches the device."""

    def __init__(self, probability: float, mean: Sequence[float], std: Sequence[float]):
        from timm.data.random_erasing import RandomErasing

        self._erase = RandomErasing(probability, mode="pixel", max_count=1, num_splits=0, device="cpu")
        self._mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(std).view(1, 3, 1, 1) * 255

    def __call__(self, clip: Tensor, seed: int) -> Tensor:
        count, height, width, _ = clip.shape
        canvas = torch.full((count, 3, height, width), float("nan"))
        with seeded_global_rngs(seed):
            self._erase(canvas)  # writes N(0, 1) values into the erased boxes of each frame
        erased = ~canvas.isnan()
        if not erased.any():
            return clip
        fill = (self._mean + self._std * canvas).round().clamp(0, 255).to(torch.uint8)
        out = clip.permute(0, 3, 1, 2).clone()
        out[erased] = fill[erased]
        return out.permute(0, 2, 3, 1).contiguous()


def to_model_input(
    video: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """uint8 clips [..., F, H, W, 3] -> normalised `dtype` [..., 3, F, H, W] on `device`.

    `mean` and `std` are per-channel in [0, 1] units; the conversion runs on the device, so only
    uint8 bytes cross the host-device link."""
    if video.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 clip, got {video.dtype}")
    x = video.to(device, non_blocking=True).float()
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=x.device) * 255
    std_t = torch.as_tensor(std, dtype=torch.float32, device=x.device) * 255
    x = (x - mean_t) / std_t
    return x.movedim(-1, -4).contiguous().to(dtype)
