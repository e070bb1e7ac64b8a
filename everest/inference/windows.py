"""Where the clips of an inference run come from in each video, and how they are cut.

A window is a stretch of the video holding C candidate frames (C = training.frames_to_sample),
of which the config's frame selection keeps F = training.num_frames, exactly as the data
pipeline does. Two layouts:

- segments (`clips=K`): K windows spread evenly over the video, each C frames
  `training.temporal_stride` apart: evaluation's multi-view test segments.
- sliding (`window`, `stride`, in frames or seconds, e.g. "64" or "2.5s"): windows of W frames
  every S frames from the first frame, plus one ending at the last frame when the video's tail
  would be left out; the C candidates are spread evenly over the W frames. The default is
  W = C x temporal_stride with S = W: the whole video, no overlap.

Each window's frames are resized (short side to augmentation.short_side_size or
model.input_size) and cut into `crops` S x S crops along the long side, as evaluation does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from everest.config import Config
from everest.data.clips import Temporal, evaluation_views, segment_starts
from everest.inference.sampling import Sampling


@dataclass
class Window:
    """One window: its candidate frame indices, and the interval it covers in seconds."""

    candidates: np.ndarray
    start_s: float
    end_s: float


def plan_windows(num_frames: int, fps: float, sampling: Sampling, cfg: Config) -> list[Window]:
    """The windows of a video of `num_frames` frames at `fps` (module docstring)."""
    t = cfg.training
    count, stride = t.frames_to_sample, t.temporal_stride
    if sampling.clips is not None:
        span = (count - 1) * stride + 1
        starts = segment_starts(num_frames, span, sampling.clips)
        offsets = stride * np.arange(count)
        length = span
    else:
        length = sampling.window.frames(fps) if sampling.window else count * stride
        step = sampling.stride.frames(fps) if sampling.stride else length
        if length < count:
            raise ValueError(f"a window of {length} frames cannot hold training.frames_to_sample={count} frames")
        offsets = (np.arange(count) * length) // count
        reach = int(offsets[-1]) + 1
        starts = list(range(0, max(num_frames - reach, 0) + 1, step))
        if starts[-1] + length < num_frames:
            starts.append(num_frames - length)
    windows = []
    for start in starts:
        candidates = np.minimum(start + offsets, num_frames - 1).astype(np.int64)
        windows.append(Window(candidates, start / fps, min(start + length, num_frames) / fps))
    return windows


def cut_views(read, windows: list[Window], cfg: Config, crops: int) -> tuple[torch.Tensor, list[np.ndarray]]:
    """uint8 views [len(windows), crops, F, S, S, 3] of `windows`, decoded with `read(indices)`
    in one call, and the F frame indices each window kept (`everest.data.clips.evaluation_views`)."""
    return evaluation_views(
        read,
        [w.candidates for w in windows],
        Temporal.of(cfg.training),
        cfg.model.input_size,
        cfg.augmentation.short_side_size,
        crops,
    )
