"""How many tokens each part of a training step runs on, per clip, for every strategy the
estimator and the benchmark compare. Counts truncate exactly as `everest.tokens` does."""

from __future__ import annotations

from dataclasses import dataclass

from everest.models.vit import VideoViTSpec
from everest.tokens import kept_count

PRETRAIN_STRATEGIES = ("everest", "videomae", "none")
FINETUNE_STRATEGIES = ("everest", "none")


@dataclass(frozen=True)
class TokenPlan:
    """Tokens per clip: `encoder` enter the encoder, `decoder` enter the decoder (visible plus
    mask tokens), `targets` get predicted pixels. Fine-tuning plans have no decoder. A `selected`
    plan embeds every token without gradient to choose, then the `encoder` tokens with one."""

    encoder: int
    decoder: int = 0
    targets: int = 0
    selected: bool = True  # tokens chosen by a score over the whole embedded clip (not all N)


def everest_plan(spec: VideoViTSpec, rho: float = 0.7, mask_ratio: float = 0.9) -> TokenPlan:
    """Motion-centric: top int((1-rho)N) kept, int((1-mask_ratio)N) of them visible."""
    n = spec.num_patches
    kept, visible = kept_count(n, rho), kept_count(n, mask_ratio)
    return TokenPlan(encoder=visible, decoder=kept, targets=kept - visible)


def tube_plan(spec: VideoViTSpec, mask_ratio: float = 0.9) -> TokenPlan:
    """VideoMAE tube masking: int(mask_ratio L) positions masked in every slot, decoder over all N."""
    slots, rows, cols = spec.grid
    positions = rows * cols
    visible = slots * (positions - int(mask_ratio * positions))
    return TokenPlan(encoder=visible, decoder=spec.num_patches, targets=spec.num_patches - visible)


def unmasked_plan(spec: VideoViTSpec) -> TokenPlan:
    """No masking: encoder and decoder over all N tokens, every token reconstructed."""
    n = spec.num_patches
    return TokenPlan(encoder=n, decoder=n, targets=n, selected=False)


def pretrain_plan(strategy: str, spec: VideoViTSpec, rho: float = 0.7, mask_ratio: float = 0.9) -> TokenPlan:
    """'everest' (motion-centric), 'videomae' (tube) or 'none' (no masking)."""
    if strategy == "everest":
        return everest_plan(spec, rho, mask_ratio)
    if strategy == "videomae":
        return tube_plan(spec, mask_ratio)
    if strategy == "none":
        return unmasked_plan(spec)
    raise ValueError(f"unknown pretraining strategy {strategy!r}; choose one of {PRETRAIN_STRATEGIES}")


def finetune_plan(strategy: str, spec: VideoViTSpec, mcm_ratio: float = 0.4) -> TokenPlan:
    """'everest' (MCM: the top int((1-mcm_ratio)N) tokens) or 'none' (all N tokens)."""
    if strategy == "everest":
        return TokenPlan(encoder=kept_count(spec.num_patches, mcm_ratio))
    if strategy == "none":
        return TokenPlan(encoder=spec.num_patches, selected=False)
    raise ValueError(f"unknown fine-tuning strategy {strategy!r}; choose one of {FINETUNE_STRATEGIES}")
