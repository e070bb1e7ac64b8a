"""From a stored video record to a training/evaluation sample: temporal sampling, decoding,
spatial transforms and the label.

Every random choice is a pure function of (seed, epoch, video_id), so a sample looks the same
whichever rank or worker builds it, and a resumed run sees exactly what the interrupted one would
have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from everest.data.annotations import CLASS_LABEL, UNLABELED
from everest.data.codec import decode_frames
from everest.data.frames import candidate_window, select_frame_indices, uniform_indices
from everest.data.transforms import (
    ClipRandAugment,
    ClipRandomErasing,
    horizontal_flip,
    multi_scale_crop_box,
    random_resized_crop_box,
    resize_short_side,
    resized_crop,
    spatial_crop_boxes,
)

Mode = Literal["train", "eval", "multiview"]
LabelTarget = Literal["raw", "regression"]


@dataclass(frozen=True)
class Temporal:
    """Which frames make a clip: a window of `candidates` frames `stride` apart, from which
    `num_frames` are kept by `policy` ('uniform' or 'information')."""

    num_frames: int
    stride: int
    candidates: int
    policy: str = "uniform"

    @classmethod
    def of(cls, training: Any) -> Temporal:
        """The recipe of a config's `training` section (num_frames, temporal_stride,
        frames_to_sample, frame_selection)."""
        return cls(training.num_frames, training.temporal_stride, training.frames_to_sample, training.frame_selection)


@dataclass
class ClipMaker:
    """Turns a stored record into {"video": uint8, "label": ..., "index": video_id}; frames come
    from `read_frames(record, indices)` (the stored video's decoder by default).

    mode 'train': random window, then `train_crop` ('multi_scale' or 'random_resized') to
        `size`, optional flip, RandAugment and random erasing -> video [F, S, S, 3].
    mode 'eval': the centre window, short side resized to `short_side` (default S), centre
        S x S crop -> [F, S, S, 3].
    mode 'multiview': `segments` windows spread over the video x `crops` S x S crops along the
        long side -> [segments * crops, F, S, S, 3], view v = segment * crops + crop.
    """

    mode: Mode
    temporal: Temporal
    size: int
    seed: int = 0
    short_side: int | None = None
    train_crop: str = "multi_scale"
    crop_scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    flip: bool = False
    rand_augment: ClipRandAugment | None = None
    random_erasing: ClipRandomErasing | None = None
    segments: int = 1
    crops: int = 1
    label_target: LabelTarget = "raw"
    read_frames: Callable[[Mapping[str, Any], np.ndarray], np.ndarray] = decode_frames

    def __call__(self, record: Mapping[str, Any], epoch: int = 0) -> dict[str, Any]:
        video_id = int(record["video_id"])
        rng = np.random.default_rng([self.seed, epoch, video_id])
        if self.mode == "train":
            video = self._train_clip(record, rng)
        elif self.mode == "eval":
            video = self._eval_views(record, [None], crops=1)[0]
        else:
            n = int(record["num_frames"])
            video = self._eval_views(record, segment_starts(n, self._span, self.segments), crops=self.crops)
        return {"video": video, "label": self.label(record), "index": video_id}

    @property
    def _span(self) -> int:
        return (self.temporal.candidates - 1) * self.temporal.stride + 1

    # ------------------------------------------------------------------------------ frames

    def _window(self, record: Mapping[str, Any], start: int | None, rng: np.random.Generator | None) -> np.ndarray:
        t = self.temporal
        return candidate_window(int(record["num_frames"]), t.candidates, t.stride, start=start, rng=rng)

    # ------------------------------------------------------------------------------ modes

    def _train_clip(self, record: Mapping[str, Any], rng: np.random.Generator) -> Tensor:
        clips, _ = decode_windows(
            lambda indices: self.read_frames(record, indices), [self._window(record, None, rng)], self.temporal
        )
        clip = torch.from_numpy(clips[0])
        _, height, width, _ = clip.shape
        if self.train_crop == "multi_scale":
            box = multi_scale_crop_box(height, width, self.crop_scales, rng)
        else:
            box = random_resized_crop_box(height, width, int(rng.integers(2**31)))
        clip = resized_crop(clip, box, self.size)
        if self.flip and rng.random() < 0.5:
            clip = horizontal_flip(clip)
        if self.rand_augment is not None:
            clip = self.rand_augment(clip, int(rng.integers(2**31)))
        if self.random_erasing is not None:
            clip = self.random_erasing(clip, int(rng.integers(2**31)))
        return clip.contiguous()

    def _eval_views(self, record: Mapping[str, Any], starts: list[int | None], crops: int) -> Tensor:
        windows = [self._window(record, start, None) for start in starts]
        views, _ = evaluation_views(
            lambda indices: self.read_frames(record, indices), windows, self.temporal, self.size, self.short_side, crops
        )
        return views.flatten(0, 1)

    # ------------------------------------------------------------------------------ labels

    def label(self, record: Mapping[str, Any]) -> int | np.ndarray:
        """The stored label as-is ('raw': a class index, -1 when unlabeled, or float32 [D]
        targets), or always float32 [D] targets ('regression', e.g. integer scores)."""
        values, kind = np.asarray(record["label"]), int(record["label_kind"])
        if self.label_target == "regression" or kind not in (CLASS_LABEL, UNLABELED):
            return values.astype(np.float32)
        return int(values[0]) if kind == CLASS_LABEL else -1


def segment_starts(num_frames: int, span: int, segments: int) -> list[int]:
    """First frames of `segments` windows of `span` frames spread evenly over a video (VideoMAE's
    test segments); one segment is centred."""
    latest = max(num_frames - span, 0)
    if segments == 1:
        return [latest // 2]
    return [int(k * latest / (segments - 1)) for k in range(segments)]


def decode_windows(
    read: Callable[[np.ndarray], np.ndarray], windows: Sequence[np.ndarray], temporal: Temporal
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The clip (uint8 [F, H, W, 3]) of each window of candidate frame indices, decoded with one
    `read(indices)` call, and the frame indices each clip kept. Under uniform selection only the
    kept frames are decoded; information-intensive selection decodes every candidate."""
    t = temporal
    if t.candidates == t.num_frames or t.policy == "uniform":
        picks = [w[uniform_indices(len(w), t.num_frames)] for w in windows]
        return np.split(read(np.concatenate(picks)), len(picks)), picks
    candidates = np.split(read(np.concatenate(windows)), len(windows))
    keep = [select_frame_indices(c, t.num_frames, t.policy) for c in candidates]
    return [c[k] for c, k in zip(candidates, keep)], [w[k] for w, k in zip(windows, keep)]


def evaluation_views(
    read: Callable[[np.ndarray], np.ndarray],
    windows: Sequence[np.ndarray],
    temporal: Temporal,
    size: int,
    short_side: int | None,
    crops: int,
) -> tuple[Tensor, list[np.ndarray]]:
    """Video -> evaluation clips, the one recipe of evaluation, inference and the visualiser:
    each window's kept frames (`decode_windows`), short side resized to `short_side` (default
    `size`), cut into `crops` size x size crops along the long side. Returns uint8 views
    [len(windows), crops, F, S, S, 3] and the frame indices each window kept."""
    clips, picks = decode_windows(read, windows, temporal)
    views = []
    for clip in clips:
        clip = resize_short_side(torch.from_numpy(np.ascontiguousarray(clip)), short_side or size)
        boxes = spatial_crop_boxes(clip.shape[1], clip.shape[2], size, crops)
        views.append(torch.stack([clip[:, top : top + h, left : left + w] for top, left, h, w in boxes]))
    return torch.stack(views).contiguous(), picks
