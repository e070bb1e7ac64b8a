"""Files everest writes: atomic replacement, and the name of the file that records a
checkpoint's architecture beside DeepSpeed's own files (standard library only)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

META_FILE = "everest_meta.json"


def atomic_write(path: Path, write: Callable[[IO[Any]], None], mode: str = "w") -> None:
    """Write `path` through `write(file)` into a hidden temporary beside it, flushed to disk,
    then renamed over `path`: a reader or a crash sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, mode) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
