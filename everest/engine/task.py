"""What a task (pretraining, fine-tuning) gives the training loop."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


@dataclass
class StepContext:
    """Where the loop is: every source of randomness in a step derives from these."""

    epoch: int
    step: int  # optimizer steps done so far
    seed: int
    device: torch.device
    dtype: torch.dtype


@dataclass
class StepOutput:
    loss: Tensor
    clips: int
    encoder_tokens: int = 0
    decoder_tokens: int = 0
    # Sums over the batch (not means) so that epoch metrics are exact over unequal shards.
    sums: dict[str, float] = field(default_factory=dict)


def blank_batch(num_frames: int, size: int, label: Tensor | None = None) -> dict[str, Any]:
    """A one-clip batch of zeros in the loaders' format (padding for ranks out of data)."""
    batch = {"video": torch.zeros(1, num_frames, size, size, 3, dtype=torch.uint8), "index": torch.full((1,), -1)}
    if label is not None:
        batch["label"] = label
    return batch


class Task:
    """Base of the tasks the loop drives; subclasses set `module` (what DeepSpeed wraps) and
    implement param_groups and training_step. The hooks below default to doing nothing."""

    module: nn.Module
    draws_pictures: bool = False  # whether picture() returns images worth logging

    def param_groups(self, weight_decay: float) -> list[dict]:
        raise NotImplementedError

    def training_step(self, engine: nn.Module, batch: dict[str, Any], ctx: StepContext) -> StepOutput:
        raise NotImplementedError

    def on_engine_ready(self, engine: nn.Module, zero_stage: int, device: torch.device) -> None:
        """Called once after deepspeed.initialize (e.g. to copy the weights into an EMA)."""

    def after_step(self, engine: nn.Module, step: int) -> None:
        """Called after every optimizer step."""

    def reduce_metrics(self, sums: dict[str, float], prefix: str) -> dict[str, float]:
        """Epoch metrics from the all-reduced sums of StepOutput.sums."""
        return {}

    def evaluate(self, engine: nn.Module, batches: Iterable[dict[str, Any]], ctx: StepContext) -> dict[str, float]:
        return {}

    def start(
        self, engine: nn.Module, val_batches: Iterable[dict[str, Any]] | None, ctx: StepContext
    ) -> dict[str, float]:
        """Called once before the first step of a run (not on resume); metrics logged at step 0."""
        return {}

    def picture(self, engine: nn.Module, batch: dict[str, Any], ctx: StepContext) -> np.ndarray | None:
        return None

    def checkpoint_meta(self) -> dict[str, Any]:
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Task state saved with every checkpoint (e.g. EMA weights)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what extra_state returned."""
