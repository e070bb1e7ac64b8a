"""Token gather and its inverse scatter, each the other's backward.

gather:  out[b, k] = tokens[b, index[b, k]] (+ pos[index[b, k]])      [B, N, D] -> [B, K, D]
scatter: out[b, index[b, k]] = src[b, k], zeros elsewhere              [B, K, D] -> [B, N, D]

The positional add happens in float32 and rounds once to the token dtype. Index rows must hold
distinct token indices (every Selection does): scatter writes, it does not accumulate.
The kernels read the tokens with their own strides and allocate only their outputs. One
autograd.Function per op serves both the Triton kernels and their torch twins, so the two
paths differ only in who moves the data.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels.threads import calling_thread_only

BLOCK_K = 32
BLOCK_D = 64


@triton.jit
def _tile(index_ptr, K, D, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's tile: batch row b, token offsets, their indexed rows, the columns and
    the in-bounds mask (shared by the gather and the scatter)."""
    block_k = tl.program_id(0)
    block_d = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_k = block_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_d = block_d * BLOCK_D + tl.arange(0, BLOCK_D)
    in_k = offs_k < K
    ok = in_k[:, None] & (offs_d[None, :] < D)
    rows = tl.load(index_ptr + b * K + offs_k, mask=in_k, other=0)
    cols = offs_d[None, :].to(tl.int64)
    return b, offs_k, rows, cols, ok


