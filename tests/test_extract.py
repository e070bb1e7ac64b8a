"""Feature extraction on raw video files (launch/extract_features.py, everest.extract): the
features equal a direct forward of the loaded encoder on the same frames, with and without MCM;
bad files are skipped and named; resume; two ranks write what one rank writes, each video once;
window layouts; prepared shards as input."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from everest.cli import extract_features
from everest.config import load_config
from everest.data.builtin.synthetic import Motion, render, write_video
from everest.data.codec import iter_source_frames
from everest.models import PretrainAutoencoder, VideoClassifier, load_encoder, save_everest
from everest.models.vit import VideoViTSpec
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]

MEAN, STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
SPEC = dict(embed_dim=32, depth=2, num_heads=2, input_size=32, patch_size=8, num_frames=4)
FRAMES = {"a.mp4": 20, "b.mp4": 27, "deep/c.mp4": 36, "deep/d.mp4": 12}  # height 32 = input_size: no resize


def make_videos(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    for k, (name, frames) in enumerate(FRAMES.items()):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        video = render(Motion.draw(k % 4, 40, rng), 40, frames, rng)[:, 4:36]  # [T, 32, 40, 3]
        write_video(folder / name, np.ascontiguousarray(video), fps=10)
    good = (folder / "a.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (folder / "garbage.mp4").write_bytes(os.urandom(3000))
    (folder / "empty.mp4").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("extract")
    make_videos(work / "videos")
    torch.manual_seed(0)
    save_everest(
        PretrainAutoencoder(VideoViTSpec(**SPEC, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=1)),
        work / "pretrain.pt",
    )
    save_everest(VideoClassifier(VideoViTSpec(**SPEC), 4, init_scale=1.0), work / "classifier.pt")
    (work / "cfg.yaml").write_text(
        "data: {normalize_mean: [0.45, 0.45, 0.45], normalize_std: [0.225, 0.225, 0.225]}\n"
        "model: {embed_dim: 32, depth: 2, num_heads: 2, input_size: 32, patch_size: 8, num_classes: 4,"
        " mcm_ratio: 0.4}\n"
        "training: {num_frames: 4, frames_to_sample: 4, temporal_stride: 2, test_num_segment: 2,"
        " test_num_crop: 2, num_workers: 0, val_batch_size: 2}\n"
    )
    return work


def extract(work: Path, out: str, *extra: str, checkpoint: str = "pretrain.pt") -> int:
    return extract_features.main(
        [
            "--checkpoint",
            str(work / checkpoint),
            "--videos",
            str(work / "videos"),
            "--output",
            str(work / out),
            "--config",
            str(work / "cfg.yaml"),
            "--batch_size",
            "3",
            "--no_progress",
            *extra,
        ]
    )


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def reference_features(
    work: Path,
    checkpoint: str,
    name: str,
    frames: list[list[int]],
    crops: int,
    mcm_ratio: float | None,
    fc_norm: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A direct forward of the encoder loaded on its own: frames decoded by a full sequential
    pass, cropped and normalised by hand, MCM tokens chosen by a stable sort of the motion
    scores. Returns (pooled [W, D], token features [W, K, D] of crop 0, kept indices)."""
    encoder = load_encoder(work / checkpoint)
    every = np.stack(list(iter_source_frames(work / "videos" / name)))
    lefts = [4] if crops == 1 else [0, 4, 8]
    pooled, token_out, kept = [], [], []
    for picks in frames:
        views = torch.from_numpy(every[picks]).float()[None].repeat(crops, 1, 1, 1, 1)
        views = torch.stack([views[i, :, :, left : left + 32] for i, left in enumerate(lefts)])
        x = ((views / 255 - torch.tensor(MEAN)) / torch.tensor(STD)).permute(0, 4, 1, 2, 3)  # [V, 3, F, H, W]
        with torch.no_grad():
            tokens = encoder.embed(x)
            keep = None
            if mcm_ratio is not None:
                slots = tokens.view(crops, 2, 16, -1)
                score = (slots[:, 1:] - slots[:, :-1]).norm(dim=-1)
                score = torch.cat([score[:, :1], score], dim=1).flatten(1)
                order = torch.sort(-score, dim=1, stable=True).indices
                keep = order[:, : int((1 - mcm_ratio) * 32)].sort(dim=1).values
            feats = encoder.encode(tokens, keep)
        mean = feats.mean(1)
        if fc_norm:
            from everest.models import load_classifier

            mean = load_classifier(work / checkpoint).fc_norm(mean)
        pooled.append(mean.mean(0))
        token_out.append(feats[0])
        kept.append(keep[0] if keep is not None else None)
    return torch.stack(pooled), torch.stack(token_out), (torch.stack(kept) if mcm_ratio is not None else None)


