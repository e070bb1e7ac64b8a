"""FLOPs of one training step, analytically and counted.

The analytical model counts what `torch.utils.flop_counter.FlopCounterMode` counts: matrix
products and convolutions at 2 FLOPs per multiply-add (norms, activations, softmax and the
optimizer are not counted). Per transformer block over n tokens of width d and MLP width h:
linears 2n(4d^2 + 2dh) forward and twice that backward (input and weight gradients);
attention 4n^2 d forward and 10n^2 d backward (torch's SDPA backward formula). The patch
embedding's input needs no gradient, so its backward is one weight gradient. Where tokens are
selected (every pretraining step, MCM fine-tuning) the whole clip is embedded once without
gradient to be scored, and the selected tokens once more with it: the weight gradient then
covers only them.

Of the 10n^2 d, 2n^2 d is SDPA's recomputation of the scores QK^T, the price of not storing
them: code that materialises the n x n scores (the published EVEREST/VideoMAE attention)
needs 8n^2 d. `StepFlops.recompute` holds that part apart, and `StepFlops.model` is the count
without it, which compares like for like with such code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

import everest.models.linear  # noqa: F401  (registers the torch.ops.everest ops counted below)
from everest.estimate.plans import TokenPlan
from everest.models.vit import VideoViTSpec


@dataclass(frozen=True)
class StepFlops:
    """FLOPs per clip. `decoder_*` is the pixel decoder (pretraining: encoder_to_decoder,
    blocks, head) or the classification head (fine-tuning)."""

    encoder_forward: int
    encoder_backward: int
    decoder_forward: int
    decoder_backward: int
    recompute: int = 0  # SDPA's QK^T recompute, already inside the *_backward figures

    @property
    def encoder(self) -> int:
        return self.encoder_forward + self.encoder_backward

    @property
    def decoder(self) -> int:
        return self.decoder_forward + self.decoder_backward

    @property
    def total(self) -> int:
        """What torch's FLOP counter counts for the step (recompute included)."""
        return self.encoder + self.decoder

    @property
    def model(self) -> int:
        """The step's FLOPs without SDPA's recompute (attention scores kept, as the math path does)."""
        return self.total - self.recompute

    def scaled(self, clips: int) -> StepFlops:
        return StepFlops(**{k: v * clips for k, v in asdict(self).items()})


def linear_flops(tokens: int, fan_in: int, fan_out: int) -> int:
    return 2 * tokens * fan_in * fan_out


def stack_flops(tokens: int, width: int, depth: int, mlp_ratio: float) -> tuple[int, int]:
    """(forward, backward) FLOPs of `depth` pre-norm blocks over `tokens` tokens."""
    hidden = int(width * mlp_ratio)
    linears = (
        linear_flops(tokens, width, 3 * width)
        + linear_flops(tokens, width, width)
        + linear_flops(tokens, width, hidden)
        + linear_flops(tokens, hidden, width)
    )
    attention = 4 * tokens * tokens * width
    return depth * (linears + attention), depth * (2 * linears + 10 * tokens * tokens * width)


def recompute_flops(tokens: int, width: int, depth: int) -> int:
    """The part of `stack_flops`' backward that is SDPA recomputing QK^T (2n^2 d per block)."""
    return depth * 2 * tokens * tokens * width


def _encoder_flops(spec: VideoViTSpec, plan: TokenPlan) -> tuple[int, int]:
    whole = linear_flops(spec.num_patches, spec.patch_pixels, spec.embed_dim)
    learned = linear_flops(plan.encoder, spec.patch_pixels, spec.embed_dim) if plan.selected else whole
    forward, backward = stack_flops(plan.encoder, spec.embed_dim, spec.depth, spec.mlp_ratio)
    return (whole if plan.selected else 0) + learned + forward, learned + backward


def pretrain_flops(spec: VideoViTSpec, plan: TokenPlan) -> StepFlops:
    """Per clip: encoder over plan.encoder tokens, decoder over plan.decoder, head on plan.targets."""
    enc_fwd, enc_bwd = _encoder_flops(spec, plan)
    dec_fwd, dec_bwd = stack_flops(plan.decoder, spec.decoder_embed_dim, spec.decoder_depth, spec.decoder_mlp_ratio)
    ends = linear_flops(plan.encoder, spec.embed_dim, spec.decoder_embed_dim) + linear_flops(
        plan.targets, spec.decoder_embed_dim, spec.patch_pixels
    )
    recompute = recompute_flops(plan.encoder, spec.embed_dim, spec.depth) + recompute_flops(
        plan.decoder, spec.decoder_embed_dim, spec.decoder_depth
    )
    return StepFlops(enc_fwd, enc_bwd, dec_fwd + ends, dec_bwd + 2 * ends, recompute)


def finetune_flops(spec: VideoViTSpec, plan: TokenPlan, num_outputs: int) -> StepFlops:
    """Per clip: encoder over plan.encoder tokens, then the pooled linear head."""
    enc_fwd, enc_bwd = _encoder_flops(spec, plan)
    head = linear_flops(1, spec.embed_dim, num_outputs)
    return StepFlops(enc_fwd, enc_bwd, head, 2 * head, recompute_flops(plan.encoder, spec.embed_dim, spec.depth))


def _cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _onednn_linear(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * x_shape.numel() * w_shape[0]  # tokens x fan_in x fan_out


def _onednn_mm(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[0]


# torch counts its CUDA attention kernels but not the CPU flash kernel SDPA uses on CPU, nor
# the oneDNN linear ops of everest.models.linear (custom ops, opaque to the counter).
_CPU_KERNELS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
    torch.ops.everest.onednn_linear: _onednn_linear,
    torch.ops.everest.onednn_mm: _onednn_mm,
}


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that also counts SDPA's CPU kernel (with torch's own SDPA formulas) and
    the oneDNN linear."""
    return FlopCounterMode(display=False, custom_mapping=_CPU_KERNELS)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs that FlopCounterMode counts while `fn()` runs (e.g. one forward + backward)."""
    with flop_counter() as counter:
        fn()
    return counter.get_total_flops()
