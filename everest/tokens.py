"""Token scoring and selection: which tokens the encoder sees and which ones it must rebuild.

Every strategy returns a `Selection` of int64 token indices into the slot-major token order of
the patch embedding (t, row, col). Indices are sorted ascending within each group, so the
encoder sees its tokens in raster order and the targets come in raster order too.

- motion-centric (EVEREST pretraining): score every token by how much its embedding changed
  since the previous slot, keep the top K = int((1 - rho) * N), shuffle them, and split them
  into V = int((1 - mask_ratio) * N) visible tokens and K - V targets.
- mcm (EVEREST fine-tuning): keep the top int((1 - mcm_ratio) * N); no randomness.
- random / tube (VideoMAE baselines): int(mask_ratio * count) tokens masked per clip (random)
  or per slot (tube, one spatial mask repeated over time), as VideoMAE's generators count them;
  the targets are all the masked tokens.

Ties in score go to the lower token index (slot 0 and slot 1 always tie: slot 0 takes slot 1's
score). The shuffle draws one uniform number per token from `generator`; the V kept tokens
with the smallest draws are visible (ties to the lower index), which is the published "shuffle
the kept tokens, take the first V" in distribution. Same generator state, same selection, on
every kernel backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

import kernels

Grid = tuple[int, int, int]


@dataclass
class Selection:
    """Token indices for one batch. `visible` [B, V] enter the encoder; `target` [B, M] are
    reconstructed (None in fine-tuning); `scores` [B, N] float32 when motion was scored."""

    visible: Tensor
    target: Tensor | None = None
    scores: Tensor | None = None


def kept_count(num_tokens: int, drop_ratio: float) -> int:
    """Tokens left after dropping `drop_ratio` of them, truncated like the published code."""
    return int((1 - drop_ratio) * num_tokens)


def _uniform(
    shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None, noise: Tensor | None = None
) -> Tensor:
    """Uniform draws made on the generator's device (so CPU and GPU runs agree), then moved.
    Given `noise` (uniform keys [B, >= shape[1]], e.g. drawn per sample so that a clip's masks
    do not depend on its batch), its leading columns are used instead."""
    if noise is not None:
        return noise[:, : shape[1]].to(device=device, dtype=torch.float32)
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where).to(device)


def motion_scores(emb: Tensor) -> Tensor:
    """emb [B, T, L, D] patch embeddings (slot-major) -> float32 [B, T*L] motion scores:
    ||e[t, l] - e[t-1, l]||_2, slot 0 taking slot 1's score. Computed without gradient."""
    with torch.no_grad():
        return kernels.motion_score(emb.detach())


def motion_centric(
    scores: Tensor,
    rho: float,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Selection:
    """EVEREST pretraining selection from scores [B, N]: top int((1-rho)*N) kept, a random
    int((1-mask_ratio)*N) of them visible, the rest targets."""
    num_tokens = scores.shape[1]
    kept, visible = kept_count(num_tokens, rho), kept_count(num_tokens, mask_ratio)
    if not 1 <= visible < kept:
        raise ValueError(
            f"rho={rho} keeps {kept} of {num_tokens} tokens and mask_ratio={mask_ratio} shows "
            f"{visible}: need 1 <= visible < kept"
        )
    keys = _uniform(tuple(scores.shape), scores.device, generator, noise)
    visible_idx, target_idx = kernels.topk_select(scores, kept, visible, keys)
    return Selection(visible_idx, target_idx, scores)


def mcm(scores: Tensor, mcm_ratio: float) -> Selection:
    """EVEREST fine-tuning selection from scores [B, N]: the top int((1-mcm_ratio)*N) tokens."""
    kept = kept_count(scores.shape[1], mcm_ratio)
    if kept < 1:
        raise ValueError(f"mcm_ratio={mcm_ratio} keeps no token of {scores.shape[1]}")
    visible, _ = kernels.topk_select(scores, kept, kept)
    return Selection(visible, None, scores)


def random_masking(
    batch: int,
    num_tokens: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    noise: Tensor | None = None,
) -> Selection:
    """VideoMAE random masking: int(mask_ratio * N) tokens of each clip masked (the targets)."""
    visible = num_tokens - int(mask_ratio * num_tokens)
    if not 1 <= visible < num_tokens:
        raise ValueError(f"mask_ratio={mask_ratio} masks {num_tokens - visible} of {num_tokens} tokens")
    keys = _uniform((batch, num_tokens), torch.device(device), generator, noise)
    flat = torch.zeros_like(keys)
    visible_idx, target_idx = kernels.topk_select(flat, num_tokens, visible, keys)
    return Selection(visible_idx, target_idx)


def tube_masking(
    batch: int,
    grid: Grid,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    noise: Tensor | None = None,
) -> Selection:
    """VideoMAE tube masking: per clip one spatial mask of int(mask_ratio * L) positions,
    repeated over all T slots; the masked tokens are the targets."""
    slots, rows, cols = grid
    positions = rows * cols
    device = torch.device(device)
    spatial = random_masking(batch, positions, mask_ratio, generator, device, noise)
    offsets = torch.arange(slots, device=device)[:, None] * positions

    def repeat_over_slots(index: Tensor) -> Tensor:
        return rearrange(offsets + index[:, None, :], "b t k -> b (t k)")

    return Selection(repeat_over_slots(spatial.visible), repeat_over_slots(spatial.target))


def _slot_view(tokens: Tensor, grid: Grid) -> Tensor:
    slots, rows, cols = grid
    if tokens.shape[1] != slots * rows * cols:
        raise ValueError(f"{tokens.shape[1]} tokens do not fill the grid {grid}")
    return rearrange(tokens, "b (t l) d -> b t l d", t=slots)


def select_for_pretraining(
    tokens: Tensor,
    grid: Grid,
    mask_type: str,
    mask_ratio: float,
    rho: float,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Selection:
    """Selection for one pretraining step from the (detached) patch tokens [B, N, D].
    mask_type: 'motion-centric' | 'random' | 'tube'. `noise` [B, N] uniform keys replace the
    generator's draws (the training loop keys them per sample)."""
    if mask_type == "motion-centric":
        return motion_centric(motion_scores(_slot_view(tokens, grid)), rho, mask_ratio, generator, noise)
    if mask_type == "random":
        return random_masking(tokens.shape[0], tokens.shape[1], mask_ratio, generator, tokens.device, noise)
    if mask_type == "tube":
        _slot_view(tokens, grid)
        return tube_masking(tokens.shape[0], grid, mask_ratio, generator, tokens.device, noise)
    raise ValueError(f"unknown mask_type {mask_type!r}; choose 'motion-centric', 'random' or 'tube'")


def select_for_finetuning(tokens: Tensor, grid: Grid, mcm_ratio: float) -> Selection:
    """MCM selection for fine-tuning or evaluation from the patch tokens [B, N, D]."""
    return mcm(motion_scores(_slot_view(tokens, grid)), mcm_ratio)
