"""Scaled dot-product attention with one dispatch point: flash-attn or torch SDPA.

Layout everywhere is [B, N, H, Dh]. flash-attn is used when it is installed, the tensors are on CUDA and in
fp16/bf16; otherwise torch's SDPA computes the same function. `EVEREST_ATTENTION` (or the
config's `model.attention_backend`) forces a backend: auto, flash, sdpa or math.
"""

from __future__ import annotations

import importlib.util
import os

import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("auto", "flash", "sdpa", "math")
_FLASH_DTYPES = (torch.float16, torch.bfloat16)


def flash_available() -> bool:
    """True when the flash-attn package can be imported (it is an optional GPU extra)."""
    return importlib.util.find_spec("flash_attn") is not None


def resolve_backend(requested: str, q: Tensor) -> str:
    """Pick the backend for tensors like `q`; an explicit request that cannot run fails loudly."""
    requested = os.environ.get("EVEREST_ATTENTION", requested) or "auto"
    if requested not in BACKENDS:
        raise ValueError(f"attention backend {requested!r} unknown; choose one of {BACKENDS}")
    flash_ok = flash_available() and q.is_cuda and q.dtype in _FLASH_DTYPES
    if requested == "flash" and not flash_ok:
        why = (
            'flash-attn is not installed (pip install --no-build-isolation -e ".[gpu]")'
            if not flash_available()
            else f"it needs CUDA tensors in fp16/bf16, got {q.device.type} {q.dtype}"
        )
        raise RuntimeError(f"attention backend 'flash' was requested but cannot run: {why}")
    if requested == "auto":
        return "flash" if flash_ok else "sdpa"
    return requested


def _math_attention(q: Tensor, k: Tensor, v: Tensor, dropout_p: float) -> Tensor:
    """Explicit softmax(QK^T/sqrt(d))V in [B, H, N, Dh]; the readable twin of SDPA."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    probs = scores.softmax(dim=-1)
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p)
    return probs @ v


def _dense(q: Tensor, k: Tensor, v: Tensor, dropout_p: float, backend: str) -> Tensor:
    if backend == "flash":
        from flash_attn import flash_attn_func

        return flash_attn_func(q, k, v, dropout_p=dropout_p)
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, N, Dh]
    if backend == "math":
        out = _math_attention(qh, kh, vh, dropout_p)
    else:
        out = F.scaled_dot_product_attention(qh, kh, vh, dropout_p=dropout_p)
    return out.transpose(1, 2)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> Tensor:
    """Non-causal multi-head attention: q, k, v [B, N, H, Dh] -> [B, N, H, Dh]."""
    return _dense(q, k, v, dropout_p, resolve_backend(backend, q))
