"""Preparation: videos + annotations -> litdata shards of re-encoded videos (`litdata.optimize`).

Every readable video becomes one record (see codec.py for the stored format); corrupt, empty,
unreadable and too-short videos are skipped and listed with the reason, never fatal. Besides
litdata's chunks and index.json, the output holds `everest_index.json`: the storage settings,
a summary and per-video metadata (frames, fps, size, label, bytes), keyed by `video_id`, the
video's line in the annotation file, which is also the "index" every loaded sample carries.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from everest.data.annotations import (
    CLASS_LABEL,
    REGRESSION_LABEL,
    UNLABELED,
    Annotations,
    VideoEntry,
    list_videos,
    read_annotations,
)
from everest.data.codec import StorageSettings, VideoReadError, transcode

INDEX_NAME = "everest_index.json"
LABEL_KIND_NAMES = {UNLABELED: "none", CLASS_LABEL: "class", REGRESSION_LABEL: "regression"}


class PrepareError(RuntimeError):
    """Preparation cannot go ahead (existing output, nothing readable, ...)."""


@dataclass
class PrepareSummary:
    """What a preparation run wrote and skipped."""

    output: Path
    videos: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    shard_bytes: int = 0

    @property
    def hours(self) -> float:
        return sum(v["frames"] / v["fps"] for v in self.videos) / 3600

    @property
    def source_bytes(self) -> int:
        return sum(v["source_bytes"] for v in self.videos)

    def report(self) -> str:
        minutes = max(self.hours * 60, 1e-9)
        lines = [
            f"prepared {self.output}: {len(self.videos)} videos written, {len(self.skipped)} skipped, "
            f"{self.hours:.3f} hours of video",
            f"  shards {self.shard_bytes / 1e6:.2f} MB on disk ({self.shard_bytes / minutes / 1e6:.2f} MB per "
            f"video-minute); sources {self.source_bytes / 1e6:.2f} MB "
            f"(shards/sources = {self.shard_bytes / max(self.source_bytes, 1):.2f})",
        ]
        if self.skipped:
            lines.append("  skipped:")
            lines += [f"    {s['path']}: {s['reason']}" for s in self.skipped]
        lines.append(f"  per-video index: {self.output / INDEX_NAME}")
        return "\n".join(lines)


@dataclass
class _Transcoder:
    """litdata `optimize` fn: annotation row -> record, or None (skipped); reports each outcome
    as one JSON line in `report_dir` (workers are separate processes)."""

    entries: list[VideoEntry]
    label_kind: int
    settings: StorageSettings
    min_frames: int
    report_dir: str

    def __call__(self, row: int) -> dict[str, Any] | None:
        entry = self.entries[row]
        report: dict[str, Any] = {"video_id": entry.video_id, "path": str(entry.path)}
        try:
            record = self._record(entry, report)
        except VideoReadError as err:
            record, report["reason"] = None, err.reason
        except Exception as err:  # noqa: BLE001 - a bad video must never stop the run
            record, report["reason"] = None, f"{type(err).__name__}: {err}"
        with open(Path(self.report_dir) / f"{os.getpid()}.jsonl", "a") as f:
            f.write(json.dumps(report) + "\n")
        return record

    def _record(self, entry: VideoEntry, report: dict[str, Any]) -> dict[str, Any]:
        if not entry.path.exists():
            raise VideoReadError("missing file")
        if not entry.path.is_file():
            raise VideoReadError("not a file")
        source_bytes = entry.path.stat().st_size
        if source_bytes == 0:
            raise VideoReadError("empty file")
        video = transcode(entry.path, self.settings)
        if video.num_frames < self.min_frames:
            raise VideoReadError(f"too short: {video.num_frames} frames < min_frames={self.min_frames}")
        report.update(
            frames=video.num_frames,
            fps=video.fps,
            width=video.width,
            height=video.height,
            source_width=video.source_size[0],
            source_height=video.source_size[1],
            label=list(entry.label),
            bytes=video.stored_bytes,
            source_bytes=source_bytes,
        )
        return {
            "video_id": entry.video_id,
            **video.as_record(),
            "label": np.asarray(entry.label, dtype=np.float64),
            "label_kind": self.label_kind,
        }


def _clear_output(output: Path, overwrite: bool) -> None:
    if not output.exists() or (output.is_dir() and not any(output.iterdir())):
        return
    if not overwrite:
        raise PrepareError(f"{output} already exists; pass --overwrite (overwrite=True) to replace it")
    if not output.is_dir() or not ((output / INDEX_NAME).exists() or (output / "index.json").exists()):
        raise PrepareError(f"{output} exists and is not a prepared dataset; refusing to delete it")
    shutil.rmtree(output)


def _read_reports(report_dir: Path) -> list[dict[str, Any]]:
    reports = []
    for path in report_dir.glob("*.jsonl"):
        reports += [json.loads(line) for line in path.read_text().splitlines() if line]
    return sorted(reports, key=lambda r: r["video_id"])


def prepare_dataset(
    videos: str | Path,
    output: str | Path,
    annotations: str | Path | None = None,
    *,
    settings: StorageSettings | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    min_frames: int = 16,
    chunk_bytes: str | int = "64MB",
    verbose: bool = True,
) -> PrepareSummary:
    """Re-encode the annotated videos (or every video under `videos` when `annotations` is None)
    into litdata shards at `output` and write the per-video index. Returns the summary."""
    from litdata import optimize

    settings = settings or StorageSettings()
    output = Path(output).resolve()
    table: Annotations = read_annotations(annotations, videos) if annotations is not None else list_videos(videos)
    _clear_output(output, overwrite)
    workers = max(1, min(workers or os.cpu_count() or 1, len(table.entries)))
    with tempfile.TemporaryDirectory(prefix="everest-prepare-") as report_dir:
        fn = _Transcoder(table.entries, table.label_kind, settings, min_frames, report_dir)
        # fork: workers start at once, and a caller's unguarded script is not re-run in them
        if verbose:
            print(f"preparing {len(table.entries)} videos into {output} with {workers} worker(s)", flush=True)
        # litdata's banners and per-worker chatter go to stdout: keep only its progress bar (stderr)
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            optimize(
                fn=fn,
                inputs=list(range(len(table.entries))),
                output_dir=str(output),
                num_workers=workers,
                keep_data_ordered=True,  # static slices per worker: the same shards on every run
                chunk_bytes=chunk_bytes,
                verbose=verbose,
                start_method="fork",
            )
        reports = _read_reports(Path(report_dir))
    if len(reports) < len(table.entries):
        shutil.rmtree(output, ignore_errors=True)
        raise PrepareError(
            f"{len(table.entries) - len(reports)} of {len(table.entries)} videos were never "
            "processed: the preparation workers died (see their errors above)"
        )
    summary = PrepareSummary(output, [r for r in reports if "reason" not in r], [r for r in reports if "reason" in r])
    if not summary.videos:
        shutil.rmtree(output, ignore_errors=True)
        raise PrepareError(
            "no video could be prepared:\n" + "\n".join(f"  {r['path']}: {r['reason']}" for r in summary.skipped)
        )
    summary.shard_bytes = sum(p.stat().st_size for p in output.glob("*.bin"))
    index = {
        "format": "everest-video-shards/1",
        "storage": settings.as_dict(),
        "min_frames": min_frames,
        "label_kind": LABEL_KIND_NAMES[table.label_kind],
        "label_dim": table.label_dim,
        "videos_dir": str(Path(videos).resolve()),
        "annotations": str(Path(annotations).resolve()) if annotations is not None else None,
        "summary": {
            "written": len(summary.videos),
            "skipped": len(summary.skipped),
            "hours": summary.hours,
            "shard_bytes": summary.shard_bytes,
            "source_bytes": summary.source_bytes,
        },
        "videos": summary.videos,
        "skipped": summary.skipped,
    }
    (output / INDEX_NAME).write_text(json.dumps(index, indent=1))
    return summary


def read_index(dataset: str | Path) -> dict[str, Any]:
    """The `everest_index.json` of a prepared local dataset."""
    path = Path(dataset) / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {dataset} is not a dataset prepared by launch/prepare_data.py")
    return json.loads(path.read_text())


def source_paths(dataset: str | Path) -> dict[int, str]:
    """video_id -> the source video's path as prepared, for a local prepared dataset; empty
    when there is no readable everest index (e.g. a remote dataset)."""
    try:
        return {int(v["video_id"]): str(v["path"]) for v in read_index(dataset)["videos"]}
    except (OSError, ValueError, KeyError):
        return {}
