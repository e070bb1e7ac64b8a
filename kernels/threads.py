"""Running the torch twins on the calling thread alone.

Scoring, selecting and gathering a batch is a few milliseconds of work split over a dozen ops. On a CPU
shared with other processes, each op that fans out to the intra-op thread pool waits for a
scheduler slice before the second thread runs (milliseconds each), so the whole selection is
many times faster on one thread. Nothing else is affected: the previous count is restored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def calling_thread_only() -> Iterator[None]:
    """Run the body with one intra-op thread (usable as a decorator)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
