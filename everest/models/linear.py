"""Linear layers whose CPU matrix products run on oneDNN.

On CPU, `F.linear` and its backward call MKL's sgemm. On AMD processors MKL takes an AVX2 code
path, while oneDNN (`torch.ops.mkldnn._linear_pointwise`, the op Inductor emits for CPU
linears) chooses its kernels by instruction set: on the AVX-512 AMD EPYC this project is built
on it ran the same fp32 products about 2x faster (forward, input gradient and weight gradient
alike). `Linear` is an `nn.Linear` (same parameters, names and init) whose forward takes that
path for CPU fp32/bf16 tensors outside autocast, and `F.linear` everywhere else.
On AVX2-only processors oneDNN can be the slower one, so `auto` (the default) takes whichever
`everest.models.linear_backend` measured faster for the model at start-up (oneDNN until then);
`EVEREST_LINEAR=torch` / `onednn` force one.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("auto", "onednn", "torch")
_DTYPES = (torch.float32, torch.bfloat16)


def onednn_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this torch build has oneDNN's linear op and this CPU runs it in `dtype` (oneDNN's
    bf16 products need AVX-512 or AMX: on an AVX2-only processor bf16 stays on `F.linear`)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    return dtype != torch.bfloat16 or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def backend() -> str:
    """The backend EVEREST_LINEAR asks for ('auto' when unset)."""
    name = os.environ.get("EVEREST_LINEAR", "auto") or "auto"
    if name not in BACKENDS:
        raise ValueError(f"EVEREST_LINEAR={name!r} is not one of {', '.join(BACKENDS)}")
    return name


_CHOSEN: dict[torch.dtype, str] = {}  # what `auto` measured in this process, per dtype


def set_choice(dtype: torch.dtype, name: str) -> None:
    """Make `auto` use `name` ('onednn' or 'torch') for `dtype` (everest.models.linear_backend)."""
    if name not in BACKENDS[1:]:
        raise ValueError(f"linear backend {name!r} is not one of {', '.join(BACKENDS[1:])}")
    _CHOSEN[dtype] = name


def resolved(dtype: torch.dtype) -> str:
    """'onednn' or 'torch': the backend CPU products of `dtype` take now."""
    name = backend()
    if name == "auto":
        name = _CHOSEN.get(dtype, "onednn")
    return name if name == "torch" or onednn_available(dtype) else "torch"


def describe_backend() -> str:
    """The fp32 backend and how it was decided, for benchmark headers."""
    name = backend()
    if name != "auto":
        return f"{name} (EVEREST_LINEAR)"
    if torch.float32 in _CHOSEN:
        return f"{_CHOSEN[torch.float32]} (auto, measured)"
    return f"{resolved(torch.float32)} (auto, not measured)"


def _onednn(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


# Custom ops, so that torch.compile calls them as they are (Inductor's own lowering of the
# oneDNN op wants frozen weights) and autograd runs the backward's products on oneDNN too.
@torch.library.custom_op("everest::onednn_mm", mutates_args=())
def onednn_mm(a: Tensor, b: Tensor) -> Tensor:
    """a [M, K] @ b[N, K]^T -> [M, N] on oneDNN; either operand may be a transposed view."""
    return _onednn(a, b, None)


@onednn_mm.register_fake
def _(a: Tensor, b: Tensor) -> Tensor:
    return a.new_empty(a.shape[0], b.shape[0])


@torch.library.custom_op("everest::onednn_linear", mutates_args=())
def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """F.linear(x, weight, bias) for x [..., K] on oneDNN (the bias added inside the product)."""
    return _onednn(x.reshape(-1, x.shape[-1]), weight, bias).view(*x.shape[:-1], weight.shape[0])


@onednn_linear.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def _save(ctx, inputs, output) -> None:
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _backward(ctx, grad: Tensor):
    x, weight = ctx.saved_tensors
    g = grad.reshape(-1, weight.shape[0])
    grad_x = grad_w = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_x = onednn_mm(g, weight.t()).view(x.shape)
    if ctx.needs_input_grad[1]:
        grad_w = onednn_mm(g.t(), x.reshape(-1, x.shape[-1]).t())
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_b = g.sum(0)
    return grad_x, grad_w, grad_b


onednn_linear.register_autograd(_backward, setup_context=_save)


def uses_onednn(x: Tensor, weight: Tensor) -> bool:
    """Whether `linear(x, weight, ...)` takes the oneDNN path."""
    return (
        x.device.type == "cpu"
        and x.dtype in _DTYPES
        and x.dtype == weight.dtype
        and x.dim() >= 2
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and resolved(x.dtype) == "onednn"
    )


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.linear(x, weight, bias)`, on oneDNN for CPU fp32/bf16 tensors (see the module doc)."""
    if uses_onednn(x, weight):
        return onednn_linear(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` whose forward is `linear` (oneDNN products on CPU)."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
