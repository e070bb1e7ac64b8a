"""The built-in "objects" collection: deterministic, nested pools, disjoint splits, labels as drawn."""

import av
import numpy as np
import pytest

from everest.config import config_from_dict
from everest.data.objects import CLASSES, grating, render_objects, video_rng
from everest.data.synthetic import ensure_builtin_dataset


def test_rendering_is_deterministic_and_keyed_by_split_and_index():
    a = render_objects(3, video_rng(0, "train", 5), size=32, frames=6)
    b = render_objects(3, video_rng(0, "train", 5), size=32, frames=6)
    assert a.dtype == np.uint8 and a.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    for other in (video_rng(0, "val", 5), video_rng(0, "train", 6), video_rng(1, "train", 5)):
        assert np.abs(render_objects(3, other, size=32, frames=6).astype(int) - a).mean() > 5


def test_texture_everywhere_and_the_disc_moves():
    video = render_objects(0, video_rng(0, "train", 0), size=64, frames=8).astype(float)
    # every 8x8 patch of the first frame has structure (no flat regions)
    patches = video[0].reshape(8, 8, 8, 8, 3).transpose(0, 2, 1, 3, 4).reshape(64, -1)
    assert patches.std(axis=1).min() > 2.0
    change = np.abs(np.diff(video, axis=0)).mean(axis=(0, 3))
    moving = change > 10
    assert 0.02 < moving.mean() < 0.6  # the disc's path changes, the background stays


@pytest.mark.parametrize("theta", [0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4])
def test_grating_has_its_energy_at_the_asked_angle(theta):
    image = grating(64, np.random.default_rng(0), theta, wavelength=10.0)
    spectrum = np.abs(np.fft.fft2(image)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij")
    peak = np.unravel_index(spectrum.argmax(), spectrum.shape)
    angle = np.arctan2(fy[peak], fx[peak])
    assert abs(np.angle(np.exp(2j * (angle - theta)))) / 2 < 0.1  # same orientation (k and -k agree)
    assert np.hypot(fy[peak], fx[peak]) == pytest.approx(1 / 10.0, abs=1 / 64)


def read_annotations(path):
    return [tuple(line.rsplit(maxsplit=1)) for line in path.read_text().splitlines() if line.strip()]


def test_prepared_collection_is_nested_disjoint_and_labelled(tmp_path):
    def build(folder, videos):
        cfg = config_from_dict({"data": {"synthetic": True, "synthetic_kind": "objects", "synthetic_dir": str(folder),
                                         "synthetic_videos": videos, "synthetic_heldout": 8}})
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
    for name in ("train/train_00003_135deg-horizontal.mp4", "val/val_00002_90deg-horizontal.mp4"):
        a, b = (_frames(tmp_path / pool / "videos" / name) for pool in ("small", "large"))
        assert a.shape == (48, 64, 64, 3)
        np.testing.assert_array_equal(a, b)


def _frames(path):
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