@pytest.fixture(scope="module")
def one_rank(work: Path) -> Path:
    assert extract(work, "one", "--window", "6", "--stride", "4", "model.mcm=true") == 1  # some were skipped
    return work / "one"


def test_features_equal_a_direct_forward_and_bad_files_are_named(work: Path, one_rank: Path):
    index = read_csv(one_rank / "index.csv")
    assert sorted(Path(r["path"]).relative_to(work / "videos").as_posix() for r in index) == sorted(FRAMES)
    skipped = {Path(r["path"]).name: r["reason"] for r in read_csv(one_rank / "skipped.csv")}
    assert set(skipped) == {"truncated.mp4", "garbage.mp4", "empty.mp4"}
    assert skipped["empty.mp4"] == "empty file"
    # random bytes: libav either refuses them or opens a "container" with no video in it
    assert "cannot open" in skipped["garbage.mp4"] or "no video stream" in skipped["garbage.mp4"]
    for row in index:
        times = json.loads((one_rank / row["times"]).read_text())
        frames = [w["frames"] for w in times["windows"]]
        got = torch.from_numpy(np.load(one_rank / row["file"]))
        assert got.shape == (int(row["windows"]), 32)
        expected, _, _ = reference_features(work, "pretrain.pt", times["path"].split("videos/")[1], frames, 1, 0.4)
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


def test_token_level_and_crops_without_mcm_and_fine_tuned_fc_norm(work: Path):
    assert extract(work, "tokens", "--clips", "2", "--pooling", "tokens", "model.mcm=true", "--workers", "1") == 1
    times = json.loads((work / "tokens" / "b.windows.json").read_text())
    frames = [w["frames"] for w in times["windows"]]
    assert [(w["start_s"], w["end_s"]) for w in times["windows"]] == [(0.0, 0.7), (2.0, 2.7)]  # 27 frames, 10 fps
    _, tokens, kept = reference_features(work, "pretrain.pt", "b.mp4", frames, 1, 0.4)
    torch.testing.assert_close(torch.from_numpy(np.load(work / "tokens" / "b.npy")), tokens, atol=2e-5, rtol=1e-4)
    assert torch.equal(torch.from_numpy(np.load(work / "tokens" / "b.kept.npy")), kept)

    assert extract(work, "crops", "--clips", "3", "--crops", "3", checkpoint="classifier.pt") == 1
    times = json.loads((work / "crops" / "deep" / "c.windows.json").read_text())
    pooled, _, _ = reference_features(
        work, "classifier.pt", "deep/c.mp4", [w["frames"] for w in times["windows"]], 3, None, fc_norm=True
    )
    torch.testing.assert_close(
        torch.from_numpy(np.load(work / "crops" / "deep" / "c.npy")), pooled, atol=2e-5, rtol=1e-4
    )


def test_python_api_gives_the_folder_features(work: Path, one_rank: Path):
    import everest

    encoder = everest.load_encoder(work / "pretrain.pt", work / "cfg.yaml", ["model.mcm=true"])
    skipped = []
    got = {
        Path(v.path).name: v
        for v in everest.extract(encoder, str(work / "videos" / "deep"), window="6", stride="4", on_skip=skipped.append)
    }
    assert sorted(got) == ["c.mp4", "d.mp4"] and not skipped
    np.testing.assert_allclose(got["c.mp4"].features, np.load(one_rank / "deep" / "c.npy"), atol=1e-5)
    assert got["d.mp4"].times == [(0.0, 0.6), (0.4, 1.0), (0.6, 1.2)]  # 12 frames: 0, 4 and the tail at 6


def test_resume_skips_finished_videos_and_refuses_other_settings(work: Path, one_rank: Path, capsys):
    out = work / "resume"
    shutil.copytree(one_rank, out)
    for f in (out / "b.npy", out / "b.windows.json"):
        f.unlink()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    assert extract(work, "resume", "--window", "6", "--stride", "4", "model.mcm=true") == 1
    report = json.loads((out / "extraction.json").read_text())
    assert report["already_done"] == 3 and report["written_by_rank"]["0"] == [str(work / "videos" / "b.mp4")]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    np.testing.assert_array_equal(np.load(out / "b.npy"), np.load(one_rank / "b.npy"))
    assert len(read_csv(out / "index.csv")) == 4
    assert extract(work, "resume", "--window", "6", "--stride", "4") == 2  # no MCM now: refused
    assert "encoder.mcm_ratio: 0.4 then, None now" in capsys.readouterr().err


