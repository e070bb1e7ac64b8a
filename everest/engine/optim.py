"""The client optimizer and the per-step learning-rate / weight-decay schedules.

Parameter groups follow VideoMAE: no weight decay on biases, norms (1-D tensors), position,
mask and class tokens; optional layer-wise LR decay for fine-tuning (scale
layer_decay ** (depth + 1 - layer_id), with embeddings at layer 0 and the head at the top).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from everest.config import Config
from everest.models.vit import layer_id_for


def _no_decay_names(model: nn.Module) -> set[str]:
    names: set[str] = set()
    for prefix, module in model.named_modules():
        if hasattr(module, "no_weight_decay"):
            names |= {f"{prefix}.{n}" if prefix else n for n in module.no_weight_decay()}
    return names


def param_groups(
    model: nn.Module, weight_decay: float, layer_decay: float = 1.0, num_layers: int | None = None
) -> list[dict]:
    """Groups keyed by (decay or not, layer); each carries `lr_scale` and `apply_decay`."""
    skip = _no_decay_names(model)
    groups: dict[tuple[bool, int], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # ZeRO-3 partitions parameters to 1-D pieces; ds_shape keeps the true shape.
        ndim = len(getattr(param, "ds_shape", param.shape))
        decay = not (ndim <= 1 or name.endswith(".bias") or any(name.endswith(s) for s in skip))
        layer = layer_id_for(name.split("model.", 1)[-1], num_layers) if num_layers is not None else 0
        scale = layer_decay ** (num_layers + 1 - layer) if num_layers is not None else 1.0
        group = groups.setdefault(
            (decay, layer),
            {
                "params": [],
                "weight_decay": weight_decay if decay else 0.0,
                "apply_decay": decay,
                "lr_scale": scale,
                "names": [],
            },
        )
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(groups: list[dict], cfg: Config, cpu_offload: bool) -> torch.optim.Optimizer:
    """AdamW or RAdam over `groups`; DeepSpeed's CPU Adam when ZeRO offloads the optimizer."""
    o = cfg.optimizer
    plain = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    kwargs = dict(lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    if cpu_offload:
        if o.type != "adamw":
            raise ValueError("ZeRO optimizer offload runs DeepSpeed's CPU Adam: set optimizer.type=adamw")
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(plain, adamw_mode=True, **kwargs)
    if o.type == "radam":
        return torch.optim.RAdam(plain, decoupled_weight_decay=True, **kwargs)
    fused = all(p.is_cuda for g in plain for p in g["params"])
    return torch.optim.AdamW(plain, fused=fused or None, **kwargs)


def cosine_schedule(
    base: float, final: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """One value per step: linear warmup from warmup_start to base, then cosine to final.

    As VideoMAE's (and EVEREST's) `cosine_scheduler`: the warmup's last step is already at
    `base`, and the cosine starts at `base` again on the next one."""
    total_steps = max(total_steps, 1)
    warmup_steps = min(warmup_steps, total_steps)
    warmup = np.linspace(warmup_start, base, warmup_steps) if warmup_steps else np.array([])
    rest = total_steps - warmup_steps
    t = np.arange(rest)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(math.pi * t / max(rest, 1)))
    return np.concatenate([warmup, cosine])


class Schedules:
    """Per-optimizer-step learning rate and weight decay, applied to every param group."""

    def __init__(self, cfg: Config, total_steps: int, steps_per_epoch: int, global_batch: int = 256):
        o = cfg.optimizer
        warmup = o.warmup_steps or int(round(o.warmup_epochs * steps_per_epoch))
        scale = global_batch / 256 if o.scale_lr_by_batch else 1.0  # VideoMAE: lr per 256 clips
        self.lr = cosine_schedule(o.lr * scale, o.min_lr * scale, total_steps, warmup)
        wd_end = o.weight_decay if o.weight_decay_end is None else o.weight_decay_end
        self.wd = cosine_schedule(o.weight_decay, wd_end, total_steps)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set lr/wd for optimizer step `step`; returns the base lr."""
        i = min(step, len(self.lr) - 1)
        for group in optimizer.param_groups:
            group["lr"] = float(self.lr[i]) * group.get("lr_scale", 1.0)
            if group.get("apply_decay", group["weight_decay"] > 0):
                group["weight_decay"] = float(self.wd[i])
        return float(self.lr[i])
