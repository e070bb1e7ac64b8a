"""The built-in "digits" collection: real MNIST images, split by image, balanced, moving in straight
bouncing lines, and bit-stable (generated twice, the decoded frames are equal exactly)."""

import numpy as np
import pytest
from litdata import StreamingDataset

from everest.config import config_from_dict
from everest.data.builtin import digits
from everest.data.builtin.synthetic import ensure_builtin_dataset
from everest.data.codec import decode_frames


def test_images_are_real_digits_split_by_image_and_balanced():
    images, labels = digits.digit_images()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    splits = {split: digits.split_images(split) for split in ("train", "val", "test")}
    for split, per_class in splits.items():
        assert [len(ids) for ids in per_class] == [digits.IMAGES_PER_CLASS[split]] * 10
        for c, ids in enumerate(per_class):
            assert (labels[ids] == c).all()
    used = [set(np.concatenate(per_class).tolist()) for per_class in splits.values()]
    assert not (used[0] & used[1]) and not (used[0] & used[2]) and not (used[1] & used[2])
    assert len(used[0] | used[1] | used[2]) == 5000
    # handwriting, not a synthetic glyph: two images of one class differ, ink covers 10-30 % of the square
    ink = (images > 128).mean(axis=(1, 2))
    assert 0.05 < ink.mean() < 0.3 and np.abs(images[0].astype(int) - images[1]).mean() > 5


def test_video_is_keyed_by_seed_split_index_and_shows_its_digit_moving():
    video, label = digits.render_digits(0, "train", 13, size=64, frames=16)
    again, _ = digits.render_digits(0, "train", 13, size=64, frames=16)
    assert label == 3 and video.shape == (16, 64, 64, 3) and video.dtype == np.uint8
    np.testing.assert_array_equal(video, again)
    assert (video[..., 0] == video[..., 1]).all()  # grey
    image = digits.digit_images()[0][digits.split_images("train")[3][1]]  # video 13: class 3, its 2nd image
    ys, xs = np.nonzero(video[0, :, :, 0])
    top, left = ys.min() - np.nonzero(image)[0].min(), xs.min() - np.nonzero(image)[1].min()
    np.testing.assert_array_equal(video[0, top : top + 28, left : left + 28, 0], image)
    # a straight line at constant speed (within the rounding), bouncing: the digit's centre moves
    centres = np.array([np.argwhere(frame[..., 0] > 0).mean(axis=0) for frame in video])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert np.median(steps) > 1.5
    for other in ((1, "train", 13), (0, "val", 13), (0, "train", 23)):
        moved, other_label = digits.render_digits(*other, size=64, frames=16)
        assert np.abs(moved.astype(int) - video).mean() > 1
        assert other_label == 3
    two, label_two = digits.render_digits(0, "train", 13, digits=2)
    assert label_two == 3 and (two >= video).all() and (two > video).any()


def read_annotations(path):
    return [tuple(line.split()) for line in path.read_text().splitlines()]


def _decoded_train_frames(shards):
    dataset = StreamingDataset(str(shards / "train"))
    records = sorted((dataset[i] for i in range(len(dataset))), key=lambda r: int(r["video_id"]))
    return [decode_frames(r, range(int(r["num_frames"]))) for r in records]


def _build(folder, videos, probe=10):
    cfg = config_from_dict(
        {
            "data": {
                "synthetic": True,
                "synthetic_kind": "digits",
                "synthetic_dir": str(folder),
                "synthetic_videos": videos,
                "synthetic_heldout": 10,
                "synthetic_probe_videos": probe,
            }
        }
    )
    return ensure_builtin_dataset(cfg.data)


def test_prepared_collection_is_bit_stable_nested_and_balanced(tmp_path):
    first, second = _build(tmp_path / "one", 20), _build(tmp_path / "two", 20)
    a, b = _decoded_train_frames(first), _decoded_train_frames(second)
    assert len(a) == 20
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # generated twice: the same pixels, bit for bit
    for i, frames in enumerate(a):  # and exactly the rendered ones: storage is lossless
        np.testing.assert_array_equal(frames, digits.render_digits(0, "train", i, 64, 16)[0])
    rows = {s: read_annotations(tmp_path / "one" / f"{s}_motion.csv") for s in ("train", "val", "test", "probe")}
    assert [int(label) for _, label in rows["train"]] == [i % 10 for i in range(20)]
    assert rows["probe"] == rows["train"][:10] and (first / "probe" / "index.json").is_file()
    smaller = _build(tmp_path / "small", 10, probe=0)
    assert read_annotations(tmp_path / "small" / "train_motion.csv") == rows["train"][:10]
    assert not (smaller / "probe").exists()
    for x, y in zip(_decoded_train_frames(smaller), a):
        np.testing.assert_array_equal(x, y)


def test_digits_have_no_regression_target(tmp_path):
    cfg = config_from_dict({"data": {"synthetic": True, "synthetic_kind": "digits", "synthetic_dir": str(tmp_path)}})
    with pytest.raises(ValueError, match="class labels only"):
        ensure_builtin_dataset(cfg.data, labels="speed")
