"""Shared test setup: the repository root for the tests, torch on few threads."""

import os
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
