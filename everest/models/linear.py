"""Linear layers whose CPU matrix products run on oneDNN.

On CPU, `F.linear` and its backward call MKL's sgemm. On AMD processors MKL takes an AVX2 code
path, while oneDNN (`torch.ops.mkldnn._linear_pointwise`, the op Inductor emits for CPU
linears) chooses its kernels by instruction set: on the AVX-512 AMD EPYC this project is built
on it ran the same fp32 products about 2x faster (forward, input gradient and weight gradient
alike). `Linear` is an `nn.Linear` (same parameters, names and init) whose forward takes that
path for CPU fp32/bf16 tensors outside autocast, and `F.linear` everywhere else.
`EVEREST_LINEAR=torch` turns the oneDNN path off (`onednn` or `auto`, the default, leave it on).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("auto", "onednn", "torch")
_DTYPES = (torch.float32, torch.bfloat16)


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's linear op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def backend() -> str:
    """The backend EVEREST_LINEAR asks for ('auto' when unset)."""
    name = os.environ.get("EVEREST_LINEAR", "auto") or "auto"
    if name not in BACKENDS:
        raise ValueError(f"EVEREST_LINEAR={name!r} is not one of {', '.join(BACKENDS)}")
    return name


def _mm(x: Tensor, weight: Tensor) -> Tensor:
    """x [M, K] @ weight[N, K]^T -> [M, N] on oneDNN (either operand may be a transposed view)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")


class _OneDnnLinear(torch.autograd.Function):
    """y = x W^T + b with all three products (forward, dX, dW) on oneDNN."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, "none", [], "")
        ctx.save_for_backward(flat, weight)
        ctx.has_bias = bias is not None
        ctx.lead = x.shape[:-1]
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor):
        flat, weight = ctx.saved_tensors
        g = grad.reshape(-1, weight.shape[0])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _mm(g, weight.t()).view(*ctx.lead, weight.shape[1])
        if ctx.needs_input_grad[1]:
            grad_w = _mm(g.t(), flat.t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


def uses_onednn(x: Tensor, weight: Tensor) -> bool:
    """Whether `linear(x, weight, ...)` takes the oneDNN path."""
    return (backend() != "torch" and x.device.type == "cpu" and x.dtype in _DTYPES and x.dtype == weight.dtype
            and x.dim() >= 2 and x.numel() > 0 and not torch.is_autocast_enabled("cpu") and onednn_available())


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.linear(x, weight, bias)`, on oneDNN for CPU fp32/bf16 tensors (see the module doc)."""
    if uses_onednn(x, weight):
        return _OneDnnLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` whose forward is `linear` (oneDNN products on CPU)."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
