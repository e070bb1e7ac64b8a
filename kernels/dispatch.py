"""The one place that picks the implementation of each token op.

- `auto` (default): the compiled Triton kernel for CUDA tensors, the torch twin for CPU tensors.
- `triton`: always the Triton kernel. On CPU tensors that needs the kernels to have been
  defined under `TRITON_INTERPRET=1` (Triton's interpreter; what the tests do).
- `torch`: always the torch twin (also on CUDA).

`set_backend('triton' | 'torch')` (the engine passes `features.kernel_backend`) forces a choice;
otherwise the environment variable `EVEREST_KERNELS` may, else 'auto' holds.
"""

from __future__ import annotations

import os

from torch import Tensor
from triton.runtime.interpreter import InterpretedFunction

from kernels import gather as _gather
from kernels import motion as _motion
from kernels import topk as _topk

BACKENDS = ("auto", "triton", "torch")
_chosen: str | None = None


def set_backend(name: str | None) -> None:
    """Force 'triton' or 'torch' for this process; 'auto' or None defer to EVEREST_KERNELS."""
    global _chosen
    if name is not None and name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {', '.join(BACKENDS)}")
    _chosen = name


def backend() -> str:
    """The backend in force: set_backend's forced choice, else EVEREST_KERNELS, else 'auto'."""
    name = _chosen if _chosen in ("triton", "torch") else os.environ.get("EVEREST_KERNELS", "auto")
    if name not in BACKENDS:
        raise ValueError(f"EVEREST_KERNELS={name!r} is not one of {', '.join(BACKENDS)}")
    return name


def interpreted() -> bool:
    """Whether the Triton kernels were defined under TRITON_INTERPRET=1 (they run on CPU)."""
    return isinstance(_motion._motion_score_kernel, InterpretedFunction)


def uses_triton(tensor: Tensor) -> bool:
    """Whether an op on `tensor` runs the Triton kernel under the backend in force."""
    name = backend()
    if name == "torch":
        return False
    if name == "auto":
        return tensor.is_cuda
    if not tensor.is_cuda and not interpreted():
        raise RuntimeError(
            "kernel backend 'triton' on CPU tensors needs TRITON_INTERPRET=1 set before the "
            "kernels are imported; use 'auto' or 'torch' to run the torch twins on CPU"
        )
    return True


def motion_score(emb: Tensor) -> Tensor:
    """emb [B, T, L, D] -> float32 [B, T*L]: ||e[t] - e[t-1]||_2 over D, slot 0 = slot 1."""
    emb = emb.detach()
    return _motion.motion_score_triton(emb) if uses_triton(emb) else _motion.motion_score_torch(emb)


def topk_select(
    scores: Tensor, num_kept: int, num_visible: int, noise: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """Keep the top `num_kept` of scores [B, N] (ties to the lower index); split them into the
    `num_visible` with the smallest noise and the rest. -> (visible, targets or None), int64,
    ascending. See kernels.topk for the exact rule; rows longer than kernels.topk.MAX_TOKENS
    take the torch twin."""
    if uses_triton(scores) and scores.shape[1] <= _topk.MAX_TOKENS:
        return _topk.topk_select_triton(scores, num_kept, num_visible, noise)
    return _topk.topk_select_torch(scores, num_kept, num_visible, noise)


def gather_tokens(tokens: Tensor, index: Tensor, pos: Tensor | None = None) -> Tensor:
    """out[b, k] = tokens[b, index[b, k]] (+ pos[index[b, k]]); tokens [B,N,D], index [B,K]."""
    return _gather.gather_tokens(tokens, index.long(), pos, uses_triton(tokens))


def scatter_tokens(src: Tensor, index: Tensor, num_tokens: int) -> Tensor:
    """Inverse of gather_tokens: out[b, index[b, k]] = src[b, k], zeros elsewhere; [B,N,D]."""
    return _gather.scatter_tokens(src, index.long(), num_tokens, uses_triton(src))
