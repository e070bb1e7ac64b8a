"""Ctrl-C and SIGTERM, from the first line of an entry point to its last.

Before training starts, a signal ends the process at once with one line on stderr and the
exit status 128 + signal (130 for SIGINT, 143 for SIGTERM): there is nothing to save yet.
During training `StopFlag` takes over: the signal only sets a flag, the loop stops at the next
step on every rank and saves a final checkpoint, and the entry point then exits with the same
status. Standard library only, so that it can be installed before any heavy import.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_status(signum: int) -> int:
    """The shell's convention for a process ended by `signum` (SIGINT 130, SIGTERM 143)."""
    return 128 + int(signum)


def _exit_now(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    print(f"interrupted ({name}) before training started: nothing was saved", file=sys.stderr, flush=True)
    raise SystemExit(exit_status(signum))


def exit_on_signal() -> None:
    """Make SIGINT/SIGTERM end the process cleanly (no traceback) until a StopFlag takes over."""
    for sig in SIGNALS:
        signal.signal(sig, _exit_now)


class StopFlag:
    """While active, SIGINT/SIGTERM only record the signal; the loop polls `raised`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def raised(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def __enter__(self) -> StopFlag:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
