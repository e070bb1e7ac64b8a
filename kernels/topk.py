"""Top-K token selection with an optional random split, returning indices in raster order.

Given scores [B, N] (float32, finite), keep the `num_kept` highest-scoring tokens of each row;
equal scores go to the lower token index. When `num_visible < num_kept`, the kept tokens are
split at random: the `num_visible` kept tokens with the smallest `noise` (float32 [B, N], one
uniform draw per token; ties to the lower index) are visible, the other kept tokens are targets.
That is the published "shuffle the kept tokens, take the first V" in distribution, but it is
defined per token, so every backend gives the same sets from the same noise.

Both index groups come back sorted ascending (raster order: slot-major, then row, then column).

The Triton kernel holds a whole row in registers (one program per row), finds each threshold
by a 32-step bitwise search on order-preserving integer keys, and writes the groups by prefix
sum: no sort, no [B, N] temporaries in memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels.threads import calling_thread_only

MAX_TOKENS = 32768  # one row per program, held in registers


@triton.jit
def _order_key(x):
    """float32 -> int64 in [0, 2**32) ordered like x (both zeros map to the same key)."""
    bits = x.to(tl.int32, bitcast=True)
    key = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    key = tl.where(x == 0.0, 0, key)
    return key.to(tl.int64) + 2147483648


@triton.jit
def _take_largest(keys, eligible, k):
    """Mask of the k largest keys among the eligible ones; equal keys go to the lower index."""
    threshold = tl.full([], 0, tl.int64)
    for bit in tl.static_range(31, -1, -1):
        candidate = threshold | (1 << bit)
        count = tl.sum((eligible & (keys >= candidate)).to(tl.int32), axis=0)
        threshold = tl.where(count >= k, candidate, threshold)
    above = eligible & (keys > threshold)
    need = k - tl.sum(above.to(tl.int32), axis=0)
    at = eligible & (keys == threshold)
    rank_at = tl.cumsum(at.to(tl.int32), axis=0) - 1
    return above | (at & (rank_at < need))


@triton.jit
def _store_compact(out_ptr, chosen, offs):
    """Write the indices where `chosen` holds, in ascending order, to out_ptr[0:count]."""
    slot = tl.cumsum(chosen.to(tl.int32), axis=0) - 1
    tl.store(out_ptr + slot, offs.to(tl.int64), mask=chosen)


@triton.jit
def _topk_select_kernel(
    scores_ptr,
    noise_ptr,
    visible_ptr,
    target_ptr,
    N,
    num_kept,
    num_visible,
    SPLIT: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_N)
    valid = offs < N
    scores = tl.load(scores_ptr + row * N + offs, mask=valid, other=0.0)
    kept = _take_largest(_order_key(scores), valid, num_kept)
    if SPLIT:
        noise = tl.load(noise_ptr + row * N + offs, mask=valid, other=0.0)
        # Smallest noise first: the complement key turns "smallest" into "largest".
        visible = _take_largest(4294967295 - _order_key(noise), kept, num_visible)
        _store_compact(visible_ptr + row * num_visible, visible, offs)
        _store_compact(target_ptr + row * (num_kept - num_visible), kept & ~visible, offs)
    else:
        _store_compact(visible_ptr + row * num_kept, kept, offs)


def _check(scores: Tensor, num_kept: int, num_visible: int, noise: Tensor | None) -> None:
    tokens = scores.shape[1]
    if not 1 <= num_visible <= num_kept <= tokens:
        raise ValueError(f"need 1 <= num_visible ({num_visible}) <= num_kept ({num_kept}) <= N ({tokens})")
    if num_visible < num_kept and (noise is None or noise.shape != scores.shape):
        raise ValueError(f"a random split needs noise of shape {tuple(scores.shape)}")


def topk_select_triton(
    scores: Tensor, num_kept: int, num_visible: int, noise: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """Kernel path; same contract as `topk_select_torch`. Rows longer than MAX_TOKENS raise."""
    _check(scores, num_kept, num_visible, noise)
    batch, tokens = scores.shape
    if tokens > MAX_TOKENS:
        raise ValueError(f"topk_select_triton holds a row in registers: N={tokens} > {MAX_TOKENS}")
    split = num_visible < num_kept
    scores = scores.float().contiguous()
    visible = torch.empty(batch, num_visible, dtype=torch.int64, device=scores.device)
    target = torch.empty(batch, num_kept - num_visible, dtype=torch.int64, device=scores.device)
    noise = noise.float().contiguous() if split else scores
    block = triton.next_power_of_2(tokens)
    warps = 4 if block <= 2048 else 8 if block <= 8192 else 16
    _topk_select_kernel[(batch,)](
        scores,
        noise,
        visible,
        target,
        tokens,
        num_kept,
        num_visible,
        SPLIT=split,
        BLOCK_N=block,
        num_warps=warps,
    )
    return visible, target if split else None


def _unique_key(values: Tensor, index: Tensor, descending: bool) -> Tensor:
    """int64 keys, all distinct, ordering like `values` (desc or asc), ties to the lower index."""
    bits = values.float().contiguous().view(torch.int32)
    key = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    key = torch.where(values == 0, 0, key).long()
    if descending:
        return key * 2**32 + (2**32 - 1 - index)
    return key * 2**32 + index


@calling_thread_only()
def topk_select_torch(
    scores: Tensor, num_kept: int, num_visible: int, noise: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """scores [B, N] -> (visible [B, V], targets [B, K-V] or None when V == K), int64, ascending."""
    _check(scores, num_kept, num_visible, noise)
    index = torch.arange(scores.shape[1], device=scores.device)
    kept = torch.topk(_unique_key(scores, index, descending=True), num_kept, dim=1, sorted=False).indices
    if num_visible == num_kept:
        return kept.sort(dim=1).values, None
    split_key = _unique_key(noise.gather(1, kept), kept, descending=False)
    ranked = kept.gather(1, split_key.argsort(dim=1))
    return ranked[:, :num_visible].sort(dim=1).values, ranked[:, num_visible:].sort(dim=1).values
