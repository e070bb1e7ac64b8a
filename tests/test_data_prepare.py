"""Preparation: bad videos are reported and skipped, labels round-trip, outputs are never mixed."""

import json
import subprocess
import sys

import numpy as np
import pytest
from litdata import StreamingDataset

from everest.cli.prepare_data import main
from everest.data.builtin.synthetic import SyntheticSpec, generate_collection, write_video
from everest.data.codec import decode_frames
from everest.data.prepare import INDEX_NAME, PrepareError, prepare_dataset
from tests.conftest import SUBPROCESS_TIMEOUT_S


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """6 good 32x32 videos (24 frames), plus a corrupt, a too-short, an empty and a missing one."""
    root = tmp_path_factory.mktemp("collection")
    generate_collection(root, SyntheticSpec(train_videos=6, val_videos=1, test_videos=1, size=32, frames=24))
    videos = root / "videos"
    (videos / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    write_video(videos / "short.mp4", np.zeros((5, 32, 32, 3), np.uint8), fps=10)
    (videos / "empty.avi").write_bytes(b"")
    good = (root / "train_motion.csv").read_text().splitlines()
    bad = ["corrupt.mp4 1", "short.mp4 2", "empty.avi 3", "missing.mp4 0"]
    (root / "mixed.csv").write_text("\n".join(good[:3] + bad + good[3:]) + "\n")
    speed = (root / "train_speed.csv").read_text().splitlines()
    (root / "targets.csv").write_text("\n".join(f"{line} {i / 4:.2f}" for i, line in enumerate(speed)) + "\n")
    return root


def _records(output):
    dataset = StreamingDataset(str(output))
    return sorted((dataset[i] for i in range(len(dataset))), key=lambda r: r["video_id"])


def test_bad_videos_are_skipped_and_reported(collection, tmp_path):
    out = tmp_path / "shards"
    summary = prepare_dataset(
        collection / "videos", out, collection / "mixed.csv", workers=2, min_frames=16, verbose=False
    )
    reasons = {s["path"].split("/")[-1]: s["reason"] for s in summary.skipped}
    assert set(reasons) == {"corrupt.mp4", "short.mp4", "empty.avi", "missing.mp4"}
    assert reasons["corrupt.mp4"].startswith("cannot open")
    assert reasons["short.mp4"] == "too short: 5 frames < min_frames=16"
    assert reasons["empty.avi"] == "empty file" and reasons["missing.mp4"] == "missing file"
    assert len(summary.videos) == 6 and "4 skipped" in summary.report()

    index = json.loads((out / INDEX_NAME).read_text())
    assert index["summary"]["written"] == 6 and index["label_kind"] == "class"
    assert [v["video_id"] for v in index["videos"]] == [0, 1, 2, 7, 8, 9]  # annotation lines
    assert all(v["frames"] == 24 and v["fps"] == 12 and v["width"] == 32 for v in index["videos"])

    records = _records(out)  # the rest is readable, labels round-trip as integers
    assert [r["video_id"] for r in records] == [0, 1, 2, 7, 8, 9]
    assert [int(r["label"][0]) for r in records] == [v["label"][0] for v in index["videos"]] == [0, 1, 2, 3, 0, 1]
    assert all(r["label_kind"] == 1 for r in records)
    frames = decode_frames(records[0], np.arange(24))
    assert frames.shape == (24, 32, 32, 3) and frames.dtype == np.uint8


def test_float_labels_round_trip(collection, tmp_path):
    prepare_dataset(collection / "videos", tmp_path / "shards", collection / "targets.csv", workers=1, verbose=False)
    expected = [line.split()[1:] for line in (collection / "targets.csv").read_text().splitlines()]
    records = _records(tmp_path / "shards")
    assert all(r["label_kind"] == 2 and r["label"].dtype == np.float64 for r in records)
    np.testing.assert_allclose([r["label"] for r in records], np.array(expected, dtype=float), rtol=1e-6)


def test_existing_output_needs_overwrite(collection, tmp_path, capsys):
    out = tmp_path / "shards"
    prepare_dataset(collection / "videos", out, collection / "train_motion.csv", workers=1, verbose=False)
    with pytest.raises(PrepareError, match="--overwrite"):
        prepare_dataset(collection / "videos", out, collection / "train_motion.csv", verbose=False)
    cli = [
        "--videos",
        str(collection / "videos"),
        "--annotations",
        str(collection / "train_speed.csv"),
        "--output",
        str(out),
        "--workers",
        "1",
    ]
    assert main(cli) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*cli, "--overwrite"]) == 0
    assert "6 videos written, 0 skipped" in capsys.readouterr().out
    assert json.loads((out / INDEX_NAME).read_text())["label_kind"] == "regression"
    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    (unrelated / "keep.txt").write_text("mine")
    with pytest.raises(PrepareError, match="not a prepared dataset"):
        prepare_dataset(collection / "videos", unrelated, collection / "train_motion.csv", overwrite=True)


def test_nothing_readable_is_an_error(collection, tmp_path):
    (tmp_path / "bad.csv").write_text("corrupt.mp4 1\nmissing.mp4 0\n")
    with pytest.raises(PrepareError, match="no video could be prepared"):
        prepare_dataset(collection / "videos", tmp_path / "shards", tmp_path / "bad.csv", verbose=False)
    assert not (tmp_path / "shards").exists()


def test_cli_script_without_annotations(collection, tmp_path, root):
    result = subprocess.run(
        [
            sys.executable,
            str(root / "launch/prepare_data.py"),
            "--videos",
            str(collection / "videos" / "val"),
            "--output",
            str(tmp_path / "out"),
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    assert "1 videos written, 0 skipped" in result.stdout
    assert json.loads((tmp_path / "out" / INDEX_NAME).read_text())["label_kind"] == "none"