@triton.jit
def _gather_kernel(
    src_ptr,
    index_ptr,
    pos_ptr,
    out_ptr,
    K,
    D,
    stride_sb,
    stride_sn,
    stride_sd,
    stride_pn,
    stride_pd,
    HAS_POS: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    b, offs_k, rows, cols, ok = _tile(index_ptr, K, D, BLOCK_K, BLOCK_D)
    values = tl.load(src_ptr + b * stride_sb + rows[:, None] * stride_sn + cols * stride_sd, mask=ok)
    if HAS_POS:
        pos = tl.load(pos_ptr + rows[:, None] * stride_pn + cols * stride_pd, mask=ok)
        values = values.to(tl.float32) + pos.to(tl.float32)
    out = out_ptr + (b * K + offs_k[:, None]) * D + cols
    tl.store(out, values.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _scatter_kernel(
    src_ptr,
    index_ptr,
    out_ptr,
    K,
    D,
    stride_sb,
    stride_sk,
    stride_sd,
    stride_ob,
    stride_on,
    stride_od,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    b, offs_k, rows, cols, ok = _tile(index_ptr, K, D, BLOCK_K, BLOCK_D)
    values = tl.load(src_ptr + b * stride_sb + offs_k[:, None] * stride_sk + cols * stride_sd, mask=ok)
    tl.store(out_ptr + b * stride_ob + rows[:, None] * stride_on + cols * stride_od, values, mask=ok)


def _grid(batch: int, count: int, width: int) -> tuple[int, int, int]:
    return triton.cdiv(count, BLOCK_K), triton.cdiv(width, BLOCK_D), batch


def gather_triton(tokens: Tensor, index: Tensor, pos: Tensor | None) -> Tensor:
    """Launch the gather kernel: [B, N, D] tokens, [B, K] int64 index -> contiguous [B, K, D]."""
    batch, _, width = tokens.shape
    index = index.contiguous()
    count = index.shape[1]
    out = torch.empty(batch, count, width, dtype=tokens.dtype, device=tokens.device)
    if out.numel() == 0:
        return out
    pos_args = (pos, *pos.stride()) if pos is not None else (tokens, 0, 0)
    _gather_kernel[_grid(batch, count, width)](
        tokens,
        index,
        pos_args[0],
        out,
        count,
        width,
        *tokens.stride(),
        *pos_args[1:],
        HAS_POS=pos is not None,
        BLOCK_K=BLOCK_K,
        BLOCK_D=BLOCK_D,
    )
    return out


def scatter_triton(src: Tensor, index: Tensor, out: Tensor) -> Tensor:
    """Launch the scatter kernel: [B, K, D] src into the zeroed [B, N, D] `out` (any strides)."""
    batch, count, width = src.shape
    index = index.contiguous()
    if src.numel() == 0:
        return out
    _scatter_kernel[_grid(batch, count, width)](
        src,
        index,
        out,
        count,
        width,
        *src.stride(),
        *out.stride(),
        BLOCK_K=BLOCK_K,
        BLOCK_D=BLOCK_D,
    )
    return out


def _token_major(tokens: Tensor) -> bool:
    """Whether the token axis of [B, N, D] is the contiguous one (the patch embedding's layout)."""
    return tokens.stride(1) == 1 and tokens.shape[2] > 1


def _expand(index: Tensor, width: int) -> Tensor:
    return index[:, None, :].expand(-1, width, -1)


@calling_thread_only()
def gather_torch(tokens: Tensor, index: Tensor, pos: Tensor | None) -> Tensor:
    """Torch twin of `gather_triton`; gathers along whichever of N or D is contiguous."""
    if _token_major(tokens):
        out = tokens.transpose(1, 2).gather(2, _expand(index, tokens.shape[2])).transpose(1, 2)
    else:
        out = tokens[torch.arange(index.shape[0], device=index.device)[:, None], index]
    if pos is None:
        return out
    return pos[index].float().add_(out).to(tokens.dtype)


@calling_thread_only()
def scatter_torch(src: Tensor, index: Tensor, out: Tensor) -> Tensor:
    """Torch twin of `scatter_triton` (writes into `out` in place)."""
    if _token_major(out):
        out.transpose(1, 2).scatter_(2, _expand(index, out.shape[2]), src.transpose(1, 2))
    else:
        out.scatter_(1, index[..., None].expand(-1, -1, out.shape[2]), src)
    return out


def _pos_grad(grad: Tensor, index: Tensor, pos: Tensor) -> Tensor:
    """d loss / d pos: positions shared across the batch accumulate ([N, D], no [B, N, D])."""
    flat = grad.reshape(-1, grad.shape[-1]).to(pos.dtype)
    return torch.zeros_like(pos).index_add_(0, index.reshape(-1), flat)


class GatherTokens(torch.autograd.Function):
    """Gather whose backward is the scatter, on the Triton kernels or on the torch twins."""

    @staticmethod
    def forward(ctx, tokens: Tensor, index: Tensor, pos: Tensor | None, use_triton: bool) -> Tensor:
        ctx.save_for_backward(index, pos)
        ctx.use_triton = use_triton
        # The gradient takes the tokens' memory layout, so autograd need not copy it.
        ctx.tokens_layout = torch.empty_like(tokens, device="meta")
        return (gather_triton if use_triton else gather_torch)(tokens, index, pos)

    @staticmethod
    def backward(ctx, grad: Tensor):
        index, pos = ctx.saved_tensors
        grad_tokens = grad_pos = None
        if ctx.needs_input_grad[0]:
            zeros = torch.zeros_like(ctx.tokens_layout, device=grad.device)
            grad_tokens = (scatter_triton if ctx.use_triton else scatter_torch)(grad, index, zeros)
        if pos is not None and ctx.needs_input_grad[2]:
            grad_pos = _pos_grad(grad, index, pos)
        return grad_tokens, None, grad_pos, None


class ScatterTokens(torch.autograd.Function):
    """Scatter whose backward is the gather, on the Triton kernels or on the torch twins."""

    @staticmethod
    def forward(ctx, src: Tensor, index: Tensor, num_tokens: int, use_triton: bool) -> Tensor:
        ctx.save_for_backward(index)
        ctx.use_triton = use_triton
        zeros = src.new_zeros(src.shape[0], num_tokens, src.shape[2])
        return (scatter_triton if use_triton else scatter_torch)(src, index, zeros)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        return (gather_triton if ctx.use_triton else gather_torch)(grad, index, None), None, None, None


def gather_tokens(tokens: Tensor, index: Tensor, pos: Tensor | None, use_triton: bool) -> Tensor:
    """Differentiable gather (tokens and pos); see the module docstring."""
    return GatherTokens.apply(tokens, index, pos, use_triton)


def scatter_tokens(src: Tensor, index: Tensor, num_tokens: int, use_triton: bool) -> Tensor:
    """Differentiable scatter (src); see the module docstring."""
    return ScatterTokens.apply(src, index, num_tokens, use_triton)
