"""The estimate a user reads before launching: per-rank memory and FLOPs per clip for EVEREST
and for VideoMAE tube masking at the same model, and the largest micro-batch that fits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from everest.config import Config
from everest.engine.ds_config import compute_dtype, offloads_optimizer, offloads_params, zero_stage
from everest.estimate.flops import StepFlops, pretrain_flops
from everest.estimate.memory import (
    ActivationMemory,
    ModelStates,
    activation_memory,
    largest_micro_batch,
    model_states,
    parameter_counts,
)
from everest.estimate.plans import TokenPlan, everest_plan, tube_plan
from everest.models import PretrainAutoencoder
from everest.models.spec import spec_from_config
from everest.models.vit import VideoViTSpec

GIB = 2**30


@dataclass(frozen=True)
class StrategyEstimate:
    label: str
    plan: TokenPlan
    flops: StepFlops  # per clip, forward + backward
    activations: ActivationMemory  # per clip
    max_batch: int
    max_batch_checkpointed: int


@dataclass(frozen=True)
class Estimate:
    spec: VideoViTSpec
    backbone: str
    params: int
    encoder_params: int
    largest_layer_params: int
    stage: int
    offload_optimizer: bool
    offload_param: bool
    dtype: torch.dtype
    gpus: int
    nodes: int
    gpu_bytes: int
    reserve_bytes: int
    batch_size: int
    use_checkpoint: bool
    states: ModelStates
    strategies: dict[str, StrategyEstimate]


def estimate(
    cfg: Config, ds: dict[str, Any], gpus: int, nodes: int, gpu_gib: float, reserve_gib: float = 2.0
) -> Estimate:
    """Everything `render` prints, for the model `cfg` builds under the resolved DeepSpeed dict `ds`."""
    spec = spec_from_config(cfg)
    with torch.device("meta"):
        model = PretrainAutoencoder(spec)
    total, largest = parameter_counts(model)
    stage = zero_stage(ds)
    states = model_states(total, largest, stage, gpus, nodes, offloads_optimizer(ds), offloads_params(ds))
    dtype = compute_dtype(ds)
    gpu_bytes, reserve = int(gpu_gib * GIB), int(reserve_gib * GIB)
    m = cfg.model
    plans = {
        "everest": (
            f"EVEREST motion-centric (rho {m.motion_centric_masking_ratio}, mask {m.mask_ratio})",
            everest_plan(spec, m.motion_centric_masking_ratio, m.mask_ratio),
        ),
        "videomae": (f"VideoMAE tube (mask {m.mask_ratio})", tube_plan(spec, m.mask_ratio)),
    }
    strategies = {}
    for name, (label, plan) in plans.items():
        act = activation_memory(spec, plan, dtype)
        strategies[name] = StrategyEstimate(
            label,
            plan,
            pretrain_flops(spec, plan),
            act,
            largest_micro_batch(gpu_bytes, states, act.plain, reserve),
            largest_micro_batch(gpu_bytes, states, act.checkpointed, reserve),
        )
    return Estimate(
        spec,
        m.backbone,
        total,
        sum(p.numel() for p in model.encoder.parameters()),
        largest,
        stage,
        offloads_optimizer(ds),
        offloads_params(ds),
        dtype,
        gpus,
        nodes,
        gpu_bytes,
        reserve,
        cfg.training.batch_size,
        cfg.features.use_checkpoint,
        states,
        strategies,
    )


def _row(name: str, values: list[float], fmt: str, ratio: bool = True) -> str:
    cells = [format(v, fmt) for v in values]
    if ratio:
        cells.append(f"{values[0] / values[1]:.2f}" if values[1] else "-")
    else:
        cells.append("")
    return f"| {name} | " + " | ".join(cells) + " |"


def render(est: Estimate, ds_source: str = "") -> str:
    """A Markdown report of `est`."""
    s, on = est.spec, {True: "on", False: "off"}
    ev, vm = est.strategies["everest"], est.strategies["videomae"]
    both = [ev, vm]
    per_clip = [x.activations.checkpointed if est.use_checkpoint else x.activations.plain for x in both]
    per_gpu_at_batch = [(est.states.gpu_bytes + est.batch_size * clip) / GIB for clip in per_clip]
    lines = [
        f"## Cost estimate: {est.backbone}, {s.num_frames} frames x {s.input_size} px, patch {s.patch_size}, "
        f"tubelet {s.tubelet_size} -> {s.num_patches} tokens per clip",
        "",
        f"- model: {est.params / 1e6:.1f} M parameters (encoder {est.encoder_params / 1e6:.1f} M, decoder "
        f"{(est.params - est.encoder_params) / 1e6:.1f} M), largest layer {est.largest_layer_params / 1e6:.2f} M",
        f"- DeepSpeed {ds_source}: ZeRO-{est.stage}, optimizer offload {on[est.offload_optimizer]}, parameter "
        f"offload {on[est.offload_param]}, {str(est.dtype).removeprefix('torch.')}",
        f"- cluster: {est.nodes} node(s) x {est.gpus} GPUs x {est.gpu_bytes / GIB:g} GiB, "
        f"{est.reserve_bytes / GIB:g} GiB per GPU reserved (CUDA context, allocator slack)",
        f"- model states (DeepSpeed's estimator): {est.states.gpu_bytes / GIB:.2f} GiB per GPU, "
        f"{est.states.cpu_bytes / GIB:.1f} GiB CPU RAM per node",
        "",
        f"| per clip | {ev.label} | {vm.label} | EVEREST / VideoMAE |",
        "| --- | ---: | ---: | ---: |",
        _row("encoder tokens", [x.plan.encoder for x in both], "d"),
        _row("decoder tokens", [x.plan.decoder for x in both], "d"),
        _row("encoder GFLOPs (forward + backward)", [x.flops.encoder / 1e9 for x in both], ".1f"),
        _row("decoder GFLOPs (forward + backward)", [x.flops.decoder / 1e9 for x in both], ".1f"),
        _row("total GFLOPs (as counted with SDPA)", [x.flops.total / 1e9 for x in both], ".1f"),
        _row("of which SDPA's QK^T recompute", [x.flops.recompute / 1e9 for x in both], ".1f"),
        _row("model GFLOPs (scores kept, no recompute)", [x.flops.model / 1e9 for x in both], ".1f"),
        _row("activations, MiB", [x.activations.plain / 2**20 for x in both], ".1f"),
        _row("activations with checkpointing, MiB", [x.activations.checkpointed / 2**20 for x in both], ".1f"),
        _row("largest micro-batch per GPU", [x.max_batch for x in both], "d"),
        _row("largest micro-batch per GPU, checkpointing", [x.max_batch_checkpointed for x in both], "d"),
        _row(
            f"GiB per GPU at batch_size {est.batch_size}{', checkpointing' if est.use_checkpoint else ''}",
            per_gpu_at_batch,
            ".1f",
        ),
    ]
    return "\n".join(lines)
