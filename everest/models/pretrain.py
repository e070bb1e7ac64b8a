"""The masked video autoencoder: encoder over the visible tokens, a light decoder over the
visible tokens plus mask tokens at the target positions, and a pixel head for the targets.

The caller supplies the token indices (a Selection); this module never builds a mask, so
motion-centric, random and tube masking all plug in unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from torch import Tensor

from everest.models.linear import Linear
from everest.models.vit import VideoEncoder, VideoViTSpec, init_vit_weights, make_blocks, run_blocks, sinusoid_table


class PixelDecoder(nn.Module):
    """Decoder blocks, final norm and the head predicting tubelet pixels."""

    def __init__(self, spec: VideoViTSpec):
        super().__init__()
        self.spec = spec
        dim = spec.decoder_embed_dim
        self.blocks = make_blocks(dim, spec.decoder_depth, spec.decoder_num_heads, spec.decoder_mlp_ratio, spec, 0.0)
        self.norm = nn.LayerNorm(dim, eps=spec.head_norm_eps)
        self.head = Linear(dim, spec.patch_pixels)

    def forward(self, x: Tensor, num_targets: int) -> Tensor:
        x = run_blocks(self.blocks, x, self.spec.use_checkpoint)
        return self.head(self.norm(x[:, -num_targets:]))


class PretrainAutoencoder(nn.Module):
    """EVEREST / VideoMAE pretraining model with VideoMAE's parameter names."""

    def __init__(self, spec: VideoViTSpec):
        super().__init__()
        self.spec = spec
        self.encoder = VideoEncoder(spec, final_norm=spec.encoder_final_norm)
        self.encoder_to_decoder = Linear(spec.embed_dim, spec.decoder_embed_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, spec.decoder_embed_dim))
        self.register_buffer(
            "decoder_pos_embed", sinusoid_table(spec.num_patches, spec.decoder_embed_dim), persistent=False
        )
        self.decoder = PixelDecoder(spec)
        self.encoder_to_decoder.apply(init_vit_weights)
        self.decoder.apply(init_vit_weights)
        trunc_normal_(self.mask_token, std=0.02)

    def embed(self, video: Tensor, keep: Tensor | None = None) -> Tensor:
        """Patch tokens [B, N, D] without positions; score them (detached) to select tokens.
        With `keep` [B, K]: those tokens only."""
        return self.encoder.embed(video, keep)

    def encode(self, tokens: Tensor, visible: Tensor) -> Tensor:
        """tokens [B, N, D], visible [B, V] -> encoded visible tokens at decoder width [B, V, Dd]."""
        return self.encoder_to_decoder(self.encoder.encode(tokens, visible))

    def encode_kept(self, kept: Tensor, visible: Tensor) -> Tensor:
        """`encode` for the visible tokens embedded alone (`embed(video, visible)`, [B, V, D])."""
        return self.encoder_to_decoder(self.encoder.encode_kept(kept, visible))

    def decode(self, latent: Tensor, visible: Tensor, target: Tensor) -> Tensor:
        """Encoded visible tokens [B, V, Dd] + mask tokens at `target` [B, M] -> pixels [B, M, P]."""
        batch, num_targets = target.shape
        pos = self.decoder_pos_embed.to(latent.dtype)
        masked = self.mask_token.expand(batch, num_targets, -1) + pos[target]
        decoder_in = torch.cat([latent + pos[visible], masked], dim=1)
        return self.decoder(decoder_in, num_targets)

    def forward_embedded(self, tokens: Tensor, visible: Tensor, target: Tensor) -> Tensor:
        """tokens [B, N, D], visible [B, V], target [B, M] -> predicted pixels [B, M, P]."""
        return self.decode(self.encode(tokens, visible), visible, target)

    def forward(self, video: Tensor, visible: Tensor, target: Tensor) -> Tensor:
        """video [B, C, F, H, W] (normalised) -> predicted pixels of the target tokens."""
        return self.decode(self.encode_kept(self.embed(video, visible), visible), visible, target)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token", "encoder.pos_embed", "decoder_pos_embed"}
