"""The training steps the benchmark compares: one shared model, optimizer and uint8 batch, and
one forward per strategy built from the same calls the training tasks make (`to_model_input`,
patch embedding, `everest.tokens` selection, the model's encode/decode, `everest.patches`
targets of the target tubelets). Each step runs its stages under a `StageClock`, which either
does nothing (timed steps) or synchronises and times every stage (the breakdown)."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from everest import tokens
from everest.data import to_model_input
from everest.estimate.flops import StepFlops, finetune_flops, pretrain_flops
from everest.estimate.plans import finetune_plan, pretrain_plan
from everest.models import PretrainAutoencoder, VideoClassifier, VideoViTSpec
from everest.patches import pixel_targets

STAGES = ("data to device", "embed+score+select", "encoder", "decoder", "loss", "backward", "optimizer")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class StageClock:
    """`with clock("encoder"): ...` adds the stage's wall time to `seconds` when enabled
    (synchronising CUDA around it); disabled it costs nothing."""

    def __init__(self, device: torch.device, enabled: bool = False):
        self.device, self.enabled = device, enabled
        self.seconds: dict[str, float] = defaultdict(float)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[stage] += time.perf_counter() - start


@dataclass
class StepTokens:
    encoder: int  # tokens through the encoder in the step (whole batch)
    decoder: int


@dataclass
class Workload:
    name: str  # the JSON key
    label: str
    model_flops: StepFlops  # analytical, whole batch
    forward: Callable[[StageClock], tuple[Tensor, StepTokens]]  # -> (loss, tokens)


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


def train_step(bench: Bench, workload: Workload, clock: StageClock | None = None) -> StepTokens:
    """Forward, backward, optimizer step; gradients freed after the step (not held between steps)."""
    clock = clock or StageClock(bench.device)
    loss, counts = workload.forward(clock)
    with clock("backward"):
        loss.backward()
    with clock("optimizer"):
        bench.optimizer.step()
        bench.optimizer.zero_grad(set_to_none=True)
    return counts


def _model_input(clip: Tensor, device: torch.device, clock: StageClock) -> Tensor:
    with clock("data to device"):
        return to_model_input(clip, MEAN, STD, device, torch.float32)


def _decode_all(model: PretrainAutoencoder, embedded: Tensor) -> Tensor:
    """No masking: encoder and decoder over all N tokens, pixels predicted for every token."""
    latent = model.encoder_to_decoder(model.encoder.encode(embedded))
    x = latent + model.decoder_pos_embed.to(latent.dtype)
    return model.decoder(x, x.shape[1])


def _pretrain_forward(model: PretrainAutoencoder, clip: Tensor, device: torch.device, dtype: torch.dtype,
                      strategy: str, rho: float, mask_ratio: float) -> Callable[[StageClock], tuple[Tensor, StepTokens]]:
    spec = model.spec
    batch, n = clip.shape[0], spec.num_patches
    mask_type = {"everest": "motion-centric", "videomae": "tube"}.get(strategy)
    mean, std = torch.tensor(MEAN, device=device), torch.tensor(STD, device=device)

    def forward(clock: StageClock) -> tuple[Tensor, StepTokens]:
        video = _model_input(clip, device, clock)
        if mask_type is None:
            with clock("embed+score+select"):
                embedded = model.embed(video.to(dtype))
                target = torch.arange(n, device=device).expand(batch, n)
            with clock("encoder"):  # encoder and decoder together: no split without masking
                pred = _decode_all(model, embedded)
            counts = StepTokens(batch * n, batch * n)
        else:
            with clock("embed+score+select"):
                embedded = model.embed(video.to(dtype))
                selection = tokens.select_for_pretraining(embedded.detach(), spec.grid, mask_type, mask_ratio, rho)
                visible, target = selection.visible, selection.target
            with clock("encoder"):
                latent = model.encode(embedded, visible)
            with clock("decoder"):
                pred = model.decode(latent, visible, target)
            counts = StepTokens(batch * visible.shape[1], batch * (visible.shape[1] + target.shape[1]))
        with clock("loss"):
            with torch.no_grad():
                pixels = pixel_targets(video, target, spec.tubelet_size, spec.patch_size, True, mean=mean, std=std)
            loss = F.mse_loss(pred.float(), pixels)
        return loss, counts

    return forward


def _finetune_forward(model: VideoClassifier, clip: Tensor, device: torch.device, dtype: torch.dtype,
                      labels: Tensor, strategy: str, mcm_ratio: float) -> Callable[[StageClock], tuple[Tensor, StepTokens]]:
    spec = model.spec

    def forward(clock: StageClock) -> tuple[Tensor, StepTokens]:
        video = _model_input(clip, device, clock)
        with clock("embed+score+select"):
            embedded = model.embed(video.to(dtype))
            keep = None
            if strategy == "everest":
                keep = tokens.select_for_finetuning(embedded.detach(), spec.grid, mcm_ratio).visible
        with clock("encoder"):  # encoder, pooling and the linear head
            out = model.forward_embedded(embedded, keep).float()
        with clock("loss"):
            loss = F.cross_entropy(out, labels)
        kept = spec.num_patches if keep is None else keep.shape[1]
        return loss, StepTokens(clip.shape[0] * kept, 0)

    return forward


def _clip_batch(spec: VideoViTSpec, batch: int, generator: torch.Generator) -> Tensor:
    """A random uint8 clip batch [B, F, H, W, 3] on the host, as the data loader yields it."""
    shape = (batch, spec.num_frames, spec.input_size, spec.input_size, spec.in_chans)
    clip = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    return clip.pin_memory() if torch.cuda.is_available() else clip


def build_bench(task: str, spec: VideoViTSpec, batch: int, device: torch.device, dtype: torch.dtype,
                seed: int = 0, rho: float = 0.7, mask_ratio: float = 0.9, mcm_ratio: float = 0.4,
                num_classes: int = 400, strategies: Sequence[str] | None = None) -> Bench:
    """Model, AdamW, one random batch and the strategies' steps for `task` (all strategies, or
    the listed ones, which must include the baseline)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    clip = _clip_batch(spec, batch, generator)
    if task == "pretrain":
        model = PretrainAutoencoder(spec).to(device, dtype)
        labels = {"everest": f"EVEREST motion-centric (rho {rho}, mask {mask_ratio})",
                  "videomae": f"VideoMAE tube (mask {mask_ratio})", "none": "no masking"}
        workloads = [
            Workload(name, label, pretrain_flops(spec, pretrain_plan(name, spec, rho, mask_ratio)).scaled(batch),
                     _pretrain_forward(model, clip, device, dtype, name, rho, mask_ratio))
            for name, label in labels.items()
        ]
        baseline = "videomae"
    elif task == "finetune":
        model = VideoClassifier(spec, num_classes).to(device, dtype)
        classes = torch.randint(num_classes, (batch,), generator=generator).to(device)
        labels = {"everest": f"EVEREST MCM (mcm_ratio {mcm_ratio})", "none": "all tokens (VideoMAE)"}
        workloads = [
            Workload(name, label, finetune_flops(spec, finetune_plan(name, spec, mcm_ratio), num_classes).scaled(batch),
                     _finetune_forward(model, clip, device, dtype, classes, name, mcm_ratio))
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
