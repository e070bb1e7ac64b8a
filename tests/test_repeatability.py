"""Same command, same numbers: two short pretraining runs on CPU in one process each, the second
on a freshly generated copy of the built-in data, log bitwise-equal losses and validation metrics."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, SUBPROCESS_TIMEOUT_S, launcher

TIMINGS = ("clips_per_s", "tokens_per_s", "data_wait_fraction", "peak_memory_gb")


def _run(tmp: Path, name: str, data: str) -> dict[str, list[tuple[int, float]]]:
    """Every logged scalar but the timings, as (step, value) pairs, from the run's TensorBoard file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = [
        str(ROOT / "launch" / "pretrain.py"),
        f"data.synthetic_dir={tmp / data}",
        "data.synthetic_videos=48",
        "data.synthetic_heldout=20",
        "data.synthetic_probe_videos=20",
        "training.max_epochs=2",
        "training.val_every_n_epochs=1",
        "logging.probe_every_n_epochs=1",
        "logging.log_freq=1",
        "logging.image_freq=0",
        f"checkpoint.dir={tmp / name / 'ck'}",
        f"logging.log_dir={tmp / name / 'logs'}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        launcher(1) + args, cwd=tmp, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, env=env
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (folder,) = (tmp / name / "logs").glob("run-*")
    events = EventAccumulator(str(folder))
    events.Reload()
    tags = [t for t in events.Tags()["scalars"] if not t.endswith(TIMINGS)]
    return {t: [(s.step, s.value) for s in events.Scalars(t)] for t in tags}


@pytest.mark.slow
def test_a_cpu_run_repeats_bitwise(tmp_path: Path):
    first = _run(tmp_path, "first", "data_a")
    second = _run(tmp_path, "second", "data_b")  # the built-in videos generated again
    assert {"train_loss", "val_loss", "pretext_progress", "probe_linear_acc1"} <= set(first)
    assert len(first["train_loss"]) == 6  # 48 clips / 16 per step x 2 epochs
    assert first == second
