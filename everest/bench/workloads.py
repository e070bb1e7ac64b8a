"""The training steps the benchmark compares: one shared model, optimizer and uint8 batch, and
one step per strategy. The masked strategies run the training objectives themselves
(`PretrainObjective` with mask_type motion-centric or tube, `FinetuneObjective` with or without
MCM, built from a Config); their inputs are made as the tasks make them (`to_model_input` with the
config's normalisation, `sample_noise` for the selection keys). Every stage is a named
`torch.profiler.record_function` range (the objectives name theirs), which
`everest.bench.timing.timed_ranges` reads for the per-stage breakdown."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from everest.config import Config, config_from_dict, token_counts
from everest.data import to_model_input
from everest.estimate.flops import StepFlops, finetune_flops, pretrain_flops
from everest.estimate.plans import finetune_plan, pretrain_plan
from everest.models import PretrainAutoencoder, VideoClassifier, VideoViTSpec
from everest.patches import pixel_targets
from everest.tasks.finetune import FinetuneObjective
from everest.tasks.pretrain import PretrainObjective, sample_noise

STAGES = ("data to device", "embed+score+select", "encoder", "decoder", "loss", "backward", "optimizer")
MASK_TYPES = {"everest": "motion-centric", "videomae": "tube"}


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
    objective: nn.Module | None = None  # the training objective the forward runs (None: no masking)


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
    with torch.profiler.record_function("backward"):
        loss.backward()
    with torch.profiler.record_function("optimizer"):
        bench.optimizer.step()
        bench.optimizer.zero_grad(set_to_none=True)
    return counts


def bench_config(spec: VideoViTSpec, model: dict) -> Config:
    """A Config with the benchmark's geometry and the given model keys; the rest default."""
    return config_from_dict(
        {
            "model": {
                "input_size": spec.input_size,
                "patch_size": spec.patch_size,
                "tubelet_size": spec.tubelet_size,
                **model,
            },
            "training": {"num_frames": spec.num_frames},
        }
    )


def _model_input(clip: Tensor, cfg: Config, device: torch.device) -> Tensor:
    return to_model_input(clip, cfg.data.normalize_mean, cfg.data.normalize_std, device, torch.float32)


def _pretrain_forward(
    objective: PretrainObjective, cfg: Config, clip: Tensor, device: torch.device, seed: int
) -> Callable[[], tuple[Tensor, StepTokens]]:
    """The pretraining step's forward: the task's inputs, then `PretrainObjective.forward`."""
    index, n = torch.arange(clip.shape[0]), objective.model.spec.num_patches

    def forward() -> tuple[Tensor, StepTokens]:
        with torch.profiler.record_function("data to device"):
            video = _model_input(clip, cfg, device)
            noise = sample_noise(index, seed, 0, n, device)
        loss, _, selection = objective(video, noise)
        visible, target = selection.visible.shape[1], selection.target.shape[1]
        return loss, StepTokens(clip.shape[0] * visible, clip.shape[0] * (visible + target))

    return forward


def _all_tokens_forward(
    objective: PretrainObjective, cfg: Config, clip: Tensor, device: torch.device
) -> Callable[[], tuple[Tensor, StepTokens]]:
    """No masking: encoder and decoder over all N tokens, pixels predicted for every token. The
    objective has no such mode, so this is a small explicit forward over its model and its target
    normalisation, with the objective's stage names (the encoder stage holds the decoder too)."""
    model = objective.model
    spec = model.spec
    batch, n = clip.shape[0], spec.num_patches

    def forward() -> tuple[Tensor, StepTokens]:
        with torch.profiler.record_function("data to device"):
            video = _model_input(clip, cfg, device)
        with torch.profiler.record_function("embed+score+select"):
            embedded = model.embed(video.to(model.encoder.patch_embed.proj.weight.dtype))
            target = torch.arange(n, device=device).expand(batch, n)
        with torch.profiler.record_function("encoder"):  # encoder and decoder together: no split without masking
            latent = model.encoder_to_decoder(model.encoder.encode(embedded))
            x = latent + model.decoder_pos_embed.to(latent.dtype)
            pred = model.decoder(x, n)
        with torch.profiler.record_function("loss"):
            with torch.no_grad():
                pixels = pixel_targets(
                    video,
                    target,
                    spec.tubelet_size,
                    spec.patch_size,
                    objective.normalize_target,
                    mean=objective.mean,
                    std=objective.std,
                )
            loss = F.mse_loss(pred.float(), pixels)
        return loss, StepTokens(batch * n, batch * n)

    return forward


