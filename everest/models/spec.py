"""The model architecture a run's config asks for."""

from __future__ import annotations

from everest.config import Config
from everest.models.vit import VideoViTSpec, spec_for


def spec_from_config(cfg: Config) -> VideoViTSpec:
    """The architecture a config asks for (preset + overrides + clip geometry)."""
    m = cfg.model
    return spec_for(
        m.backbone,
        embed_dim=m.embed_dim,
        depth=m.depth,
        num_heads=m.num_heads,
        mlp_ratio=m.mlp_ratio,
        decoder_embed_dim=m.decoder_embed_dim,
        decoder_num_heads=m.decoder_num_heads,
        decoder_depth=m.decoder_depth,
        input_size=m.input_size,
        patch_size=m.patch_size,
        tubelet_size=m.tubelet_size,
        num_frames=cfg.training.num_frames,
        drop_path_rate=m.drop_path_rate,
        layer_scale_init_value=m.layer_scale_init_value,
        norm_eps=m.norm_eps,
        head_norm_eps=m.norm_eps,
        attention_backend=m.attention_backend,
        use_checkpoint=cfg.features.use_checkpoint,
        compile=cfg.features.compile,
    )
