"""The named backbones (standard library only, so that the config can list them without torch)."""

# name -> encoder width, depth, heads, MLP ratio; decoder width and heads (VideoMAE / V2 recipes).
PRESETS: dict[str, dict] = {
    "vit-s": dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0, decoder_embed_dim=192, decoder_num_heads=3),
    "vit-b": dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, decoder_embed_dim=384, decoder_num_heads=6),
    "vit-l": dict(embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0, decoder_embed_dim=512, decoder_num_heads=8),
    "vit-h": dict(embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0, decoder_embed_dim=640, decoder_num_heads=8),
    "vit-g": dict(
        embed_dim=1408, depth=40, num_heads=16, mlp_ratio=48 / 11, decoder_embed_dim=512, decoder_num_heads=8
    ),
}

BACKBONE_NAMES = tuple(PRESETS)
