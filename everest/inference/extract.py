"""Feature extraction: videos -> one array per video, in memory (`extract`) or into a folder
(`extract_to_folder`, what launch/extract_features.py runs, on 1..N ranks, resumable).

Decoding and cutting run in DataLoader workers, one video at a time per worker, in chunks of
windows; the main process batches chunks of any videos together for the encoder and hands a
video back once all its windows are encoded. A video that cannot be read is reported as
`Skipped` with the reason; the others go on.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from everest.config import ConfigError
from everest.engine.distributed import gather_objects
from everest.files import atomic_write
from everest.inference.encoder import FeatureEncoder, describe
from everest.inference.sampling import Sampling, Span
from everest.inference.sources import VideoSource, find_videos, open_video
from everest.inference.windows import Window, cut_views, plan_windows

Pooling = Literal["mean", "tokens"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
SETTINGS_FILE, INDEX_FILE, SKIPPED_FILE, REPORT_FILE = (
    "extraction_settings.json",
    "index.csv",
    "skipped.csv",
    "extraction.json",
)
TIMES_SUFFIX, KEPT_SUFFIX = ".windows.json", ".kept.npy"


@dataclass
class VideoFeatures:
    """One video's features: [windows, D] (mean pooling) or [windows, K, D] (tokens; `kept`
    [windows, K] are the token indices when MCM dropped some), with each window's interval in
    seconds and the frame indices it kept."""

    source: VideoSource
    features: np.ndarray
    windows: list[Window]
    frames: list[np.ndarray]
    fps: float
    num_frames: int
    kept: np.ndarray | None = None

    @property
    def path(self) -> str:
        return self.source.path

    @property
    def times(self) -> list[tuple[float, float]]:
        return [(w.start_s, w.end_s) for w in self.windows]


@dataclass
class Skipped:
    source: VideoSource
    reason: str


@dataclass
class _Pending:
    windows: list[Window]
    fps: float
    num_frames: int
    outputs: list[Any] = field(default_factory=list)
    frames: list[Any] = field(default_factory=list)
    kept: list[Any] = field(default_factory=list)
    done: int = 0

    def __post_init__(self) -> None:
        n = len(self.windows)
        self.outputs, self.frames, self.kept = [None] * n, [None] * n, [None] * n


class _ViewStream(IterableDataset):
    """Yields ('start', order, windows, fps, frames), ('views', order, first, views, picks) and
    ('failed', order, reason) for the sources this worker owns."""

    def __init__(self, sources: Sequence[VideoSource], sampling: Sampling, cfg, chunk: int):
        self.sources, self.sampling, self.cfg, self.chunk = list(sources), sampling, cfg, chunk

    def __iter__(self):
        info = get_worker_info()
        mine = self.sources[info.id :: info.num_workers] if info else self.sources
        for source in mine:
            try:
                video = open_video(source)
                windows = plan_windows(video.num_frames, video.fps, self.sampling, self.cfg)
                yield "start", source.order, windows, video.fps, video.num_frames
                for first in range(0, len(windows), self.chunk):
                    part = windows[first : first + self.chunk]
                    views, picks = cut_views(video.read, part, self.cfg, self.sampling.crops)
                    yield "views", source.order, first, views, picks
            except Exception as err:  # noqa: BLE001 - one bad video must not stop the others
                yield "failed", source.order, getattr(err, "reason", None) or f"{type(err).__name__}: {err}"


def _autocast(device: torch.device, precision: Precision):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if precision == "auto" and device.type == "cuda":
        dtype = torch.bfloat16
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def iter_features(
    encoder: FeatureEncoder,
    sources: Sequence[VideoSource],
    sampling: Sampling,
    pooling: Pooling = "mean",
    batch_size: int = 8,
    workers: int = 0,
    precision: Precision = "auto",
    stats: dict | None = None,
) -> Iterator[VideoFeatures | Skipped]:
    """VideoFeatures or Skipped for every source, in the order videos finish. `encoder` runs
    where its parameters are; `batch_size` counts clips (window x crop views) per forward.
    `stats`, when given, gains 'clips' and 'windows' counts."""
    if pooling not in ("mean", "tokens"):
        raise ValueError(f"pooling={pooling!r}: choose 'mean' or 'tokens'")
    if pooling == "tokens" and sampling.crops != 1:
        raise ValueError("token-level output takes one crop per window (crops=1)")
    by_order = {s.order: s for s in sources}
    stream = _ViewStream(sources, sampling, encoder.cfg, chunk=max(1, batch_size // sampling.crops))
    loader = DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=False)
    device = encoder.encoder.patch_embed.proj.weight.device
    pending: dict[int, _Pending] = {}
    queue: list[tuple[int, int, torch.Tensor, list]] = []
    stats = stats if stats is not None else {}
    stats.setdefault("clips", 0)
    stats.setdefault("windows", 0)

    def run_queue() -> Iterator[VideoFeatures]:
        views = torch.cat([q[2] for q in queue])
        n, crops = views.shape[:2]
        with torch.no_grad(), _autocast(device, precision):
            tokens, keep = encoder(views.flatten(0, 1))
            out = encoder.pool(tokens).float().view(n, crops, -1).mean(1) if pooling == "mean" else tokens.float()
        out = out.cpu().numpy()
        keep = keep.cpu().numpy() if keep is not None else None
        row = 0
        for order, first, part, picks in queue:
            p = pending.get(order)
            for j in range(len(part)):
                if p is not None:
                    p.outputs[first + j], p.frames[first + j] = out[row], picks[j]
                    p.kept[first + j] = keep[row] if keep is not None else None
                    p.done += 1
                row += 1
        stats["clips"] += n * crops
        stats["windows"] += n
        queue.clear()
        for order in [o for o, p in pending.items() if p.done == len(p.windows)]:
            p = pending.pop(order)
            kept = np.stack(p.kept) if pooling == "tokens" and p.kept[0] is not None else None
            yield VideoFeatures(by_order[order], np.stack(p.outputs), p.windows, p.frames, p.fps, p.num_frames, kept)

    queued = 0
    for item in loader:
        kind, order = item[0], item[1]
        if kind == "failed":
            pending.pop(order, None)
            yield Skipped(by_order[order], item[2])
        elif kind == "start":
            pending[order] = _Pending(item[2], item[3], item[4])
        else:
            queue.append((order, item[2], item[3], item[4]))
            queued += item[3].shape[0] * item[3].shape[1]
            if queued >= batch_size:
                yield from run_queue()
                queued = 0
    if queue:
        yield from run_queue()


def extract(
    encoder: FeatureEncoder,
    videos: str | Path,
    *,
    clips: int | None = None,
    window: str | None = None,
    stride: str | None = None,
    crops: int = 1,
    pooling: Pooling = "mean",
    batch_size: int = 8,
    workers: int = 0,
    precision: Precision = "auto",
    root: str | Path | None = None,
    on_skip: Callable[[Skipped], None] | None = None,
) -> Iterator[VideoFeatures]:
    """Features of every video named by `videos` (a folder, glob, video file, list file or
    prepared dataset; see find_videos), as videos finish. Windows: `clips` per video, or sliding
    `window`/`stride` ('64' frames, '2s'); default: the whole video in clip-long windows.
    Unreadable videos go to `on_skip` (default: one line on stderr)."""
    sampling = Sampling(clips, Span.parse(window) if window else None, Span.parse(stride) if stride else None, crops)
    report = on_skip or (lambda s: print(f"skipped {s.source.path}: {s.reason}", file=sys.stderr, flush=True))
    for result in iter_features(encoder, find_videos(videos, root), sampling, pooling, batch_size, workers, precision):
        if isinstance(result, Skipped):
            report(result)
        else:
            yield result


# ---------------------------------------------------------------------------- into a folder


def _times_file(out: Path, source: VideoSource) -> Path:
    return out / f"{source.name}{TIMES_SUFFIX}"


def is_done(out: Path, source: VideoSource) -> bool:
    """A video is done once its windows file exists (written after its features)."""
    return _times_file(out, source).is_file() and (out / f"{source.name}.npy").is_file()


def write_video_features(out: Path, result: VideoFeatures, rank: int) -> None:
    """`name.npy`, `name.kept.npy` (token level under MCM) and then `name.windows.json`."""
    source = result.source
    atomic_write(out / f"{source.name}.npy", lambda f: np.save(f, result.features), mode="wb")
    if result.kept is not None:
        atomic_write(out / f"{source.name}{KEPT_SUFFIX}", lambda f: np.save(f, result.kept), mode="wb")
    times = {
        "path": source.path,
        "order": source.order,
        "file": f"{source.name}.npy",
        "kept_file": f"{source.name}{KEPT_SUFFIX}" if result.kept is not None else None,
        "shape": list(result.features.shape),
        "fps": result.fps,
        "num_frames": result.num_frames,
        "rank": rank,
        "windows": [
            {"start_s": round(w.start_s, 6), "end_s": round(w.end_s, 6), "frames": f.tolist()}
            for w, f in zip(result.windows, result.frames)
        ],
    }
    atomic_write(_times_file(out, source), lambda f: json.dump(times, f, indent=1))


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def _check_settings(out: Path, settings: dict, is_main: bool) -> None:
    """Refuse to mix features made with other settings into `out`; rank 0 records them."""
    path = out / SETTINGS_FILE
    if path.is_file():
        before, now = _flat(json.loads(path.read_text())), _flat(json.loads(json.dumps(settings)))
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if changed:
            detail = "; ".join(f"{k}: {before.get(k)!r} then, {now.get(k)!r} now" for k in changed[:3])
            raise ConfigError(
                f"{out} holds features made with other settings ({detail}); "
                "choose another --output, or delete that folder to start again"
            )
    elif is_main:
        atomic_write(path, lambda f: json.dump(settings, f, indent=1))


def _write_index(out: Path, sources: Sequence[VideoSource]) -> int:
    rows = 0
    with open(out / INDEX_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "file", "windows", "times", "fps", "video_frames", "shape", "kept_file"])
        for source in sources:
            if not is_done(out, source):
                continue
            t = json.loads(_times_file(out, source).read_text())
            writer.writerow(
                [
                    source.path,
                    t["file"],
                    len(t["windows"]),
                    _times_file(out, source).relative_to(out),
                    f"{t['fps']:.6g}",
                    t["num_frames"],
                    "x".join(map(str, t["shape"])),
                    t["kept_file"] or "",
                ]
            )
            rows += 1
    return rows


def extract_to_folder(
    encoder: FeatureEncoder,
    videos: str,
    output: str | Path,
    sampling: Sampling,
    *,
    checkpoint: str = "",
    root: str | None = None,
    pooling: Pooling = "mean",
    batch_size: int = 8,
    workers: int = 0,
    precision: Precision = "auto",
    progress: bool = True,
) -> dict[str, Any] | None:
    """Extract every video not already done into `output` (module docstring of
    launch/extract_features.py for the layout). Under torch.distributed the videos are split
    over the ranks; rank 0 writes the index and returns the run report (others: None)."""
    from tqdm import tqdm

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    out = Path(output)
    sources = find_videos(videos, root)
    settings = {
        "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else "",
        "videos": str(Path(videos).expanduser().resolve()),
        "root": root,
        "sampling": {
            "clips": sampling.clips,
            "window": str(sampling.window) if sampling.window else None,
            "stride": str(sampling.stride) if sampling.stride else None,
            "crops": sampling.crops,
        },
        "pooling": pooling,
        "encoder": describe(encoder),
    }
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings, rank == 0)
    todo = [s for s in sources if not is_done(out, s)]
    if dist.is_initialized():
        dist.barrier()  # every rank listed the same finished videos before anyone writes
    mine = todo[rank::world]
    stats: dict[str, Any] = {}
    written, skipped = [], []
    bar = tqdm(
        total=len(mine),
        unit="video",
        disable=not progress or rank != 0,
        dynamic_ncols=True,
        desc=f"extracting ({world} rank{'s' if world > 1 else ''})",
    )
    started = time.perf_counter()
    for result in iter_features(encoder, mine, sampling, pooling, batch_size, workers, precision, stats):
        if isinstance(result, Skipped):
            skipped.append({"path": result.source.path, "reason": result.reason})
        else:
            write_video_features(out, result, rank)
            written.append(result.source.path)
        bar.update(1)
        bar.set_postfix(clips_per_s=f"{stats['clips'] / max(time.perf_counter() - started, 1e-9):.2f}")
    bar.close()
    mine_report = {
        "rank": rank,
        "written": written,
        "skipped": skipped,
        "clips": stats["clips"],
        "windows": stats["windows"],
        "seconds": time.perf_counter() - started,
    }
    reports = gather_objects(mine_report)
    if rank != 0:
        return None
    skipped = [s for r in reports for s in r["skipped"]]
    with open(out / SKIPPED_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason"])
        writer.writerows([s["path"], s["reason"]] for s in skipped)
    seconds = max(r["seconds"] for r in reports)
    done = sum(len(r["written"]) for r in reports)
    report = {
        "videos": len(sources),
        "already_done": len(sources) - len(todo),
        "written": done,
        "skipped": skipped,
        "indexed": _write_index(out, sources),
        "ranks": world,
        "written_by_rank": {r["rank"]: r["written"] for r in reports},
        "clips": sum(r["clips"] for r in reports),
        "windows": sum(r["windows"] for r in reports),
        "seconds": seconds,
        "videos_per_s": done / max(seconds, 1e-9),
        "clips_per_s": sum(r["clips"] for r in reports) / max(seconds, 1e-9),
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=1))
    return report
