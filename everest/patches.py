"""Videos <-> per-token pixel patches, in the order the pixel head predicts them.

A token's patch is its tubelet (tubelet x patch x patch pixels x C channels), flattened as
(frame-in-tubelet, row, column, channel): VideoMAE's (p0 p1 p2 c) order.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor


def patchify(video: Tensor, tubelet: int, patch: int) -> Tensor:
    """[B, C, F, H, W] -> [B, N, tubelet*patch*patch, C], tokens slot-major like the embedding."""
    return rearrange(video, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=tubelet, p1=patch, p2=patch)


def unpatchify(patches: Tensor, grid: tuple[int, int, int], tubelet: int, patch: int, channels: int = 3) -> Tensor:
    """[B, N, tubelet*patch*patch*C] -> [B, C, F, H, W] (inverse of patchify, flattened)."""
    t, h, w = grid
    return rearrange(
        patches,
        "b (t h w) (p0 p1 p2 c) -> b c (t p0) (h p1) (w p2)",
        t=t,
        h=h,
        w=w,
        p0=tubelet,
        p1=patch,
        p2=patch,
        c=channels,
    )


def normalize_patches(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """Each patch (per channel, over its pixels) to zero mean and unit std, VideoMAE's
    normalize_target: (x - mean) / (unbiased std + eps). patches [..., P, C]."""
    mean = patches.mean(dim=-2, keepdim=True)
    std = patches.var(dim=-2, unbiased=True, keepdim=True).sqrt()
    return (patches - mean) / (std + eps)


def embedding_patches(video: Tensor, tubelet: int, patch: int) -> Tensor:
    """[B, C, F, H, W] -> [B, N, C*tubelet*patch*patch] in (c p0 p1 p2) order: the layout a
    Conv3d tubelet weight [D, C, tubelet, patch, patch] flattens to."""
    return rearrange(video, "b c (t p0) (h p1) (w p2) -> b (t h w) (c p0 p1 p2)", p0=tubelet, p1=patch, p2=patch)


def gather_patches(video: Tensor, index: Tensor, tubelet: int, patch: int) -> Tensor:
    """patchify(video)[b, index[b]] -> [B, K, tubelet*patch*patch, C], copying only the K
    tubelets (the clip is only viewed, never patchified whole)."""
    b, c, f, h, w = video.shape
    rows, cols = h // patch, w // patch
    view = (
        video.unflatten(2, (f // tubelet, tubelet))
        .unflatten(4, (rows, patch))
        .unflatten(6, (cols, patch))
        .permute(0, 2, 4, 6, 3, 5, 7, 1)
    )  # [B, T, rows, cols, p0, p1, p2, C], a view
    index = index.long()
    batch = torch.arange(b, device=index.device)[:, None]
    picked = view[batch, index // (rows * cols), (index // cols) % rows, index % cols]
    return picked.reshape(b, index.shape[1], tubelet * patch * patch, c)


def pixel_targets(
    video: Tensor,
    index: Tensor,
    tubelet: int,
    patch: int,
    normalize: bool,
    mean: Tensor | None = None,
    std: Tensor | None = None,
) -> Tensor:
    """Target values [B, K, P*C] (float32) of the tokens at `index` [B, K]. `video` is in
    [0, 1], or channel-normalised when `mean`/`std` are given: then only the gathered tubelets
    are mapped back to [0, 1] (the same values as denormalize_video over the whole clip)."""
    picked = gather_patches(video, index, tubelet, patch).float()  # [B, K, P, C]
    if mean is not None:
        picked = picked * std.to(picked) + mean.to(picked)
    if normalize:
        picked = normalize_patches(picked)
    return picked.flatten(2)


def denormalize_video(video: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Undo channel normalisation: [B, C, F, H, W] back to [0, 1] pixels."""
    shape = (1, -1, 1, 1, 1)
    return video * std.view(shape).to(video) + mean.view(shape).to(video)


def predictions_to_pixels(
    pred: Tensor, video01: Tensor, index: Tensor, tubelet: int, patch: int, normalized: bool, eps: float = 1e-6
) -> Tensor:
    """Map predicted patches [B, K, P*C] back to [0, 1] pixels; normalised predictions take the
    true patch's mean/std (what a reconstruction picture shows)."""
    truth = gather_patches(video01, index, tubelet, patch).float()
    b, _, p, c = truth.shape
    out = pred.float().view(b, -1, p, c)
    if normalized:
        mean = truth.mean(dim=-2, keepdim=True)
        std = truth.var(dim=-2, unbiased=True, keepdim=True).sqrt()
        out = out * (std + eps) + mean
    return out.clamp(0, 1).flatten(2)


def reconstruct_video(video01: Tensor, pred_pixels: Tensor, index: Tensor, tubelet: int, patch: int) -> Tensor:
    """The input video with the tokens at `index` replaced by `pred_pixels` [B, K, P*C]."""
    b, c = video01.shape[:2]
    grid = (video01.shape[2] // tubelet, video01.shape[3] // patch, video01.shape[4] // patch)
    patches = patchify(video01.float(), tubelet, patch).flatten(2)
    patches = patches.scatter(1, index[..., None].expand(-1, -1, patches.shape[-1]), pred_pixels.float())
    return unpatchify(patches, grid, tubelet, patch, c)
