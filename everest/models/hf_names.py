"""Hugging Face `VideoMAE*` names and configs <-> ours (the canonical names of
`PretrainAutoencoder` and `VideoClassifier`).

transformers splits the fused qkv projection into query/key/value and names the per-block
layers differently; its config.json carries the architecture. Everything here is a pure
renaming: no tensor is changed except the qkv split and join.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn

from everest.models.pretrain import PretrainAutoencoder
from everest.models.vit import VideoViTSpec

HF_LAYER_NAMES = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


def hf_to_canonical(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A transformers VideoMAE state dict in our names (query/key/value joined into qkv)."""
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    for name, value in sd.items():
        m = re.match(r"(videomae\.encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.+)$", name)
        if m:
            stack = "encoder.blocks" if m.group(1).startswith("videomae") else "decoder.blocks"
            prefix, rest = f"{stack}.{m.group(2)}", m.group(3)
            a = re.match(
                r"attention\.attention\.(query\.weight|key\.weight|value\.weight|"
                r"query\.bias|value\.bias|q_bias|v_bias)$",
                rest,
            )
            if a:
                part = {"q_bias": "query.bias", "v_bias": "value.bias"}.get(a.group(1), a.group(1))
                qkv.setdefault(prefix, {})[part] = value
                continue
            for hf, ours in HF_LAYER_NAMES.items():
                if rest.startswith(hf + "."):
                    out[f"{prefix}.{ours}{rest[len(hf) :]}"] = value
                    break
            else:
                out[f"{prefix}.{rest}"] = value
            continue
        renamed = (
            name.replace("videomae.embeddings.patch_embeddings.projection", "encoder.patch_embed.proj")
            .replace("videomae.layernorm", "encoder.norm")
            .replace("classifier.", "head.")
        )
        out[renamed] = value
    for prefix, parts in qkv.items():
        out[f"{prefix}.attn.qkv.weight"] = torch.cat(
            [parts["query.weight"], parts["key.weight"], parts["value.weight"]]
        )
        if "query.bias" in parts:
            out[f"{prefix}.attn.q_bias"] = parts["query.bias"]
            out[f"{prefix}.attn.v_bias"] = parts["value.bias"]
    return out


def canonical_to_hf(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict in transformers VideoMAE names; ValueError for a tensor it has no name for."""
    out: dict[str, Tensor] = {}
    for name, value in sd.items():
        m = re.match(r"(encoder|decoder)\.blocks\.(\d+)\.(.+)$", name)
        if m:
            stack = "videomae.encoder.layer" if m.group(1) == "encoder" else "decoder.decoder_layers"
            prefix, rest = f"{stack}.{m.group(2)}", m.group(3)
            att = f"{prefix}.attention.attention"
            if rest == "attn.qkv.weight":
                q, k, v = value.chunk(3)
                out[f"{att}.query.weight"], out[f"{att}.key.weight"], out[f"{att}.value.weight"] = q, k, v
            elif rest in ("attn.q_bias", "attn.v_bias"):
                out[f"{att}.{rest[len('attn.') :]}"] = value  # the on-disk names of every transformers release
            elif rest.startswith(("gamma_1", "gamma_2")):
                raise ValueError("Hugging Face VideoMAE has no layer scale; export with layer_scale_init_value=0")
            else:
                for hf, ours in HF_LAYER_NAMES.items():
                    if rest.startswith(ours + "."):
                        out[f"{prefix}.{hf}{rest[len(ours) :]}"] = value
                        break
                else:
                    raise ValueError(f"no Hugging Face name for {name}")
            continue
        renamed = name.replace("encoder.patch_embed.proj", "videomae.embeddings.patch_embeddings.projection").replace(
            "encoder.norm", "videomae.layernorm"
        )
        if renamed.startswith("head."):
            renamed = "classifier." + renamed[len("head.") :]
        out[renamed] = value
    return out


def spec_from_hf_config(cfg: dict[str, Any]) -> VideoViTSpec:
    """The architecture a transformers VideoMAE config.json describes."""
    hidden, dec_hidden = cfg["hidden_size"], cfg.get("decoder_hidden_size", 384)
    return VideoViTSpec(
        embed_dim=hidden,
        depth=cfg["num_hidden_layers"],
        num_heads=cfg["num_attention_heads"],
        mlp_ratio=cfg["intermediate_size"] / hidden,
        decoder_embed_dim=dec_hidden,
        decoder_depth=cfg.get("decoder_num_hidden_layers", 4),
        decoder_num_heads=cfg.get("decoder_num_attention_heads", 6),
        decoder_mlp_ratio=cfg.get("decoder_intermediate_size", 4 * dec_hidden) / dec_hidden,
        input_size=cfg.get("image_size", 224),
        patch_size=cfg.get("patch_size", 16),
        tubelet_size=cfg.get("tubelet_size", 2),
        num_frames=cfg.get("num_frames", 16),
        in_chans=cfg.get("num_channels", 3),
        qkv_bias=cfg.get("qv_bias", cfg.get("qkv_bias", True)),
        norm_eps=cfg.get("layer_norm_eps", 1e-12),
        head_norm_eps=1e-5,  # torch's LayerNorm default, which HF uses for decoder.norm / fc_norm
        encoder_final_norm=not cfg.get("use_mean_pooling", True),
    )


def hf_config_from(model: nn.Module) -> dict[str, Any]:
    """The transformers VideoMAE config.json of one of our models."""
    spec: VideoViTSpec = model.spec
    cfg: dict[str, Any] = {
        "model_type": "videomae",
        "image_size": spec.input_size,
        "patch_size": spec.patch_size,
        "num_channels": spec.in_chans,
        "num_frames": spec.num_frames,
        "tubelet_size": spec.tubelet_size,
        "hidden_size": spec.embed_dim,
        "num_hidden_layers": spec.depth,
        "num_attention_heads": spec.num_heads,
        "intermediate_size": int(spec.embed_dim * spec.mlp_ratio),
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": spec.norm_eps,
        "qkv_bias": spec.qkv_bias,
        "decoder_num_attention_heads": spec.decoder_num_heads,
        "decoder_hidden_size": spec.decoder_embed_dim,
        "decoder_num_hidden_layers": spec.decoder_depth,
        "decoder_intermediate_size": int(spec.decoder_embed_dim * spec.decoder_mlp_ratio),
        "norm_pix_loss": True,
    }
    if isinstance(model, PretrainAutoencoder):
        cfg["architectures"] = ["VideoMAEForPreTraining"]
        cfg["use_mean_pooling"] = not spec.encoder_final_norm
    else:
        cfg["architectures"] = ["VideoMAEForVideoClassification"]
        cfg["use_mean_pooling"] = model.use_mean_pooling
        num = model.head.out_features
        cfg["id2label"] = {str(i): f"LABEL_{i}" for i in range(num)}
        cfg["label2id"] = {f"LABEL_{i}": i for i in range(num)}
    return cfg
