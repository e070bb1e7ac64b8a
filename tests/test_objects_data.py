"""The built-in "objects" collection: deterministic, nested pools, disjoint splits, labels as drawn."""

import av
import numpy as np
import pytest

from everest.config import config_from_dict
from everest.data.builtin.objects import CLASSES, SHAPES, render_objects, shape_mask, smooth_texture, video_rng
from everest.data.builtin.synthetic import ensure_builtin_dataset


def test_rendering_is_deterministic_and_keyed_by_split_and_index():
    a = render_objects(3, video_rng(0, "train", 5), size=32, frames=6)
    b = render_objects(3, video_rng(0, "train", 5), size=32, frames=6)
    assert a.dtype == np.uint8 and a.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    for other in (video_rng(0, "val", 5), video_rng(0, "train", 6), video_rng(1, "train", 5)):
        assert np.abs(render_objects(3, other, size=32, frames=6).astype(int) - a).mean() > 5


def test_structure_everywhere_and_the_shape_moves():
    video = render_objects(5, video_rng(0, "train", 0), size=64, frames=16).astype(float)
    # almost every 8x8 patch of the first frame holds a ramp or an edge in every channel (std well
    # above the noise's 1.0), so per-patch normalised targets are mostly structure, not noise
    patches = video[0].reshape(8, 8, 8, 8, 3).transpose(0, 2, 1, 3, 4).reshape(64, 64, 3)
    assert np.mean(patches.std(axis=1) > 2.0) > 0.85
    moved = np.abs(video[15] - video[0]).mean(axis=2) > 10
    assert 0.01 < moved.mean() < 0.4  # the shape's path changes, the background stays
    rows, cols = np.nonzero(moved)
    assert np.ptp(rows) > np.ptp(cols)  # label 5 moves vertically: the change spans more rows


def test_shapes_differ_and_fill_what_they_should():
    dy, dx = np.mgrid[-32:32, -32:32].astype(float)
    areas = {name: shape_mask(i, dy, dx, 20.0).mean() * 64 * 64 for i, name in enumerate(SHAPES)}
    assert areas["disc"] == pytest.approx(np.pi * 20**2, rel=0.02)
    assert areas["square"] == pytest.approx((2 * 17) ** 2, rel=0.08)
    masks = [shape_mask(i, dy, dx, 20.0) for i in range(len(SHAPES))]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert (masks[i] ^ masks[j]).mean() > 0.02, (SHAPES[i], SHAPES[j])


def test_background_texture_is_smooth():
    texture = smooth_texture(64, np.random.default_rng(0))
    assert texture.std() == pytest.approx(1.0, rel=1e-3)
    # wavelengths of 32 px or more: a pixel step changes it by at most 2 pi / 32 of its amplitude
    for axis in (0, 1):
        assert np.abs(np.diff(texture, axis=axis)).max() < 2 * np.pi / 32 * np.abs(texture).max()


def read_annotations(path):
    return [tuple(line.rsplit(maxsplit=1)) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_prepared_collection_is_nested_disjoint_and_labelled(tmp_path):
    def build(folder, videos):
        cfg = config_from_dict(
            {
                "data": {
                    "synthetic": True,
                    "synthetic_kind": "objects",
                    "synthetic_dir": str(folder),
                    "synthetic_videos": videos,
                    "synthetic_heldout": 8,
                }
            }
        )
        return ensure_builtin_dataset(cfg.data)

    small, large = build(tmp_path / "small", 8), build(tmp_path / "large", 16)
    for shards in (small, large):
        assert all((shards / split / "index.json").is_file() for split in ("train", "val", "test"))
    rows = {split: read_annotations(tmp_path / "large" / f"{split}_motion.csv") for split in ("train", "val", "test")}
    assert len(rows["train"]) == 16 and len(rows["val"]) == 8 and len(rows["test"]) == 8
    names = [set(path for path, _ in rows[split]) for split in rows]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    for path, label in rows["train"]:  # labels as the file names say, every class present
        assert path.endswith(f"_{CLASSES[int(label)]}.mp4")
    assert {int(label) for _, label in rows["train"]} == set(range(len(CLASSES)))
    # the small pool is the first videos of the large one; held-out splits are the same videos
    small_rows = read_annotations(tmp_path / "small" / "train_motion.csv")
    assert small_rows == rows["train"][:8]
    for name in (f"train/train_00003_{CLASSES[3]}.mp4", f"val/val_00002_{CLASSES[2]}.mp4"):
        a, b = (_frames(tmp_path / pool / "videos" / name) for pool in ("small", "large"))
        assert a.shape == (48, 64, 64, 3)
        # the same frames (rendering is exact, see the first test); x264 may still encode a video
        # differently from one run to the next, so decoded pixels are compared with a tolerance
        assert np.abs(a.astype(int) - b).mean() < 3.0  # different videos differ by ~30


def _frames(path):
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
