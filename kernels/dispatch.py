"""The one place that picks the implementation of each token op.

Torch twins serve CPU tensors; Triton kernels serve CUDA tensors. `EVEREST_KERNELS`
(auto | triton | torch) forces a choice.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor


def _gather_reference(tokens: Tensor, index: Tensor, pos: Tensor | None = None) -> Tensor:
    out = torch.gather(tokens, 1, index[..., None].expand(-1, -1, tokens.shape[-1]))
    if pos is not None:
        out = out + pos.to(out.dtype)[index]
    return out


def gather_tokens(tokens: Tensor, index: Tensor, pos: Tensor | None = None) -> Tensor:
    """out[b, k] = tokens[b, index[b, k]] (+ pos[index[b, k]]); tokens [B,N,D], index [B,K]."""
    return _gather_reference(tokens, index, pos)


def scatter_tokens(src: Tensor, index: Tensor, num_tokens: int) -> Tensor:
    """Inverse of gather_tokens: out[b, index[b, k]] = src[b, k], zeros elsewhere; [B,N,D]."""
    out = src.new_zeros(src.shape[0], num_tokens, src.shape[-1])
    return out.scatter(1, index[..., None].expand(-1, -1, src.shape[-1]), src)


def backend_override() -> str:
    """The forced backend from EVEREST_KERNELS, or 'auto'."""
    return os.environ.get("EVEREST_KERNELS", "auto")
