"""Which videos an inference run reads: a folder (recursive), a glob, an annotation/list file,
or a prepared dataset (litdata shards written by launch/prepare_data.py).

Every video becomes a `VideoSource`: the path as the user gave it (what outputs are keyed by),
the file to open (or the shard record to read), a unique output name, and its label when the
list has one. `open_video` turns a source into frame count, frame rate and a frame reader.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np

from everest.data.annotations import UNLABELED, VIDEO_EXTENSIONS, AnnotationError, list_videos, read_annotations
from everest.data.codec import decode_frames, probe_source, read_source_frames


@dataclass(frozen=True)
class VideoSource:
    """One input video. `order` is its position in the input (stable across runs and ranks);
    `name` is a unique relative path without suffix for its output files."""

    order: int
    path: str
    name: str
    location: str | None = None  # the file to decode
    shard: tuple[str, int] | None = None  # (prepared dataset folder, record position)
    label: tuple[float, ...] = ()
    label_kind: int = UNLABELED


@dataclass
class OpenVideo:
    """A video ready to sample: `read(indices)` gives RGB uint8 [len(indices), H, W, 3]."""

    num_frames: int
    fps: float
    read: Callable[[Sequence[int]], np.ndarray]


def is_prepared_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "index.json").is_file() and (path / "everest_index.json").is_file()


def _name(relative: str, order: int) -> str:
    """An output name from a relative path: the path without its suffix, or `order_stem` when it
    would leave the output folder."""
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        return f"{order:06d}_{pure.stem or 'video'}"
    return str(pure.with_suffix(""))


def _unique(sources: list[VideoSource]) -> list[VideoSource]:
    seen: set[str] = set()
    out = []
    for s in sources:
        name = s.name if s.name not in seen else f"{s.name}_{s.order:06d}"
        seen.add(name)
        out.append(s if name == s.name else replace(s, name=name))
    return out


def _from_folder(folder: Path, given: str) -> list[VideoSource]:
    table = list_videos(folder)
    return [
        VideoSource(
            e.video_id,
            str(Path(given) / e.path.relative_to(folder)),
            _name(str(e.path.relative_to(folder)), e.video_id),
            location=str(e.path),
        )
        for e in table.entries
    ]


def _from_glob(pattern: str) -> list[VideoSource]:
    matches = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not matches:
        raise AnnotationError(f"--videos {pattern}: the pattern matches no file")
    literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    base = Path(literal if literal.endswith(("/", "\\")) else Path(literal).parent)
    sources = []
    for order, match in enumerate(matches):
        try:
            relative = str(Path(match).relative_to(base))
        except ValueError:
            relative = Path(match).name
        sources.append(VideoSource(order, match, _name(relative, order), location=match))
    return sources


def _from_list(list_file: Path, root: Path) -> list[VideoSource]:
    table = read_annotations(list_file, root)
    sources = []
    for e in table.entries:
        given = str(e.path.relative_to(root)) if e.path.is_relative_to(root) else str(e.path)
        sources.append(
            VideoSource(
                e.video_id,
                given,
                _name(given, e.video_id),
                location=str(e.path),
                label=e.label,
                label_kind=table.label_kind,
            )
        )
    return sources


def _from_prepared(dataset: Path) -> list[VideoSource]:
    from litdata import StreamingDataset

    from everest.data.prepare import read_index

    index = read_index(dataset)
    videos = {int(v["video_id"]): v for v in index["videos"]}
    videos_dir = Path(index.get("videos_dir") or "/")
    records = StreamingDataset(str(dataset.resolve()))
    sources = []
    for position in range(len(records)):
        record = StreamingDataset.__getitem__(records, position)  # the record's fields; nothing is decoded
        video_id = int(record["video_id"])
        path = str(videos.get(video_id, {}).get("path", f"video_{video_id:06d}"))
        relative = str(Path(path).relative_to(videos_dir)) if Path(path).is_relative_to(videos_dir) else path
        sources.append(
            VideoSource(
                video_id,
                path,
                _name(relative, video_id),
                shard=(str(dataset.resolve()), position),
                label=tuple(np.asarray(record["label"]).tolist()),
                label_kind=int(record["label_kind"]),
            )
        )
    return sorted(sources, key=lambda s: s.order)


def find_videos(videos: str | Path, root: str | Path | None = None) -> list[VideoSource]:
    """The videos named by `videos`: a prepared dataset folder, a folder (searched recursively),
    a glob pattern, one video file, or an annotation/list file of `path [label ...]` lines whose
    relative paths start at `root` (default: the list file's folder). Raises AnnotationError
    naming what was not found."""
    videos = str(videos)
    path = Path(videos).expanduser()
    if is_prepared_dataset(path):
        found = _from_prepared(path)
    elif path.is_dir():
        found = _from_folder(path, videos)
    elif path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
        found = [VideoSource(0, videos, _name(path.name, 0), location=str(path))]
    elif path.is_file():
        found = _from_list(path, Path(root).expanduser() if root else path.parent)
    elif any(c in videos for c in "*?["):
        found = _from_glob(videos)
    else:
        raise AnnotationError(f"--videos {videos}: no such file, folder or glob match")
    if not found:
        raise AnnotationError(f"--videos {videos}: no videos there")
    return _unique(found)


_SHARDS: dict[str, object] = {}  # per process: one open StreamingDataset per prepared folder


def _record(dataset: str, position: int) -> dict:
    from litdata import StreamingDataset

    if dataset not in _SHARDS:
        _SHARDS[dataset] = StreamingDataset(dataset)
    return StreamingDataset.__getitem__(_SHARDS[dataset], position)


def open_video(source: VideoSource) -> OpenVideo:
    """Frame count, frame rate and reader of a source; raises VideoReadError for an unusable file."""
    if source.shard is not None:
        record = _record(*source.shard)
        return OpenVideo(
            int(record["num_frames"]), float(record["fps"]), lambda indices: decode_frames(record, indices)
        )
    location = source.location
    num_frames, fps = probe_source(location)
    return OpenVideo(num_frames, fps, lambda indices: read_source_frames(location, indices))
