"""Memory of one rank: model states under a ZeRO stage (DeepSpeed's own estimators) and
activations per clip (bytes autograd keeps, measured on a tiny block and scaled).

Activations are measured, not guessed: a saved-tensor hook records every distinct storage
autograd keeps for the backward of one transformer block at a tiny shape (same head width,
MLP ratio and dtype as the target). Those bytes are linear in tokens x width, which is how
they are scaled to the real model. The stem (the tubelets the patch embedding keeps, the
decoder head and the loss inputs) is added term by term.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor, nn

from everest.estimate.plans import TokenPlan
from everest.models.vit import Block, VideoViTSpec

PROBE_TOKENS = 64
PROBE_HEADS = 2


@dataclass(frozen=True)
class ModelStates:
    """Bytes of parameters, gradients and optimizer states: per GPU, and per node in CPU RAM."""

    gpu_bytes: int
    cpu_bytes: int


@dataclass(frozen=True)
class ActivationMemory:
    """Bytes kept for the backward per clip: without activation checkpointing, and with
    per-block checkpointing (block inputs kept, one block's activations rebuilt at a time)."""

    plain: int
    checkpointed: int


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(all parameters, parameters of the largest single module): what ZeRO-3 sizing needs."""
    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return total, largest


def model_states(
    total_params: int,
    largest_layer_params: int,
    stage: int,
    gpus_per_node: int,
    nodes: int,
    offload_optimizer: bool = False,
    offload_param: bool = False,
) -> ModelStates:
    """DeepSpeed's estimate for mixed-precision Adam. Stages 1 and 2 share DeepSpeed's ZeRO-1/2
    estimator (16-bit weights and gradients whole, fp32 states partitioned); stage 0 is that
    estimator on one GPU (nothing partitioned)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    import everest.engine.distributed  # noqa: F401  (picks DeepSpeed's accelerator before its import)

    if stage == 3:
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            total_params,
            largest_layer_params,
            num_gpus_per_node=gpus_per_node,
            num_nodes=nodes,
            cpu_offload=offload_optimizer,
            cpu_offload_params=offload_param,
            zero_init=False,
        )
    else:
        shards = (gpus_per_node, nodes) if stage in (1, 2) else (1, 1)
        cpu, gpu = estimate_zero2_model_states_mem_needs(
            total_params, num_gpus_per_node=shards[0], num_nodes=shards[1], cpu_offload=offload_optimizer
        )
    return ModelStates(gpu_bytes=int(gpu), cpu_bytes=int(cpu))


def saved_tensor_bytes(fn: Callable[[], object], exclude: Iterable[Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves for the backward while `fn()` runs
    (tensors in `exclude`, e.g. the parameters, not counted)."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    sizes: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            sizes[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        keep_graph_alive = fn()  # noqa: F841  (saved storages must not be freed and reused mid-count)
    return sum(sizes.values())


@cache
def block_bytes_per_token_width(head_dim: int, mlp_ratio: float, dtype: torch.dtype) -> float:
    """Saved bytes of one transformer block per (token x width), measured at a tiny shape."""
    width = head_dim * PROBE_HEADS
    torch.manual_seed(0)
    block = Block(width, PROBE_HEADS, mlp_ratio, backend="sdpa").to(dtype)

    def run(tokens: int) -> int:
        x = torch.randn(1, tokens, width, dtype=dtype, requires_grad=True)
        return saved_tensor_bytes(lambda: block(x), exclude=block.parameters())

    slope = (run(2 * PROBE_TOKENS) - run(PROBE_TOKENS)) / PROBE_TOKENS
    return slope / width


def stack_bytes(
    tokens: int, width: int, depth: int, heads: int, mlp_ratio: float, dtype: torch.dtype
) -> tuple[int, int, int]:
    """(all blocks' activations, block inputs only, one block's activations) for a stack."""
    per_block = int(block_bytes_per_token_width(width // heads, mlp_ratio, dtype) * tokens * width)
    inputs = tokens * width * torch.empty((), dtype=dtype).element_size()
    return depth * per_block, depth * inputs, per_block if depth else 0


def activation_memory(spec: VideoViTSpec, plan: TokenPlan, dtype: torch.dtype = torch.bfloat16) -> ActivationMemory:
    """Activations per clip for a pretraining plan (plan.decoder > 0) or a fine-tuning one."""
    elem = torch.empty((), dtype=dtype).element_size()
    # the tubelets the patch embedding keeps for its weight gradient: the selected ones, or the clip
    clip = spec.in_chans * spec.num_frames * spec.input_size**2
    stem = (plan.encoder * spec.patch_pixels if plan.selected else clip) * elem
    enc_all, enc_inputs, enc_block = stack_bytes(
        plan.encoder, spec.embed_dim, spec.depth, spec.num_heads, spec.mlp_ratio, dtype
    )
    plain, inputs, largest_block = enc_all, enc_inputs, enc_block
    if plan.decoder:
        dec_all, dec_inputs, dec_block = stack_bytes(
            plan.decoder,
            spec.decoder_embed_dim,
            spec.decoder_depth,
            spec.decoder_num_heads,
            spec.decoder_mlp_ratio,
            dtype,
        )
        plain, inputs, largest_block = plain + dec_all, inputs + dec_inputs, max(largest_block, dec_block)
        # encoder norm + projection inputs, decoder norm + head inputs, fp32 predictions and targets
        stem += 2 * plan.encoder * spec.embed_dim * elem + 2 * plan.targets * spec.decoder_embed_dim * elem
        stem += 2 * plan.targets * spec.patch_pixels * 4
    return ActivationMemory(plain=stem + plain, checkpointed=stem + inputs + largest_block)


def largest_micro_batch(gpu_bytes: int, states: ModelStates, per_clip: int, reserve_bytes: int) -> int:
    """Clips per rank that fit beside the model states and a reserve (CUDA context, allocator slack)."""
    free = gpu_bytes - states.gpu_bytes - reserve_bytes
    return max(0, free // per_clip)
