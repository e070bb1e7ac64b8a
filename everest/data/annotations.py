"""Annotation files: one video per line, `path/to/video [label ...]`.

Fields are separated by commas or whitespace. No label means unlabeled (pretraining); one
integer per line means class indices; otherwise every value is a float (regression, one or more
targets). Paths are relative to the videos folder unless absolute. Blank lines, `#` comments and
a leading `path,label`-style header are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")
_HEADER_NAMES = {"path", "video", "file", "filename", "name", "video_path"}

# Label kinds stored with every record.
UNLABELED, CLASS_LABEL, REGRESSION_LABEL = 0, 1, 2


class AnnotationError(ValueError):
    """An annotation file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class VideoEntry:
    """One annotated video: its row (the dataset index), path and label values."""

    video_id: int
    path: Path
    label: tuple[float, ...]


@dataclass(frozen=True)
class Annotations:
    entries: list[VideoEntry]
    label_kind: int  # UNLABELED / CLASS_LABEL / REGRESSION_LABEL

    @property
    def label_dim(self) -> int:
        return len(self.entries[0].label) if self.entries else 0


def _split(line: str) -> list[str]:
    return [f.strip() for f in line.split(",")] if "," in line else line.split()


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_annotations(path: str | Path, videos_dir: str | Path) -> Annotations:
    """Parse an annotation file; raises AnnotationError naming the file and line."""
    path, videos_dir = Path(path), Path(videos_dir)
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    rows: list[tuple[int, str, list[str]]] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = _split(line)
        if not rows and fields[0].lower() in _HEADER_NAMES:
            continue
        rows.append((number, fields[0], fields[1:]))
    if not rows:
        raise AnnotationError(f"{path}: no video lines")
    dims = {len(labels) for _, _, labels in rows}
    if len(dims) > 1:
        first = {len(labels): n for n, _, labels in reversed(rows)}
        raise AnnotationError(
            f"{path}: lines carry different numbers of labels: "
            + ", ".join(f"{d} (line {first[d]})" for d in sorted(dims))
        )
    entries, is_int = [], True
    for video_id, (number, video, labels) in enumerate(rows):
        values = []
        for text in labels:
            value = _number(text)
            if value is None:
                raise AnnotationError(f"{path}:{number}: label {text!r} is not a number")
            is_int &= re.fullmatch(r"[+-]?\d+", text) is not None
            values.append(value)
        entries.append(VideoEntry(video_id, videos_dir / video, tuple(values)))
    dim = dims.pop()
    if dim == 0:
        kind = UNLABELED
    elif dim == 1 and is_int:
        kind = CLASS_LABEL
        negative = [e for e in entries if e.label[0] < 0]
        if negative:
            raise AnnotationError(f"{path}: class labels must be >= 0; {negative[0].path} has {negative[0].label[0]:g}")
    else:
        kind = REGRESSION_LABEL
    return Annotations(entries, kind)


def list_videos(videos_dir: str | Path) -> Annotations:
    """Every video file under `videos_dir` (recursively, sorted), unlabeled."""
    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise AnnotationError(f"videos folder not found: {videos_dir}")
    paths = sorted(p for p in videos_dir.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not paths:
        raise AnnotationError(f"{videos_dir}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
    return Annotations([VideoEntry(i, p, ()) for i, p in enumerate(paths)], UNLABELED)


def write_annotations(path: str | Path, rows: list[tuple[str, object]]) -> None:
    """Write `path label` lines (label: int, float, a sequence of floats, or None); floats keep a
    decimal point so that they read back as regression targets."""
    lines = []
    for video, label in rows:
        if label is None:
            lines.append(video)
        elif isinstance(label, (list, tuple)):
            lines.append(" ".join([video, *(f"{float(v):.6f}" for v in label)]))
        elif isinstance(label, int):
            lines.append(f"{video} {label}")
        else:
            lines.append(f"{video} {float(label):.6f}")
    Path(path).write_text("\n".join(lines) + "\n")
