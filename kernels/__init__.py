"""Token kernels used by the models and the selection code.

Each op has a Triton kernel for CUDA tensors and a torch twin computing the same function, one
file per kernel (motion.py, topk.py, gather.py); `kernels.dispatch` chooses between them.
Import the ops from here.
"""

from kernels.dispatch import (
    backend,
    gather_tokens,
    motion_score,
    scatter_tokens,
    set_backend,
    topk_select,
)

__all__ = ["backend", "gather_tokens", "motion_score", "scatter_tokens", "set_backend", "topk_select"]