@pytest.mark.slow
def test_two_ranks_write_what_one_rank_writes_each_video_once(work: Path, one_rank: Path):
    deepspeed = str(Path(sys.executable).with_name("deepspeed"))
    cmd = [
        deepspeed,
        "--num_gpus",
        "2",
        "--master_port",
        free_port(),
        str(ROOT / "launch" / "extract_features.py"),
        "--checkpoint",
        str(work / "pretrain.pt"),
        "--videos",
        str(work / "videos"),
        "--output",
        str(work / "two"),
        "--config",
        str(work / "cfg.yaml"),
        "--batch_size",
        "2",
        "--window",
        "6",
        "--stride",
        "4",
        "--no_progress",
        "model.mcm=true",
    ]
    proc = subprocess.run(
        cmd,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode != 0 and "skipped" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((work / "two" / "extraction.json").read_text())
    by_rank = report["written_by_rank"]
    assert set(by_rank) == {"0", "1"} and all(by_rank.values())
    assert sorted(by_rank["0"] + by_rank["1"]) == sorted(str(work / "videos" / n) for n in FRAMES)  # each once
    assert len(report["skipped"]) == 3
    assert read_csv(work / "two" / "index.csv") == read_csv(one_rank / "index.csv")
    files = sorted(p.relative_to(one_rank) for p in one_rank.rglob("*.npy"))
    assert files == sorted(p.relative_to(work / "two") for p in (work / "two").rglob("*.npy"))
    for f in files:
        np.testing.assert_allclose(np.load(work / "two" / f), np.load(one_rank / f), atol=1e-5)


def test_window_layouts():
    from everest.inference.sampling import Sampling, Span
    from everest.inference.windows import plan_windows

    cfg = load_config(None, ["training.num_frames=4", "training.frames_to_sample=4", "training.temporal_stride=3"])
    sliding = plan_windows(30, 10.0, Sampling(window=Span.parse("1s"), stride=Span.parse("0.5s")), cfg)
    assert [w.candidates.tolist()[0] for w in sliding] == [0, 5, 10, 15, 20]
    assert sliding[1].candidates.tolist() == [5, 7, 10, 12] and (sliding[1].start_s, sliding[1].end_s) == (0.5, 1.5)
    default = plan_windows(26, 10.0, Sampling(), cfg)  # 12-frame windows, no overlap, then the tail
    assert [w.candidates.tolist() for w in default] == [[0, 3, 6, 9], [12, 15, 18, 21], [14, 17, 20, 23]]
    short = plan_windows(5, 10.0, Sampling(clips=2), cfg)  # shorter than a window: the last frame repeats
    assert [w.candidates.tolist() for w in short] == [[0, 3, 4, 4]] * 2
    with pytest.raises(ValueError, match="either clips"):
        Sampling(clips=2, window=Span.parse("8"))
    with pytest.raises(ValueError, match="seconds"):
        Span.parse("2.5")


def test_segments_cut_the_views_evaluation_cuts(work: Path):
    from everest.data.loader import clip_maker
    from everest.inference.sampling import Sampling
    from everest.inference.sources import find_videos, open_video
    from everest.inference.windows import cut_views, plan_windows

    cfg = load_config(
        work / "cfg.yaml",
        ["training.frames_to_sample=8", "training.frame_selection=information", "augmentation.short_side_size=40"],
    )
    source = next(s for s in find_videos(str(work / "videos")) if s.path.endswith("c.mp4"))
    video = open_video(source)
    windows = plan_windows(video.num_frames, video.fps, Sampling(clips=2, crops=2), cfg)
    views, _ = cut_views(video.read, windows, cfg, crops=2)
    record = {"video_id": 0, "num_frames": video.num_frames, "label": np.zeros(0), "label_kind": 0}
    maker = clip_maker(cfg, "test", multiview=True)
    maker.read_frames = lambda _record, indices: video.read(indices)
    assert torch.equal(views.flatten(0, 1), maker(record)["video"])


def test_video_sources_from_folder_glob_list_and_one_file(work: Path, tmp_path: Path):
    from everest.data.annotations import AnnotationError
    from everest.inference.sources import find_videos

    videos = work / "videos"
    folder = find_videos(videos)
    assert [s.name for s in folder] == ["a", "b", "deep/c", "deep/d", "empty", "garbage", "truncated"]
    assert [s.name for s in find_videos(f"{videos}/**/c*.mp4")] == ["deep/c"]
    assert [s.name for s in find_videos(f"{videos}/*.mp4")][:2] == ["a", "b"]
    (tmp_path / "list.txt").write_text("deep/c.mp4 2\n/elsewhere/a.mp4 1\n")
    listed = find_videos(tmp_path / "list.txt", root=videos)
    assert [(s.path, s.name, s.label) for s in listed] == [
        ("deep/c.mp4", "deep/c", (2.0,)),
        ("/elsewhere/a.mp4", "000001_a", (1.0,)),
    ]
    assert [s.path for s in find_videos(videos / "b.mp4")] == [str(videos / "b.mp4")]
    with pytest.raises(AnnotationError, match="matches no file"):
        find_videos(f"{videos}/*.webm")
    with pytest.raises(AnnotationError, match="no such file"):
        find_videos(tmp_path / "missing")
