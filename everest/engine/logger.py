"""Run records and metrics: a run folder (resolved config, the DeepSpeed JSON actually used,
the git revision), TensorBoard scalars and images, and a console progress bar. Rank 0 only."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from everest.config import Config, save_config


def git_revision(repo: Path) -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if rev.returncode != 0:
        return "unknown"
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def new_run_name() -> str:
    """A fresh run's name (its folder under logging.log_dir): the start time."""
    return time.strftime("run-%Y%m%d-%H%M%S")


class RunLogger:
    """Writes scalars to TensorBoard and a progress bar to the console on the main rank;
    a no-op on the others. A resumed run (start_step > 0) appends to its run folder: TensorBoard
    shows one run, and events past the resumed step (logged after its checkpoint) are purged."""

    def __init__(
        self,
        cfg: Config,
        ds_config: dict[str, Any],
        is_main: bool,
        total_steps: int,
        start_step: int = 0,
        run_name: str | None = None,
    ):
        self.is_main = is_main
        self.run_dir = Path(cfg.logging.log_dir) / (run_name or cfg.logging.run_name or new_run_name())
        self.writer = None
        self.bar = None
        if not is_main:
            return
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.run_dir / "config.yaml")
        (self.run_dir / "deepspeed.json").write_text(json.dumps(ds_config, indent=2))
        (self.run_dir / "git_revision.txt").write_text(git_revision(Path(__file__).resolve().parents[2]) + "\n")
        self.writer = SummaryWriter(str(self.run_dir), purge_step=start_step or None)
        self.bar = tqdm(
            total=total_steps, initial=start_step, desc="train", dynamic_ncols=True, mininterval=1.0, unit="step"
        )

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if value is not None and np.isfinite(value):
                self.writer.add_scalar(key, value, step)

    def image(self, tag: str, image_hwc: np.ndarray, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image_hwc, step, dataformats="HWC")

    def progress(self, step: int, postfix: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            self.bar.refresh()

    def print(self, text: str) -> None:
        if not self.is_main:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
