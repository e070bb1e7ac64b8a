"""The fine-tuning model: the video encoder, pooling (mean + fc_norm, or a class token), dropout
and a linear head for classification logits or regression outputs.

With motion-centric masking (MCM) the caller passes `keep` [B, K]: only those tokens enter
the encoder and the pooling.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from torch import Tensor

from everest.models.linear import Linear
from everest.models.vit import VideoEncoder, VideoViTSpec, editing


class VideoClassifier(nn.Module):
    """Encoder + head. `num_outputs` is num_classes (classification) or output_dim (regression)."""

    def __init__(
        self,
        spec: VideoViTSpec,
        num_outputs: int,
        use_mean_pooling: bool = True,
        head_drop_rate: float = 0.0,
        init_scale: float = 0.001,
    ):
        super().__init__()
        self.spec = spec
        self.use_mean_pooling = use_mean_pooling
        self.encoder = VideoEncoder(spec, final_norm=not use_mean_pooling)
        if use_mean_pooling:
            self.fc_norm = nn.LayerNorm(spec.embed_dim, eps=spec.head_norm_eps)
            self.cls_token = None
        else:
            self.fc_norm = None
            self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.embed_dim))
            trunc_normal_(self.cls_token, std=0.02)
        self.fc_dropout = nn.Dropout(head_drop_rate)
        self.head = Linear(spec.embed_dim, num_outputs)
        with editing(list(self.head.parameters())), torch.no_grad():
            trunc_normal_(self.head.weight, std=0.02)
            self.head.weight.mul_(init_scale)
            nn.init.zeros_(self.head.bias)

    def embed(self, video: Tensor, keep: Tensor | None = None) -> Tensor:
        """Patch tokens [B, N, D] without positions (scored to choose the MCM tokens); with
        `keep` [B, K], those tokens only."""
        return self.encoder.embed(video, keep)

    def forward_kept(self, kept: Tensor, keep: Tensor | None) -> Tensor:
        """Outputs [B, num_outputs] from the tokens embedded at `keep` [B, K] (`embed(video,
        keep)`), or from every token (keep None)."""
        x = self.encoder.encode_kept(kept, keep, prefix=self.cls_token)
        pooled = self.fc_norm(x.mean(dim=1)) if self.use_mean_pooling else x[:, 0]
        return self.head(self.fc_dropout(pooled))

    def forward(self, video: Tensor, keep: Tensor | None = None) -> Tensor:
        return self.forward_kept(self.embed(video, keep), keep)

    def no_weight_decay(self) -> set[str]:
        return {"encoder.pos_embed", "cls_token"}
