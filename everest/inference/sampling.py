"""The window layout of an inference run as the user states it (standard library only, so that
the command line is checked before any heavy import). See windows.py for what it means."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPAN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|f|frames)?\s*$")


@dataclass(frozen=True)
class Span:
    """A length given in frames or seconds."""

    value: float
    seconds: bool

    @classmethod
    def parse(cls, text: str) -> Span:
        """'16' or '16f' -> 16 frames; '2.5s' -> 2.5 seconds. Raises ValueError."""
        match = _SPAN.match(str(text))
        if not match or float(match.group(1)) <= 0:
            raise ValueError(f"{text!r} is not a positive length in frames ('64') or seconds ('2.5s')")
        seconds = match.group(2) in ("s", "sec")
        if not seconds and not float(match.group(1)).is_integer():
            raise ValueError(f"{text!r}: a length in frames must be whole; add 's' for seconds")
        return cls(float(match.group(1)), seconds)

    def frames(self, fps: float) -> int:
        return max(1, int(round(self.value * fps))) if self.seconds else int(self.value)

    def __str__(self) -> str:
        return f"{self.value:g}s" if self.seconds else f"{int(self.value)}"


@dataclass(frozen=True)
class Sampling:
    """The window layout (see windows.py); `clips` and `window` exclude each other."""

    clips: int | None = None
    window: Span | None = None
    stride: Span | None = None
    crops: int = 1

    def __post_init__(self) -> None:
        if self.clips is not None and (self.window is not None or self.stride is not None):
            raise ValueError("choose either clips per video or a sliding window (window/stride), not both")
        if self.clips is not None and self.clips < 1:
            raise ValueError(f"clips={self.clips} must be >= 1")
        if self.crops < 1:
            raise ValueError(f"crops={self.crops} must be >= 1")
