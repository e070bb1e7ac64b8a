"""Video ViT building blocks, VideoMAE-exact: 3D tubelet patch embedding, fixed sinusoidal
positions, pre-norm blocks with q/v biases and no k bias, optional layer scale and drop path.

Parameter names match the official VideoMAE / EVEREST checkpoints (patch_embed.proj,
blocks.i.attn.qkv, attn.q_bias, attn.v_bias, mlp.fc1, gamma_1, ...).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
from timm.layers import DropPath, trunc_normal_
from torch import Tensor
from torch.utils.checkpoint import checkpoint

import kernels
from everest.models.attention import attention
from everest.models.linear import Linear, linear
from everest.models.presets import PRESETS
from everest.patches import embedding_patches


@dataclass
class VideoViTSpec:
    """Everything that fixes the shapes and the function of the encoder/decoder stacks."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    decoder_embed_dim: int = 384
    decoder_depth: int = 4
    decoder_num_heads: int = 6
    decoder_mlp_ratio: float = 4.0
    input_size: int = 224
    patch_size: int = 16
    tubelet_size: int = 2
    num_frames: int = 16
    in_chans: int = 3
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    head_norm_eps: float = 1e-6  # decoder.norm and fc_norm (Hugging Face uses 1e-5 there)
    encoder_final_norm: bool = True  # pretraining encoder's last LayerNorm (HF omits it with mean pooling)
    drop_path_rate: float = 0.0
    layer_scale_init_value: float = 0.0
    attention_backend: str = "auto"
    use_checkpoint: bool = False
    compile: bool = False  # torch.compile every block (Module.compile: parameter names unchanged)

    @property
    def grid(self) -> tuple[int, int, int]:
        """(temporal slots T, patch rows, patch columns)."""
        side = self.input_size // self.patch_size
        return self.num_frames // self.tubelet_size, side, side

    @property
    def num_patches(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def patch_pixels(self) -> int:
        """Values the pixel head predicts per token: channels x tubelet x patch x patch."""
        return self.in_chans * self.tubelet_size * self.patch_size**2

    def to_dict(self) -> dict:
        return asdict(self)

    def with_(self, **changes) -> VideoViTSpec:
        return replace(self, **changes)


def spec_for(backbone: str, **overrides) -> VideoViTSpec:
    """The preset `backbone` with any non-None field overridden."""
    if backbone not in PRESETS:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(PRESETS)}")
    fields = dict(PRESETS[backbone])
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return VideoViTSpec(**fields)


def sinusoid_table(num_positions: int, dim: int) -> Tensor:
    """VideoMAE's fixed 1D sin/cos table [num_positions, dim] (float32, computed in float64)."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim
    angles = pos / torch.pow(10000.0, exponent)[None, :]
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.float()


class PatchEmbed3d(nn.Module):
    """Tubelet embedding: [B, C, F, H, W] -> [B, N, D], tokens ordered slot-major (t, row, col).

    The weights are a Conv3d's (kernel = stride = tubelet x patch x patch, VideoMAE's name
    `patch_embed.proj`); the product runs as one linear layer over the cut-out tubelets, the same
    function as the convolution with a plain matrix product (`conv_reference` is the twin)."""

    def __init__(self, spec: VideoViTSpec):
        super().__init__()
        self.tubelet, self.patch = spec.tubelet_size, spec.patch_size
        kernel = (spec.tubelet_size, spec.patch_size, spec.patch_size)
        self.num_patches, self.num_frames, self.input_size = spec.num_patches, spec.num_frames, spec.input_size
        self.proj = nn.Conv3d(spec.in_chans, spec.embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, video: Tensor, keep: Tensor | None = None) -> Tensor:
        """[B, N, D] tokens, or [B, K, D] for the `keep` [B, K] indices only: then the product,
        and the tubelets its weight gradient keeps, cover just those K (a training step scores
        every token without gradient, then embeds the few it keeps with one)."""
        patches = embedding_patches(video, self.tubelet, self.patch)
        if patches.shape[1] != self.num_patches:
            raise ValueError(
                f"video {tuple(video.shape)} gives {patches.shape[1]} tokens but the model was built "
                f"for {self.num_patches} ({self.num_frames} frames at {self.input_size}px)"
            )
        if keep is not None:
            patches = kernels.gather_tokens(patches, keep)
        return linear(patches, self.proj.weight.flatten(1), self.proj.bias)

    def conv_reference(self, video: Tensor) -> Tensor:
        """The same embedding through the Conv3d itself."""
        return self.proj(video).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with VideoMAE's q/v biases (the k bias is fixed at zero)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: str = "auto",
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.backend = backend
        self.attn_drop = attn_drop
        self.qkv = Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        *lead, width = x.shape
        qkv = linear(x, self.qkv.weight, bias).reshape(*lead, 3, self.num_heads, width // self.num_heads)
        q, k, v = qkv.unbind(-3)
        out = attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0, backend=self.backend)
        return self.proj_drop(self.proj(out.reshape(*lead, width)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + gamma_1 * attn(norm1(x)); x + gamma_2 * mlp(norm2(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        init_values: float = 0.0,
        norm_eps: float = 1e-6,
        backend: str = "auto",
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, backend=backend)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if init_values > 0:
            self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))
            self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: Tensor) -> Tensor:
        a = self.attn(self.norm1(x))
        m_in = x + self.drop_path(a if self.gamma_1 is None else self.gamma_1 * a)
        m = self.mlp(self.norm2(m_in))
        return m_in + self.drop_path(m if self.gamma_2 is None else self.gamma_2 * m)


def make_blocks(
    dim: int, depth: int, num_heads: int, mlp_ratio: float, spec: VideoViTSpec, drop_path_rate: float
) -> nn.ModuleList:
    """`depth` blocks with drop path rising linearly to drop_path_rate (timm's rule), each
    compiled with torch.compile when spec.compile (one graph per block: the norms, GELU and
    residual adds fuse around the matrix products; every block shares the compiled code)."""
    rates = [drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
    blocks = nn.ModuleList(
        Block(
            dim,
            num_heads,
            mlp_ratio,
            spec.qkv_bias,
            rate,
            spec.layer_scale_init_value,
            spec.norm_eps,
            spec.attention_backend,
        )
        for rate in rates
    )
    if spec.compile:  # in place, so state_dict names stay those of the eager blocks
        for block in blocks:
            block.compile()
    return blocks


def run_blocks(blocks: nn.ModuleList, x: Tensor, use_checkpoint: bool) -> Tensor:
    """Apply the blocks in order; with use_checkpoint, recompute each block in the backward."""
    for block in blocks:
        if use_checkpoint and torch.is_grad_enabled():
            x = checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
    return x


def gathered(params, modifier_rank: int | None = None) -> contextlib.AbstractContextManager:
    """Context for using parameters outside the engine's forward. Under ZeRO-3 (parameters
    partitioned by DeepSpeed) every rank gathers them, collectively, and they are re-partitioned
    on exit, keeping rank `modifier_rank`'s edits if one is given; otherwise it does nothing."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=modifier_rank)


