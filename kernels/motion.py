"""Motion score: s[b, t, l] = ||e[b, t, l] - e[b, t-1, l]||_2 over the width D, in float32.

Slot 0 has no predecessor and takes slot 1's score (the published rule); a single slot scores 0.
The Triton kernel reads the embeddings once with their own strides (the patch embedding hands
over a transposed view, D-stride N) and writes only the [B, T*L] scores.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels.threads import calling_thread_only


def _blocks(stride_d: int) -> tuple[int, int, int]:
    """(BLOCK_L, BLOCK_D, num_warps), the fastest of a sweep on an H100 for each layout."""
    return (16, 256, 8) if stride_d == 1 else (32, 128, 4)


@triton.jit
def _motion_score_kernel(
    emb_ptr,
    out_ptr,
    T,
    L,
    D,
    stride_b,
    stride_t,
    stride_l,
    stride_d,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # One program scores BLOCK_L positions of one slot t >= 1; slot t-1 is read by this program
    # and by its neighbour (scheduled next to it), so the second read is served from L2.
    block_l = tl.program_id(0)
    t = tl.program_id(1) + 1
    b = tl.program_id(2).to(tl.int64)
    offs_l = block_l * BLOCK_L + tl.arange(0, BLOCK_L)
    in_l = offs_l < L
    row = emb_ptr + b * stride_b + offs_l[:, None].to(tl.int64) * stride_l
    acc = tl.zeros([BLOCK_L], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        ok = in_l[:, None] & (offs_d[None, :] < D)
        ptr = row + offs_d[None, :].to(tl.int64) * stride_d
        cur = tl.load(ptr + t * stride_t, mask=ok, other=0.0).to(tl.float32)
        prev = tl.load(ptr + (t - 1) * stride_t, mask=ok, other=0.0).to(tl.float32)
        diff = cur - prev
        acc += tl.sum(diff * diff, axis=1)
    score = tl.sqrt_rn(acc)
    out_row = out_ptr + b * T * L
    tl.store(out_row + t * L + offs_l, score, mask=in_l)
    if t == 1:
        tl.store(out_row + offs_l, score, mask=in_l)


def motion_score_triton(emb: Tensor) -> Tensor:
    """emb [B, T, L, D] (any float dtype, any strides) -> scores [B, T*L] float32."""
    batch, slots, positions, width = emb.shape
    out = torch.zeros(batch, slots * positions, dtype=torch.float32, device=emb.device)
    if slots < 2 or batch == 0 or positions == 0:
        return out
    block_l, block_d, warps = _blocks(emb.stride(3))
    grid = (triton.cdiv(positions, block_l), slots - 1, batch)
    _motion_score_kernel[grid](
        emb,
        out,
        slots,
        positions,
        width,
        *emb.stride(),
        BLOCK_L=block_l,
        BLOCK_D=block_d,
        num_warps=warps,
    )
    return out


def _scratch_like(view: Tensor, dtype: torch.dtype) -> Tensor:
    """A dense buffer shaped like `view` whose axes are ordered in memory as `view`'s are."""
    order = sorted(range(view.dim()), key=lambda axis: -view.stride(axis))
    buffer = view.new_empty([view.shape[axis] for axis in order], dtype=dtype)
    return buffer.permute([order.index(axis) for axis in range(view.dim())])


@calling_thread_only()
def motion_score_torch(emb: Tensor, chunk: int = 64) -> Tensor:
    """Torch twin of `motion_score_triton`. It sums squared float32 differences over `chunk`-wide
    slices of D through two reused buffers of at most [B, T, L, chunk], so whichever axis of the
    embeddings is contiguous stays the fast axis and fresh memory stays small."""
    batch, slots, positions, width = emb.shape
    out = torch.zeros(batch, slots, positions, dtype=torch.float32, device=emb.device)
    if slots < 2:
        return out.view(batch, slots * positions)
    first = emb[..., :chunk]
    upcast = _scratch_like(first, torch.float32) if emb.dtype != torch.float32 else None
    diff = _scratch_like(first[:, 1:], torch.float32)
    squares = out[:, 1:]
    for start in range(0, width, chunk):
        part = emb[..., start : start + chunk]
        used = part.shape[-1]
        if upcast is not None:
            part = upcast[..., :used].copy_(part)
        step = torch.sub(part[:, 1:], part[:, :-1], out=diff[..., :used])
        squares += step.square_().sum(-1)
    squares.sqrt_()
    out[:, 0] = out[:, 1]
    return out.view(batch, slots * positions)
