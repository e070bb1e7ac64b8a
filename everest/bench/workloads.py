"""The training steps the benchmark compares: one shared model, optimizer and batch, and one
forward per strategy built from the same calls the training tasks make (patch embedding,
`everest.tokens` selection, the model's `forward_embedded`, `everest.patches` targets)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from everest import tokens
from everest.estimate.flops import StepFlops, finetune_flops, pretrain_flops
from everest.estimate.plans import finetune_plan, pretrain_plan
from everest.models import PretrainAutoencoder, VideoClassifier, VideoViTSpec
from everest.patches import pixel_targets


@dataclass
class StepTokens:
    encoder: int  # tokens through the encoder in the step (whole batch)
    decoder: int


@dataclass
class Workload:
    name: str  # the JSON key
    label: str
    model_flops: StepFlops  # analytical, whole batch
    forward: Callable[[], tuple[Tensor, StepTokens]]  # -> (loss, tokens)


@dataclass
class Bench:
    task: str  # "pretrain" | "finetune"
    spec: VideoViTSpec
    batch: int
    device: torch.device
    dtype: torch.dtype
    model: nn.Module
    optimizer: torch.optim.Optimizer
    workloads: list[Workload]
    baseline: str  # the strategy ratios are taken against


def train_step(bench: Bench, workload: Workload) -> StepTokens:
    """Forward, backward, optimizer step; gradients freed after the step (not held between steps)."""
    loss, counts = workload.forward()
    loss.backward()
    bench.optimizer.step()
    bench.optimizer.zero_grad(set_to_none=True)
    return counts


def _decode_all(model: PretrainAutoencoder, embedded: Tensor) -> Tensor:
    """No masking: encoder and decoder over all N tokens, pixels predicted for every token."""
    latent = model.encoder_to_decoder(model.encoder.encode(embedded))
    x = latent + model.decoder_pos_embed.to(latent.dtype)
    return model.decoder(x, x.shape[1])


def _pretrain_forward(model: PretrainAutoencoder, video: Tensor, video01: Tensor, strategy: str,
                      rho: float, mask_ratio: float) -> Callable[[], tuple[Tensor, StepTokens]]:
    spec = model.spec
    batch, n = video.shape[0], spec.num_patches
    mask_type = {"everest": "motion-centric", "videomae": "tube"}.get(strategy)

    def forward() -> tuple[Tensor, StepTokens]:
        embedded = model.embed(video)
        if mask_type is None:
            target = torch.arange(n, device=video.device).expand(batch, n)
            pred = _decode_all(model, embedded)
            counts = StepTokens(batch * n, batch * n)
        else:
            selection = tokens.select_for_pretraining(embedded.detach(), spec.grid, mask_type, mask_ratio, rho)
            target = selection.target
            pred = model.forward_embedded(embedded, selection.visible, target)
            visible = selection.visible.shape[1]
            counts = StepTokens(batch * visible, batch * (visible + target.shape[1]))
        with torch.no_grad():
            pixels = pixel_targets(video01, target, spec.tubelet_size, spec.patch_size, normalize=True)
        return F.mse_loss(pred.float(), pixels), counts

    return forward


def _finetune_forward(model: VideoClassifier, video: Tensor, labels: Tensor, strategy: str,
                      mcm_ratio: float) -> Callable[[], tuple[Tensor, StepTokens]]:
    spec = model.spec

    def forward() -> tuple[Tensor, StepTokens]:
        embedded = model.embed(video)
        keep = None
        if strategy == "everest":
            keep = tokens.select_for_finetuning(embedded.detach(), spec.grid, mcm_ratio).visible
        out = model.forward_embedded(embedded, keep).float()
        kept = spec.num_patches if keep is None else keep.shape[1]
        return F.cross_entropy(out, labels), StepTokens(video.shape[0] * kept, 0)

    return forward


def _inputs(spec: VideoViTSpec, batch: int, device: torch.device, dtype: torch.dtype,
            generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A [0, 1] clip batch and its normalised model input (ImageNet-style mean/std)."""
    shape = (batch, spec.in_chans, spec.num_frames, spec.input_size, spec.input_size)
    video01 = torch.rand(shape, generator=generator).to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1, 1)
    return video01, ((video01 - mean) / std).to(dtype)


def build_bench(task: str, spec: VideoViTSpec, batch: int, device: torch.device, dtype: torch.dtype,
                seed: int = 0, rho: float = 0.7, mask_ratio: float = 0.9, mcm_ratio: float = 0.4,
                num_classes: int = 400, strategies: Sequence[str] | None = None) -> Bench:
    """Model, AdamW, one random batch and the strategies' steps for `task` (all strategies, or
    the listed ones, which must include the baseline)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    video01, video = _inputs(spec, batch, device, dtype, generator)
    if task == "pretrain":
        model = PretrainAutoencoder(spec).to(device, dtype)
        labels = {"everest": f"EVEREST motion-centric (rho {rho}, mask {mask_ratio})",
                  "videomae": f"VideoMAE tube (mask {mask_ratio})", "none": "no masking"}
        workloads = [
            Workload(name, label, pretrain_flops(spec, pretrain_plan(name, spec, rho, mask_ratio)).scaled(batch),
                     _pretrain_forward(model, video, video01, name, rho, mask_ratio))
            for name, label in labels.items()
        ]
        baseline = "videomae"
    elif task == "finetune":
        model = VideoClassifier(spec, num_classes).to(device, dtype)
        classes = torch.randint(num_classes, (batch,), generator=generator).to(device)
        labels = {"everest": f"EVEREST MCM (mcm_ratio {mcm_ratio})", "none": "all tokens (VideoMAE)"}
        workloads = [
            Workload(name, label, finetune_flops(spec, finetune_plan(name, spec, mcm_ratio), num_classes).scaled(batch),
                     _finetune_forward(model, video, classes, name, mcm_ratio))
            for name, label in labels.items()
        ]
        baseline = "none"
    else:
        raise ValueError(f"unknown task {task!r}; choose 'pretrain' or 'finetune'")
    if strategies is not None:
        unknown = set(strategies) - {w.name for w in workloads}
        if unknown or baseline not in strategies:
            raise ValueError(f"strategies {list(strategies)}: choose from {[w.name for w in workloads]}, "
                             f"including the baseline {baseline!r}")
        workloads = [w for w in workloads if w.name in strategies]
    # fused: one kernel per step without parameter-sized temporaries, like DeepSpeed's FusedAdam
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    return Bench(task, spec, batch, device, dtype, model, optimizer, workloads, baseline)
