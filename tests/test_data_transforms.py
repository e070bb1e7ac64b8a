"""Sampling and transforms: shapes and dtypes of every transform, determinism, multi-view layout,
labels, normalisation, annotation parsing."""

import numpy as np
import pytest
import torch

from everest.data.annotations import CLASS_LABEL, REGRESSION_LABEL, UNLABELED, AnnotationError, read_annotations
from everest.data.builtin.synthetic import Motion, render, write_video
from everest.data.clips import ClipMaker, Temporal, segment_starts
from everest.data.codec import StorageSettings, transcode
from everest.data.transforms import (
    ClipRandAugment,
    ClipRandomErasing,
    horizontal_flip,
    multi_scale_crop_box,
    random_resized_crop_box,
    resize_short_side,
    resized_crop,
    spatial_crop_boxes,
    to_model_input,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    """A stored 64x48 video of 30 frames with class label 2."""
    path = tmp_path_factory.mktemp("clips") / "v.mp4"
    frames = render(Motion(2, 1.0, True, 1, "square"), 64, 30, np.random.default_rng(0))[:, 8:56]
    write_video(path, np.ascontiguousarray(frames), fps=10)
    video = transcode(path, StorageSettings(gop=8, bframes=3))
    return {"video_id": 7, **video.as_record(), "label": np.array([2.0]), "label_kind": CLASS_LABEL}


def _clip(frames=6, height=40, width=56):
    return torch.randint(0, 256, (frames, height, width, 3), dtype=torch.uint8)


def test_crop_boxes_fit_and_follow_the_scales():
    rng = np.random.default_rng(0)
    for _ in range(50):
        top, left, h, w = multi_scale_crop_box(240, 320, (1.0, 0.875, 0.75, 0.66), rng)
        assert h in (240, 210, 180, 158) and w in (240, 210, 180, 158)
        assert 0 <= top <= 240 - h and 0 <= left <= 320 - w
        top, left, h, w = random_resized_crop_box(240, 320, seed=int(rng.integers(1000)))
        assert 0 <= top <= 240 - h and 0 <= left <= 320 - w
    assert random_resized_crop_box(240, 320, seed=3) == random_resized_crop_box(240, 320, seed=3)
    assert spatial_crop_boxes(40, 56, 32, 3) == [(4, 0, 32, 32), (4, 12, 32, 32), (4, 24, 32, 32)]
    assert spatial_crop_boxes(56, 40, 32, 1) == [(12, 4, 32, 32)]


def test_spatial_transform_shapes_and_dtypes():
    clip = _clip()
    for out, shape in [
        (resized_crop(clip, (2, 3, 30, 40), 16), (6, 16, 16, 3)),
        (resize_short_side(clip, 20), (6, 20, 28, 3)),
        (horizontal_flip(clip), (6, 40, 56, 3)),
    ]:
        assert out.shape == shape and out.dtype == torch.uint8
    assert torch.equal(horizontal_flip(clip)[:, :, 0], clip[:, :, -1])


def test_rand_augment_applies_the_same_ops_to_every_frame():
    augment = ClipRandAugment("rand-m9-n3-mstd0.5-inc1", MEAN)
    clip = _clip(frames=1).expand(5, -1, -1, -1).contiguous()
    out = augment(clip, seed=11)
    assert out.shape == clip.shape and out.dtype == torch.uint8
    assert all(torch.equal(out[0], frame) for frame in out)
    assert torch.equal(out, augment(clip, seed=11))


def test_random_erasing_fills_boxes_with_normalised_noise():
    clip = torch.full((4, 40, 40, 3), 128, dtype=torch.uint8)
    out = ClipRandomErasing(1.0, MEAN, STD)(clip, seed=5)
    assert out.shape == clip.shape and out.dtype == torch.uint8
    changed = (out != clip).any(dim=-1)
    assert all(changed[f].any() for f in range(4))  # one box per frame
    z = (to_model_input(out[None], MEAN, STD, "cpu")[0].permute(1, 2, 3, 0))[changed]
    assert abs(z.mean().item()) < 0.3 and 0.6 < z.std().item() < 1.3  # ~N(0, 1) once normalised
    assert torch.equal(ClipRandomErasing(0.0, MEAN, STD)(clip, seed=5), clip)


def test_to_model_input_normalises_on_the_device():
    video = torch.randint(0, 256, (2, 4, 8, 8, 3), dtype=torch.uint8)
    x = to_model_input(video, MEAN, STD, "cpu", torch.bfloat16)
    assert x.shape == (2, 3, 4, 8, 8) and x.dtype == torch.bfloat16
    expected = (video.float() / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(x.float(), expected.permute(0, 4, 1, 2, 3), atol=0.03, rtol=0.01)
    views = to_model_input(video[:, None].expand(-1, 3, -1, -1, -1, -1), MEAN, STD, "cpu")
    assert views.shape == (2, 3, 3, 4, 8, 8)
    with pytest.raises(TypeError, match="uint8"):
        to_model_input(video.float(), MEAN, STD, "cpu")


def test_clip_maker_modes(record):
    temporal = Temporal(num_frames=4, stride=2, candidates=4)
    train = ClipMaker(
        "train",
        temporal,
        size=32,
        seed=0,
        flip=True,
        train_crop="random_resized",
        rand_augment=ClipRandAugment("rand-m7-n2", MEAN),
        random_erasing=ClipRandomErasing(0.5, MEAN, STD),
    )(record, epoch=1)
    assert train["video"].shape == (4, 32, 32, 3) and train["video"].dtype == torch.uint8
    assert train["label"] == 2 and train["index"] == 7
    evaluation = ClipMaker("eval", temporal, size=32)(record)
    assert evaluation["video"].shape == (4, 32, 32, 3)
    multiview = ClipMaker("multiview", temporal, size=32, segments=3, crops=2)(record)
    assert multiview["video"].shape == (6, 4, 32, 32, 3) and multiview["video"].dtype == torch.uint8
    # view = segment * crops + crop: both crops of a segment show the same frames' time
    assert not torch.equal(multiview["video"][0], multiview["video"][1])
    single = ClipMaker("multiview", temporal, size=32, segments=1, crops=1)(record)["video"][0]
    assert torch.equal(single, evaluation["video"])


def test_augmentations_are_a_function_of_seed_epoch_and_video(record):
    maker = ClipMaker("train", Temporal(4, 2, 4), size=24, seed=0, flip=True)
    first = maker(record, epoch=1)["video"]
    assert torch.equal(first, maker(record, epoch=1)["video"])
    assert any(not torch.equal(first, maker(record, epoch=e)["video"]) for e in range(2, 6))


def test_segments_spread_over_the_video():
    assert segment_starts(100, 21, 5) == [0, 19, 39, 59, 79]
    assert segment_starts(100, 21, 1) == [39]
    assert segment_starts(10, 21, 3) == [0, 0, 0]  # short video: windows repeat the last frame


def test_information_frame_selection_through_frames_py(record):
    from everest.data.codec import decode_frames
    from everest.data.frames import candidate_window, select_frame_indices

    temporal = Temporal(num_frames=4, stride=1, candidates=12, policy="information")
    clip = ClipMaker("eval", temporal, size=48, short_side=48)(record)["video"]
    window = candidate_window(30, 12, 1)
    candidates = decode_frames(record, window)
    expected = candidates[select_frame_indices(candidates, 4, "information")]
    np.testing.assert_array_equal(clip.numpy(), expected[:, :, 8:56])


def test_labels():
    make = lambda target: ClipMaker("eval", Temporal(2, 1, 2), size=8, label_target=target)  # noqa: E731
    assert make("raw").label({"label": np.array([3.0]), "label_kind": CLASS_LABEL}) == 3
    assert make("raw").label({"label": np.zeros(0), "label_kind": UNLABELED}) == -1
    target = make("raw").label({"label": np.array([0.5, 2.0]), "label_kind": REGRESSION_LABEL})
    assert target.dtype == np.float32 and target.tolist() == [0.5, 2.0]
    target = make("regression").label({"label": np.array([3.0]), "label_kind": CLASS_LABEL})
    assert target.dtype == np.float32 and target.shape == (1,)


def test_annotation_files(tmp_path):
    def parse(text):
        (tmp_path / "a.csv").write_text(text)
        return read_annotations(tmp_path / "a.csv", tmp_path)

    table = parse("path,label\n# comment\na.mp4,3\n\nsub/b.mp4,0\n")
    assert table.label_kind == CLASS_LABEL and [e.label for e in table.entries] == [(3.0,), (0.0,)]
    assert table.entries[1].path == tmp_path / "sub/b.mp4" and table.entries[1].video_id == 1
    assert parse("a.mp4 0.5\nb.mp4 2\n").label_kind == REGRESSION_LABEL
    assert parse("a.mp4 1.0 2.0\n").label_dim == 2
    assert parse("a.mp4\nb.mp4\n").label_kind == UNLABELED
    with pytest.raises(AnnotationError, match="a.csv:2: label 'x'"):
        parse("a.mp4 1\nb.mp4 x\n")
    with pytest.raises(AnnotationError, match="different numbers of labels"):
        parse("a.mp4 1\nb.mp4\n")
    with pytest.raises(AnnotationError, match="not found"):
        read_annotations(tmp_path / "none.csv", tmp_path)
