"""A trained encoder ready for raw clips: normalisation, optional MCM token selection, the
encoder, pooling. Built from any checkpoint format `model.pretrained_path` reads.

The config decides how clips are made (frames, stride, size, normalisation) and whether MCM
runs (`model.mcm`, `model.mcm_ratio`). Without a config file the clip geometry (frames and
size) is the one the checkpoint records, unless an override sets it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from everest import tokens
from everest.config import Config, explicit_keys, load_config, validate
from everest.data.transforms import to_model_input
from everest.models.vit import VideoEncoder
from everest.models.weights import LoadedWeights, load_encoder, read_weights


def inference_config(config: str | Path | None, overrides: Sequence[str], loaded: LoadedWeights) -> Config:
    """The validated config of an inference run (module docstring for the geometry rule)."""
    cfg = load_config(config, list(overrides))
    if config is None and loaded.spec is not None:
        given = explicit_keys(cfg)
        if "training.num_frames" not in given:
            cfg.training.num_frames = loaded.spec.num_frames
            if "training.frames_to_sample" not in given:
                cfg.training.frames_to_sample = loaded.spec.num_frames
        if "model.input_size" not in given:
            cfg.model.input_size = loaded.spec.input_size
        for key in ("patch_size", "tubelet_size"):
            setattr(cfg.model, key, getattr(loaded.spec, key))
        validate(cfg)
    return cfg


class FeatureEncoder(nn.Module):
    """uint8 clips [B, F, S, S, 3] -> token features [B, K, D] (K = N, or the MCM-kept count)
    and the kept token indices [B, K] (None without MCM). `pool` averages the tokens and applies
    the fine-tuned model's fc_norm when the checkpoint has one."""

    def __init__(self, encoder: VideoEncoder, cfg: Config, fc_norm: nn.LayerNorm | None = None):
        super().__init__()
        self.encoder = encoder
        self.fc_norm = fc_norm
        self.cfg = cfg

    @property
    def mcm_ratio(self) -> float | None:
        return self.cfg.model.mcm_ratio if self.cfg.model.mcm else None

    @property
    def embed_dim(self) -> int:
        return self.encoder.spec.embed_dim

    @torch.no_grad()
    def forward(self, clips: Tensor) -> tuple[Tensor, Tensor | None]:
        d = self.cfg.data
        weight = self.encoder.patch_embed.proj.weight
        video = to_model_input(clips, d.normalize_mean, d.normalize_std, weight.device, weight.dtype)
        embedded = self.encoder.embed(video)
        keep = None
        if self.mcm_ratio is not None:
            keep = tokens.select_for_finetuning(embedded, self.encoder.spec.grid, self.mcm_ratio).visible
        return self.encoder.encode(embedded, keep), keep

    def pool(self, features: Tensor) -> Tensor:
        """[..., K, D] token features -> [..., D]."""
        pooled = features.mean(dim=-2)
        return self.fc_norm(pooled) if self.fc_norm is not None else pooled


def load_feature_encoder(
    checkpoint: str | Path, config: str | Path | None = None, overrides: Sequence[str] = ()
) -> FeatureEncoder:
    """A FeatureEncoder (eval mode, on the CPU) from any supported checkpoint, pretraining or
    fine-tuned, with the clip recipe of `config` + `overrides` (dotted `section.key=value`)."""
    loaded = read_weights(checkpoint)
    cfg = inference_config(config, overrides, loaded)
    encoder = load_encoder(
        loaded,
        num_frames=cfg.training.num_frames,
        input_size=cfg.model.input_size,
        attention_backend=cfg.model.attention_backend,
    )
    fc_norm = None
    sd = loaded.state_dict
    if "fc_norm.weight" in sd:
        fc_norm = nn.LayerNorm(encoder.spec.embed_dim, eps=encoder.spec.head_norm_eps)
        fc_norm.load_state_dict({"weight": sd["fc_norm.weight"], "bias": sd["fc_norm.bias"]})
    return FeatureEncoder(encoder, cfg, fc_norm).eval()


def describe(encoder: FeatureEncoder) -> dict:
    """What fixes the features: recorded with every extraction, compared on resume."""
    cfg = encoder.cfg
    t = cfg.training
    return {
        "spec": encoder.encoder.spec.to_dict(),
        "fc_norm": encoder.fc_norm is not None,
        "mcm_ratio": encoder.mcm_ratio,
        "normalize_mean": list(cfg.data.normalize_mean),
        "normalize_std": list(cfg.data.normalize_std),
        "clip": {k: getattr(t, k) for k in ("num_frames", "frames_to_sample", "temporal_stride", "frame_selection")},
        "input_size": cfg.model.input_size,
        "short_side_size": cfg.augmentation.short_side_size,
    }
