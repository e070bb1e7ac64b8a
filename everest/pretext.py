"""Is the pretext being learned? Trivial-predictor losses, pretext progress and a collapse detector.

A masked autoencoder's loss always falls at first; what tells a user whether it learns anything is
how far it gets below the loss of a predictor that needs no learning:
- normalised targets (per-patch zero mean, unit std): predicting zeros, whose loss is the mean
  square of the targets ((P - 1) / P with the unbiased std: 0.992 for 128 pixels per channel);
- raw targets: the per-clip constant (each channel's mean over the clip's visible pixels), and
  copying the nearest visible token at the same spatial position (nearest slot in time; the
  constant where no slot shows that position).

`pretext_progress = 1 - loss / baseline` is the fraction of the gap from the trivial baseline
(zeros, or the per-clip constant) to a perfect reconstruction that the model has closed: 0 for
the trivial predictor, 1 for a perfect one, below 0 for a model worse than the baseline.

`token_cosine` is the mean cosine between distinct tokens of one clip: near 1 when the encoder
maps every token onto one common direction (a collapsed representation).
"""

from __future__ import annotations

import torch
from torch import Tensor

from everest.patches import patchify


def _mse_per_clip(pred: Tensor, target: Tensor) -> Tensor:
    return ((pred.float() - target.float()) ** 2).flatten(1).mean(dim=1)


def _clip_constant(visible_patches: Tensor, num_targets: int) -> Tensor:
    """[B, V, P, C] visible pixels -> [B, M, P, C]: every target predicted by the clip's visible mean colour."""
    b, _, p, c = visible_patches.shape
    mean = visible_patches.mean(dim=(1, 2), keepdim=True)
    return mean.expand(b, num_targets, p, c)


def _nearest_visible_copy(patches: Tensor, visible: Tensor, target: Tensor, positions: int, fallback: Tensor) -> Tensor:
    """For each target token, the patch of the visible token at the same spatial position in the
    nearest slot (the earlier one on a tie); `fallback` [B, M, P, C] where no slot shows it."""
    b, n, p, c = patches.shape
    slots = n // positions
    is_visible = torch.zeros(b, n, dtype=torch.bool, device=patches.device)
    is_visible.scatter_(1, visible, True)
    is_visible = is_visible.view(b, slots, positions)
    t_slot, t_pos = target // positions, target % positions  # [B, M]
    slot_ids = torch.arange(slots, device=patches.device)
    # distance in slots from each target to every slot, with visibility at the target's position
    distance = (slot_ids.view(1, 1, -1) - t_slot.unsqueeze(-1)).abs().float()  # [B, M, T]
    distance = distance + 0.5 * (slot_ids.view(1, 1, -1) > t_slot.unsqueeze(-1)).float()  # earlier wins ties
    shown = torch.gather(is_visible.permute(0, 2, 1), 1, t_pos.unsqueeze(-1).expand(-1, -1, slots))  # [B, M, T]
    distance = distance.masked_fill(~shown, float("inf"))
    best_dist, best_slot = distance.min(dim=-1)
    source = best_slot * positions + t_pos
    copied = torch.gather(patches, 1, source[..., None, None].expand(-1, -1, p, c))
    return torch.where(torch.isfinite(best_dist)[..., None, None], copied, fallback)


def trivial_losses(
    video01: Tensor,
    target_values: Tensor,
    visible: Tensor,
    target: Tensor,
    tubelet: int,
    patch: int,
    positions: int,
    normalized: bool,
) -> dict[str, Tensor]:
    """Per-clip losses [B] of the trivial predictors on the targets the model is scored on.

    video01 [B, C, F, H, W] in [0, 1]; target_values [B, M, P*C] the loss's targets; visible [B, V]
    and target [B, M] token indices; positions = tokens per slot. Keys: `zeros` (normalised), or
    `constant` and `copy` (raw)."""
    if normalized:
        return {"zeros": (target_values.float() ** 2).flatten(1).mean(dim=1)}
    patches = patchify(video01.float(), tubelet, patch)  # [B, N, P, C]
    b, n, p, c = patches.shape
    visible_patches = torch.gather(patches, 1, visible[..., None, None].expand(-1, -1, p, c))
    constant = _clip_constant(visible_patches, target.shape[1])
    copy = _nearest_visible_copy(patches, visible, target, positions, constant)
    truth = target_values.float().view(b, -1, p, c)
    return {"constant": _mse_per_clip(constant, truth), "copy": _mse_per_clip(copy, truth)}


def baseline_name(normalized: bool) -> str:
    """Which trivial predictor pretext_progress is measured against."""
    return "zeros" if normalized else "constant"


def pretext_progress(loss: float, baseline_loss: float) -> float:
    """Fraction of the gap from the trivial baseline's loss to zero that `loss` has closed."""
    if baseline_loss <= 0:
        return 0.0
    return 1.0 - loss / baseline_loss


def token_cosine(tokens: Tensor) -> Tensor:
    """Mean cosine between distinct tokens of each clip: tokens [B, N, D] -> [B]."""
    unit = torch.nn.functional.normalize(tokens.float(), dim=-1)
    n = unit.shape[1]
    if n < 2:
        return torch.ones(unit.shape[0], device=unit.device)
    summed = unit.sum(dim=1)
    pair_sum = (summed * summed).sum(dim=-1) - (unit * unit).sum(dim=(1, 2))  # sum over i != j of cos
    return pair_sum / (n * (n - 1))


class ProgressWatch:
    """Warns once when pretext progress is still near zero after a share of the run."""

    def __init__(self, after_share: float, threshold: float, total_epochs: int, log=print):
        self.after_share, self.threshold, self.total_epochs = after_share, threshold, max(total_epochs, 1)
        self.log = log
        self.warned = False

    def update(self, epoch: int, progress: float) -> bool:
        """Call at each validated epoch end (epoch counted from 0); True when it warned now."""
        if self.warned or self.after_share <= 0 or (epoch + 1) / self.total_epochs < self.after_share:
            return False
        if progress >= self.threshold:
            return False
        self.warned = True
        self.log(
            f"WARNING: pretext_progress is {progress:.3f} after {epoch + 1} of {self.total_epochs} epochs: "
            "the model still predicts no better than a trivial predictor (a flat mean), so the encoder is "
            "not learning useful features. Try a lower optimizer.lr, more data or more epochs "
            "(training.max_epochs), or a lower masking ratio (model.mask_ratio / "
            "model.motion_centric_masking_ratio)."
        )
        return True