def editing(params) -> contextlib.AbstractContextManager:
    """Context for editing parameters in place: gathered, edited on rank 0 and re-partitioned under
    ZeRO-3 (zero.Init builds the model already partitioned); otherwise it does nothing."""
    return gathered(params, modifier_rank=0)


def init_vit_weights(module: nn.Module) -> None:
    """VideoMAE's init: truncated-normal(0.02) linears with zero bias, unit LayerNorms."""
    if not isinstance(module, (nn.Linear, nn.LayerNorm)):
        return
    with editing(list(module.parameters(recurse=False))):
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        else:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class VideoEncoder(nn.Module):
    """The video ViT encoder. `forward(video, keep)` runs only the tokens listed in `keep`."""

    def __init__(self, spec: VideoViTSpec, final_norm: bool = True):
        super().__init__()
        self.spec = spec
        self.patch_embed = PatchEmbed3d(spec)
        self.register_buffer("pos_embed", sinusoid_table(spec.num_patches, spec.embed_dim), persistent=False)
        self.blocks = make_blocks(spec.embed_dim, spec.depth, spec.num_heads, spec.mlp_ratio, spec, spec.drop_path_rate)
        self.norm = nn.LayerNorm(spec.embed_dim, eps=spec.norm_eps) if final_norm else nn.Identity()
        self.apply(init_vit_weights)

    @property
    def num_patches(self) -> int:
        return self.spec.num_patches

    def embed(self, video: Tensor, keep: Tensor | None = None) -> Tensor:
        """Patch tokens [B, N, D] without positions (what the motion score is computed on), or
        [B, K, D] for the `keep` indices only (see PatchEmbed3d)."""
        return self.patch_embed(video, keep)

    def encode(self, tokens: Tensor, keep: Tensor | None = None, prefix: Tensor | None = None) -> Tensor:
        """Add positions, keep the listed tokens ([B, K] indices, or all), prepend `prefix`
        tokens ([1, P, D], e.g. a class token, no position), run blocks + final norm."""
        if keep is None:
            x = tokens + self.pos_embed.to(tokens.dtype)
        else:
            x = kernels.gather_tokens(tokens, keep, self.pos_embed)
        return self._blocks(x, prefix)

    def encode_kept(self, kept: Tensor, keep: Tensor | None, prefix: Tensor | None = None) -> Tensor:
        """`encode` for tokens embedded at `keep` only (`embed(video, keep)`, [B, K, D]; None:
        every token)."""
        pos = self.pos_embed.to(kept.dtype)
        return self._blocks(kept + (pos if keep is None else pos[keep]), prefix)

    def _blocks(self, x: Tensor, prefix: Tensor | None) -> Tensor:
        if prefix is not None:
            x = torch.cat([prefix.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = run_blocks(self.blocks, x, self.spec.use_checkpoint)
        return self.norm(x)

    def forward(self, video: Tensor, keep: Tensor | None = None) -> Tensor:
        """video [B, C, F, H, W] (normalised) -> token features [B, N or K, D] after the norm."""
        return self.encode_kept(self.embed(video, keep), keep)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def layer_id_for(name: str, num_layers: int) -> int:
    """VideoMAE's layer index for layer-wise LR decay: embeddings 0, block i -> i + 1, rest last."""
    stripped = name.removeprefix("encoder.")
    if stripped.startswith(("patch_embed", "pos_embed", "cls_token", "mask_token")):
        return 0
    if stripped.startswith("blocks."):
        return int(stripped.split(".")[1]) + 1
    return num_layers + 1
