"""Token kernels used by the models and the selection code.

Each op has a Triton kernel for CUDA tensors and a torch twin computing the same function;
`kernels.dispatch` chooses between them. Import the ops from here.
"""

from kernels.dispatch import gather_tokens, scatter_tokens

__all__ = ["gather_tokens", "scatter_tokens"]
