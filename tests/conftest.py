"""Shared test setup: the repository root for the tests, torch on few threads."""

import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "2")

# One limit for every subprocess a test starts: generous for a slow, shared 2-core machine, and
# below pytest's per-test --timeout (900 s in the README command) so that a hang fails with the
# subprocess's own output. Tests assert no wall-clock limit on anything that is not about time.
SUBPROCESS_TIMEOUT_S = float(os.environ.get("EVEREST_TEST_SUBPROCESS_TIMEOUT", 600))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def root() -> Path:
    return ROOT


def free_port() -> str:
    """A TCP port nobody listens on now (for a test's process group)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launcher(ranks: int) -> list[str]:
    """The command that starts a script on `ranks` local ranks: plain Python for one, the
    deepspeed launcher (gloo on CPU) for more."""
    if ranks == 1:
        return [sys.executable]
    return [str(Path(sys.executable).with_name("deepspeed")), "--num_gpus", str(ranks), "--master_port", free_port()]
