"""Which frames of a video make the clip.

The data pipeline reads a candidate window of `frames_to_sample` frames (`candidate_window`),
then keeps `num_frames` of them (`select_frame_indices`) under one of two policies:

- `uniform`: VideoMAE's fixed stride over the window (every window/num_frames-th frame).
- `information`: EVEREST's information-intensive selection: the frames that changed most since
  their predecessor, in temporal order. A frame's change is the summed absolute pixel difference
  to the previous frame, measured on a small area-downscaled copy (cheap, and robust to noise);
  the first frame takes the second frame's change (as slot 0 does for tokens). Equal changes go
  to the earlier frame, so a static window yields its first `num_frames` frames.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Policy = Literal["uniform", "information"]
POLICIES = ("uniform", "information")


def candidate_window(
    video_length: int,
    frames_to_sample: int,
    temporal_stride: int = 1,
    start: int | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Frame indices of a window of `frames_to_sample` frames, `temporal_stride` apart.

    `start` fixes the first frame; otherwise it is drawn from `rng`, or centred without one.
    Videos shorter than the window repeat their last frame."""
    if video_length < 1:
        raise ValueError("the video has no frames")
    span = (frames_to_sample - 1) * temporal_stride + 1
    latest = max(video_length - span, 0)
    if start is None:
        start = int(rng.integers(0, latest + 1)) if rng is not None else latest // 2
    offsets = start + temporal_stride * np.arange(frames_to_sample)
    return np.minimum(offsets, video_length - 1).astype(np.int64)


def uniform_indices(num_candidates: int, num_frames: int) -> np.ndarray:
    """`num_frames` indices spread evenly over `num_candidates` frames (fixed stride)."""
    if not 1 <= num_frames <= num_candidates:
        raise ValueError(f"cannot take {num_frames} frames from {num_candidates}")
    return (np.arange(num_frames) * num_candidates) // num_frames


def frame_changes(frames: np.ndarray | torch.Tensor, size: int = 32) -> np.ndarray:
    """frames [F, H, W, C] uint8 -> float64 [F]: summed |frame - previous| on a copy whose
    short side is about `size` pixels; frame 0 takes frame 1's value (0 for a single frame)."""
    clip = torch.as_tensor(frames)
    count, height, width, _ = clip.shape
    if count < 2:
        return np.zeros(count)
    small = clip.permute(0, 3, 1, 2).float()
    scale = size / min(height, width)
    if scale < 1:  # area averaging: a small motion still moves every pooled pixel a little
        small = F.interpolate(small, scale_factor=scale, mode="area")
    change = (small[1:] - small[:-1]).abs().sum(dim=(1, 2, 3)).double()
    return torch.cat([change[:1], change]).numpy()


def information_indices(frames: np.ndarray | torch.Tensor, num_frames: int, size: int = 32) -> np.ndarray:
    """The `num_frames` frames of largest change, ascending (ties to the earlier frame)."""
    change = frame_changes(frames, size)
    if not 1 <= num_frames <= len(change):
        raise ValueError(f"cannot take {num_frames} frames from {len(change)}")
    ranked = np.argsort(-change, kind="stable")
    return np.sort(ranked[:num_frames])


def select_frame_indices(frames: np.ndarray | torch.Tensor, num_frames: int, policy: Policy) -> np.ndarray:
    """Sorted int64 indices into `frames` [F, H, W, C] (uint8) of the `num_frames` to keep."""
    if policy == "uniform":
        return uniform_indices(len(frames), num_frames).astype(np.int64)
    if policy == "information":
        return information_indices(frames, num_frames).astype(np.int64)
    raise ValueError(f"unknown frame selection policy {policy!r}; choose one of {', '.join(POLICIES)}")
