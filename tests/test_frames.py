"""Frame windows and the two frame-selection policies."""

import typing

import numpy as np
import pytest
import torch

from everest.config import TrainingConfig
from everest.data import frames


def clip_with_burst(count: int = 24, moving: range = range(9, 15), size: int = 48) -> np.ndarray:
    """[F, H, W, 3] uint8: a static textured scene; a square moves only during `moving`."""
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
    clip = np.repeat(scene[None], count, axis=0)
    x = 2
    for f in range(count):
        if f in moving:
            x += 3
        clip[f, 10:26, x : x + 16] = 250
    return clip


def test_policies_match_the_config():
    hints = typing.get_type_hints(TrainingConfig)
    assert typing.get_args(hints["frame_selection"]) == frames.POLICIES


@pytest.mark.parametrize(
    "candidates, count, expected",
    [
        (16, 16, list(range(16))),
        (32, 16, list(range(0, 32, 2))),
        (10, 4, [0, 2, 5, 7]),
    ],
)
def test_uniform_is_a_fixed_stride(candidates, count, expected):
    clip = np.zeros((candidates, 4, 4, 3), dtype=np.uint8)
    picked = frames.select_frame_indices(clip, count, "uniform")
    assert picked.dtype == np.int64 and picked.tolist() == expected


def test_frame_changes_are_summed_absolute_differences():
    clip = np.random.default_rng(1).integers(0, 256, (5, 16, 20, 3), dtype=np.uint8)
    change = frames.frame_changes(clip, size=16)  # already small: no downscaling
    direct = np.abs(np.diff(clip.astype(np.float64), axis=0)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(change, np.concatenate([direct[:1], direct]), rtol=1e-6)
    assert frames.frame_changes(clip[:1]).tolist() == [0.0]


def test_information_keeps_the_moving_frames_in_order():
    clip = clip_with_burst()
    picked = frames.select_frame_indices(clip, 6, "information")
    assert picked.tolist() == list(range(9, 15))
    as_tensor = frames.select_frame_indices(torch.from_numpy(clip), 6, "information")
    assert as_tensor.tolist() == picked.tolist()
    # More frames than moved: the rest go to the earliest static frames (ties to earlier).
    assert frames.select_frame_indices(clip, 8, "information").tolist() == [0, 1] + list(range(9, 15))


def test_information_on_a_static_clip_takes_the_first_frames():
    clip = np.full((12, 8, 8, 3), 7, dtype=np.uint8)
    assert frames.select_frame_indices(clip, 4, "information").tolist() == [0, 1, 2, 3]


def test_information_works_on_a_downscaled_copy():
    clip = clip_with_burst(size=256)
    assert frames.select_frame_indices(clip, 6, "information").tolist() == list(range(9, 15))


def test_candidate_window():
    window = frames.candidate_window(100, 16, 4, start=10)
    assert window.tolist() == list(range(10, 74, 4))
    assert frames.candidate_window(100, 16, 4).tolist()[0] == (100 - 61) // 2
    short = frames.candidate_window(5, 8, 1, start=0)
    assert short.tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    draws = [frames.candidate_window(100, 16, 2, rng=np.random.default_rng(3)).tolist() for _ in range(2)]
    assert draws[0] == draws[1] and 0 <= draws[0][0] <= 100 - 31


def test_bad_requests_are_refused():
    clip = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError):
        frames.select_frame_indices(clip, 5, "uniform")
    with pytest.raises(ValueError):
        frames.select_frame_indices(clip, 5, "information")
    with pytest.raises(ValueError):
        frames.select_frame_indices(clip, 2, "motion")
