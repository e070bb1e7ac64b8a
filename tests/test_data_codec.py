"""The stored video format: partial decoding is exact, sizes, errors, direct source reads."""

import numpy as np
import pytest

from everest.data.builtin.synthetic import Motion, render, write_video
from everest.data.codec import (
    DISPOSABLE,
    KEYFRAME,
    StorageSettings,
    VideoReadError,
    decode_frames,
    read_source_frames,
    scaled_size,
    transcode,
)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("codec") / "moving.mp4"
    rng = np.random.default_rng(0)
    write_video(path, render(Motion(1, 2.5, False, 1, "circle"), 48, 40, rng), fps=10)
    return path


def test_partial_decode_equals_full_decode(source):
    video = transcode(source, StorageSettings(gop=16, bframes=3))
    kinds, frames = video.packet_kinds, video.packet_frames
    assert video.num_frames == 40 and (video.width, video.height) == (48, 48)
    assert sorted(frames.tolist()) == list(range(40))
    assert frames[kinds == KEYFRAME].tolist() == [0, 16, 32]
    assert (kinds == DISPOSABLE).sum() >= 20  # 3 of every 4 frames are never referenced
    record = video.as_record()
    full = decode_frames(record, np.arange(40))
    rng = np.random.default_rng(1)
    for _ in range(10):
        picks = rng.choice(40, size=6)  # unsorted, repeats allowed
        np.testing.assert_array_equal(decode_frames(record, picks), full[picks])
    with pytest.raises(ValueError, match="outside"):
        decode_frames(record, [40])


def test_direct_source_read_matches_the_stored_video(source):
    stored = decode_frames(transcode(source, StorageSettings(crf=0, preset="ultrafast")).as_record(), [5, 9, 30])
    direct = read_source_frames(source, [5, 9, 30])
    assert direct.shape == (3, 48, 48, 3) and direct.dtype == np.uint8
    assert np.abs(direct.astype(int) - stored.astype(int)).mean() < 2  # lossless re-encode of the same frames


def test_short_side_scaling():
    assert scaled_size(320, 240, 256) == (320, 240)  # never upscaled
    assert scaled_size(1280, 720, 256) == (456, 256)
    assert scaled_size(101, 75, 64) == (86, 64)  # even sides for yuv420p
    with pytest.raises(ValueError, match="multiple"):
        StorageSettings(gop=10, bframes=3)


def test_unreadable_videos_raise_a_reason(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(VideoReadError, match="cannot open"):
        transcode(bad, StorageSettings())


@pytest.mark.parametrize(
    "name, codec", [("v.avi", "mpeg4"), ("v.webm", "libvpx-vp9"), ("v.mkv", "libx264"), ("v.mov", "mjpeg")]
)
def test_common_containers_and_codecs_are_read(tmp_path, name, codec):
    import av

    with av.open(str(tmp_path / name), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for value in range(0, 200, 10):
            frame = np.full((48, 64, 3), value, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    video = transcode(tmp_path / name, StorageSettings())
    assert (video.num_frames, video.width, video.height, video.fps) == (20, 64, 48, 10.0)
    frames = decode_frames(video.as_record(), [0, 19])
    assert abs(int(frames[1].mean()) - 190) < 6 and int(frames[0].mean()) < 6