def _finetune_forward(
    objective: FinetuneObjective, cfg: Config, clip: Tensor, labels: Tensor, device: torch.device
) -> Callable[[], tuple[Tensor, StepTokens]]:
    """The fine-tuning step's forward: the task's inputs, then `FinetuneObjective.forward`."""
    counts = token_counts(cfg)
    kept = counts["mcm_kept"] if cfg.model.mcm else counts["tokens"]

    def forward() -> tuple[Tensor, StepTokens]:
        with torch.profiler.record_function("data to device"):
            video = _model_input(clip, cfg, device)
        loss, _ = objective(video, labels)
        return loss, StepTokens(clip.shape[0] * kept, 0)

    return forward


def _clip_batch(spec: VideoViTSpec, batch: int, generator: torch.Generator) -> Tensor:
    """A random uint8 clip batch [B, F, H, W, 3] on the host, as the data loader yields it."""
    shape = (batch, spec.num_frames, spec.input_size, spec.input_size, spec.in_chans)
    clip = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    return clip.pin_memory() if torch.cuda.is_available() else clip


def _chosen(labels: dict[str, str], strategies: Sequence[str] | None, baseline: str) -> list[tuple[str, str]]:
    """The (name, label) of the strategies to run: all, or the listed ones with the baseline."""
    if strategies is None:
        return list(labels.items())
    if set(strategies) - set(labels) or baseline not in strategies:
        raise ValueError(
            f"strategies {list(strategies)}: choose from {list(labels)}, including the baseline {baseline!r}"
        )
    return [(name, label) for name, label in labels.items() if name in strategies]


def build_bench(
    task: str,
    spec: VideoViTSpec,
    batch: int,
    device: torch.device,
    dtype: torch.dtype,
    seed: int = 0,
    rho: float = 0.7,
    mask_ratio: float = 0.9,
    mcm_ratio: float = 0.4,
    num_classes: int = 400,
    strategies: Sequence[str] | None = None,
) -> Bench:
    """Model, AdamW, one random batch and the strategies' steps for `task` (all strategies, or
    the listed ones, which must include the baseline)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    clip = _clip_batch(spec, batch, generator)
    if task == "pretrain":
        model = PretrainAutoencoder(spec).to(device, dtype)
        labels = {
            "everest": f"EVEREST motion-centric (rho {rho}, mask {mask_ratio})",
            "videomae": f"VideoMAE tube (mask {mask_ratio})",
            "none": "no masking",
        }
        workloads = []
        for name, label in _chosen(labels, strategies, "videomae"):
            cfg = bench_config(
                spec,
                {
                    "mask_type": MASK_TYPES.get(name, "tube"),
                    "mask_ratio": mask_ratio,
                    "motion_centric_masking_ratio": rho,
                },
            )
            objective = PretrainObjective(model, cfg).to(device)
            forward = (
                _pretrain_forward(objective, cfg, clip, device, seed)
                if name in MASK_TYPES
                else _all_tokens_forward(objective, cfg, clip, device)
            )
            flops = pretrain_flops(spec, pretrain_plan(name, spec, rho, mask_ratio)).scaled(batch)
            workloads.append(Workload(name, label, flops, forward, objective if name in MASK_TYPES else None))
        baseline = "videomae"
    elif task == "finetune":
        model = VideoClassifier(spec, num_classes).to(device, dtype)
        classes = torch.randint(num_classes, (batch,), generator=generator).to(device)
        labels = {"everest": f"EVEREST MCM (mcm_ratio {mcm_ratio})", "none": "all tokens (VideoMAE)"}
        workloads = []
        for name, label in _chosen(labels, strategies, "none"):
            cfg = bench_config(
                spec,
                {
                    "task_type": "classification",
                    "num_classes": num_classes,
                    "mcm": name == "everest",
                    "mcm_ratio": mcm_ratio,
                },
            )
            objective = FinetuneObjective(model, cfg).to(device).train()
            flops = finetune_flops(spec, finetune_plan(name, spec, mcm_ratio), num_classes).scaled(batch)
            workloads.append(
                Workload(name, label, flops, _finetune_forward(objective, cfg, clip, classes, device), objective)
            )
        baseline = "none"
    else:
        raise ValueError(f"unknown task {task!r}; choose 'pretrain' or 'finetune'")
    # fused: one kernel per step without parameter-sized temporaries, like DeepSpeed's FusedAdam
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    return Bench(task, spec, batch, device, dtype, model, optimizer, workloads, baseline)
