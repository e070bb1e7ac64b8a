"""What a task (pretraining, fine-tuning) gives the training loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

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


class Task(Protocol):
    module: nn.Module  # what DeepSpeed wraps

    def param_groups(self, weight_decay: float) -> list[dict]: ...

    def training_step(self, engine: nn.Module, batch: dict[str, Any], ctx: StepContext) -> StepOutput: ...

    def reduce_metrics(self, sums: dict[str, float], prefix: str) -> dict[str, float]:
        """Epoch metrics from the all-reduced sums."""
        ...

    def evaluate(self, engine: nn.Module, batches: Iterable[dict[str, Any]], ctx: StepContext) -> dict[str, float]: ...

    def picture(self, engine: nn.Module, batch: dict[str, Any], ctx: StepContext) -> np.ndarray | None: ...

    def checkpoint_meta(self) -> dict[str, Any]: ...
