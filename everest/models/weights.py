"""Weight import and export.

Reads, into our models:
  * our own checkpoints: DeepSpeed checkpoint folders (any ZeRO stage) and exported .pt files;
  * official VideoMAE / EVEREST .pth files ('model' / 'module' keys, pretraining names with
    'encoder.'/'decoder.' prefixes, or fine-tuning names without them);
  * Hugging Face transformers VideoMAE folders (config.json + safetensors or .bin).
Writes ours out as an official-style .pth or a Hugging Face folder.

Everything goes through one canonical naming: the names of `PretrainAutoencoder` and
`VideoClassifier`. Position tables are fixed sinusoids, rebuilt for whatever frames and size the
model is built with, so clips of another length or resolution load without interpolation.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from everest.files import META_FILE
from everest.models.finetune import VideoClassifier
from everest.models.hf_names import canonical_to_hf, hf_config_from, hf_to_canonical, spec_from_hf_config
from everest.models.presets import PRESETS
from everest.models.pretrain import PretrainAutoencoder
from everest.models.vit import VideoEncoder, VideoViTSpec, editing

_IGNORED = re.compile(r"(^|\.)(pos_embed|position_embeddings|decoder_pos_embed)$")
_WRAPPERS = ("model", "module", "state_dict", "model_state")


class WeightsError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


@dataclass
class LoadedWeights:
    """A state dict in canonical names, the architecture when the file records it, and where
    it came from ('everest', 'everest-deepspeed', 'videomae', 'huggingface')."""

    state_dict: dict[str, Tensor]
    spec: VideoViTSpec | None
    source: str
    meta: dict[str, Any] = field(default_factory=dict)
    path: str = ""  # the checkpoint as given to read_weights (named in errors)


# --------------------------------------------------------------------------------- reading


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            if key in obj and isinstance(obj[key], dict):
                return _unwrap(obj[key], path)
        tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
        if tensors:
            return tensors
    raise WeightsError(f"{path}: no state dict found (looked for keys {', '.join(_WRAPPERS)})")


def _canonical_videomae(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip wrapper prefixes and give fine-tuning names their 'encoder.' prefix."""
    out = {}
    for name, value in sd.items():
        for wrapper in ("module.", "_orig_mod.", "model."):
            name = name.removeprefix(wrapper)
        if name.startswith(("patch_embed.", "blocks.", "norm.")):
            name = "encoder." + name
        out[name] = value
    return out


def _infer_spec(sd: dict[str, Tensor], **defaults: Any) -> VideoViTSpec:
    """Recover the architecture from tensor shapes; heads come from the matching preset."""
    try:
        proj = sd["encoder.patch_embed.proj.weight"]
    except KeyError:
        raise WeightsError("no patch embedding (encoder.patch_embed.proj.weight) in the checkpoint") from None
    dim, in_chans, tubelet, patch, _ = proj.shape

    def depth_of(stack: str) -> int:
        ids = {int(m.group(1)) for k in sd if (m := re.match(rf"{stack}\.blocks\.(\d+)\.", k))}
        return max(ids) + 1 if ids else 0

    depth = depth_of("encoder")
    preset = next((p for p in PRESETS.values() if p["embed_dim"] == dim and p["depth"] == depth), None)
    preset = preset or next((p for p in PRESETS.values() if p["embed_dim"] == dim), {})
    fc1 = sd.get("encoder.blocks.0.mlp.fc1.weight")
    spec = dict(
        embed_dim=dim,
        depth=depth,
        num_heads=preset.get("num_heads", max(1, dim // 64)),
        mlp_ratio=fc1.shape[0] / dim if fc1 is not None else 4.0,
        patch_size=patch,
        tubelet_size=tubelet,
        in_chans=in_chans,
        qkv_bias="encoder.blocks.0.attn.q_bias" in sd,
        layer_scale_init_value=0.1 if "encoder.blocks.0.gamma_1" in sd else 0.0,
    )
    if "encoder_to_decoder.weight" in sd:
        dec_dim = sd["encoder_to_decoder.weight"].shape[0]
        dec_fc1 = sd.get("decoder.blocks.0.mlp.fc1.weight")
        spec.update(
            decoder_embed_dim=dec_dim,
            decoder_depth=depth_of("decoder"),
            decoder_num_heads=preset.get("decoder_num_heads", max(1, dec_dim // 64)),
            decoder_mlp_ratio=dec_fc1.shape[0] / dec_dim if dec_fc1 is not None else 4.0,
            encoder_final_norm="encoder.norm.weight" in sd,
        )
    spec.update(defaults)
    return VideoViTSpec(**spec)


_TORCH_LOAD = torch.load


def load_tensors(path: str | Path, **options: Any) -> Any:
    """`torch.load` of a checkpoint file (to the CPU unless `options` say otherwise) with the
    weights-only unpickler: tensors, numbers, strings and containers come back, and a pickle
    asking for anything else (which could run code) is refused with a WeightsError naming the file."""
    import pickle

    options = {"map_location": "cpu", **options, "weights_only": True}
    try:
        return _TORCH_LOAD(path, **options)
    except pickle.UnpicklingError as err:
        forbidden = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if forbidden is None:
            raise WeightsError(f"{path}: cannot be read as a torch checkpoint ({_unpickler_reason(err)})") from None
        raise WeightsError(
            f"{path}: refused: the file pickles {forbidden.group(1)}, not only tensors and plain containers, "
            "and unpickling it could run code; load only checkpoints you trust, converted to safetensors "
            "or weights-only files"
        ) from None


def _unpickler_reason(err: BaseException) -> str:
    """The line of torch's long unpickling message that says what went wrong."""
    lines = [line for line in str(err).splitlines() if "Unsupported" in line or "error" in line.lower()]
    return (lines[-1] if lines else type(err).__name__).strip()[:160]


@contextmanager
def _weights_only_torch_load() -> Iterator[None]:
    """Every torch.load inside goes through `load_tensors` (DeepSpeed's ZeRO consolidation
    reads its partitions with weights_only=False)."""

    def weights_only(file: Any, map_location: Any = "cpu", **kwargs: Any) -> Any:
        kwargs.pop("weights_only", None)
        return load_tensors(file, map_location=map_location, **kwargs)

    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    # ZeRO-3 optimizer partitions also hold DeepSpeed's stage enum and loss-scaler record: plain
    # data classes without custom unpickling, allowed here and nowhere else.
    torch.load = weights_only
    try:
        with torch.serialization.safe_globals([ZeroStageEnum, LossScaler]):
            yield
    finally:
        torch.load = _TORCH_LOAD


def _tag_dir(path: Path) -> Path:
    """A DeepSpeed run folder resolves to the tag named in its 'latest' file."""
    latest = path / "latest"
    return path / latest.read_text().strip() if latest.is_file() else path


def _read_deepspeed_dir(path: Path) -> dict[str, Tensor]:
    """Full fp32 weights of a DeepSpeed checkpoint folder (the run dir with 'latest', or a tag)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    tag_dir = _tag_dir(path)
    if any(tag_dir.glob("*optim_states.pt")) and any(tag_dir.glob("zero_pp_rank_*")):
        with _weights_only_torch_load():
            sd = get_fp32_state_dict_from_zero_checkpoint(str(tag_dir.parent), tag=tag_dir.name)
        return {k: v.float() for k, v in sd.items()}
    states = sorted(tag_dir.glob("mp_rank_*_model_states.pt"))
    if not states:
        raise WeightsError(f"{path}: not a DeepSpeed checkpoint (no mp_rank_*_model_states.pt)")
    obj = load_tensors(states[0])
    return {k: v.float() for k, v in obj["module"].items()}


def _meta_for_dir(path: Path) -> dict[str, Any]:
    meta_file = _tag_dir(path) / META_FILE
    return json.loads(meta_file.read_text()) if meta_file.is_file() else {}


def read_weights(path: str | Path) -> LoadedWeights:
    """Read any supported checkpoint into canonical names (no model is built)."""
    return replace(_read_any(Path(path)), path=str(path))


def _read_any(path: Path) -> LoadedWeights:
    if not path.exists():
        raise WeightsError(f"checkpoint not found: {path}")
    if path.is_dir():
        if (path / "config.json").is_file():
            return _read_hf_dir(path)
        meta = _meta_for_dir(path)
        sd = _read_deepspeed_dir(path)
        spec = VideoViTSpec(**meta["spec"]) if "spec" in meta else None
        return LoadedWeights(_canonical_videomae(sd), spec, "everest-deepspeed", meta)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return LoadedWeights(_canonical_videomae(load_file(str(path))), None, "videomae")
    try:
        obj = load_tensors(path)
    except WeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise WeightsError(f"{path}: cannot be read as a torch checkpoint ({err})") from err
    sd = _canonical_videomae(_unwrap(obj, path))
    meta = obj.get("everest", {}) if isinstance(obj, dict) else {}
    spec = VideoViTSpec(**meta["spec"]) if "spec" in meta else None
    return LoadedWeights(sd, spec, "everest" if meta else "videomae", meta)


def _read_hf_dir(path: Path) -> LoadedWeights:
    cfg = json.loads((path / "config.json").read_text())
    if cfg.get("model_type") != "videomae":
        raise WeightsError(f"{path}: model_type {cfg.get('model_type')!r} is not 'videomae'")
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        sd = load_file(str(path / "model.safetensors"))
    elif (path / "pytorch_model.bin").is_file():
        sd = load_tensors(path / "pytorch_model.bin")
    else:
        raise WeightsError(f"{path}: neither model.safetensors nor pytorch_model.bin found")
    return LoadedWeights(hf_to_canonical(sd), spec_from_hf_config(cfg), "huggingface", {"hf_config": cfg})


# --------------------------------------------------------------------------------- loading


@dataclass
class LoadReport:
    missing: list[str]
    unexpected: list[str]

    def __str__(self) -> str:
        missing, unexpected = self.missing, self.unexpected
        return f"missing {len(missing)} keys {missing[:8]}, unexpected {len(unexpected)} keys {unexpected[:8]}"


def load_into(
    model: nn.Module, state_dict: dict[str, Tensor], strict: bool = False, source: str = "checkpoint"
) -> LoadReport:
    """Copy matching weights into `model`; a shape mismatch is an error naming the tensor."""
    # ZeRO-3 partitioned parameters keep their true shape in ds_shape.
    own = {name: torch.Size(getattr(value, "ds_shape", value.shape)) for name, value in model.state_dict().items()}
    own.update({name: torch.Size(getattr(p, "ds_shape", p.shape)) for name, p in model.named_parameters()})
    usable = {}
    unexpected = []
    for name, value in state_dict.items():
        if _IGNORED.search(name):
            continue
        if name not in own:
            unexpected.append(name)
            continue
        if own[name] != value.shape:
            raise WeightsError(
                f"{source}: {name} has shape {tuple(value.shape)} but the model expects "
                f"{tuple(own[name])}; the checkpoint is probably from another backbone "
                "or patch/tubelet size (check model.backbone and the *_size keys)"
            )
        usable[name] = value
    missing = [k for k in own if k not in usable and not _IGNORED.search(k)]
    if strict and (missing or unexpected):
        raise WeightsError(f"{source}: {LoadReport(missing, unexpected)}")
    with editing(list(model.parameters())):
        model.load_state_dict(usable, strict=False)
    return LoadReport(missing, unexpected)


def _spec_for_loading(loaded: LoadedWeights, overrides: dict[str, Any]) -> VideoViTSpec:
    spec_fields = {f.name for f in fields(VideoViTSpec)}
    unknown = set(overrides) - spec_fields
    if unknown:
        raise TypeError(f"unknown override(s) {sorted(unknown)}; allowed: {sorted(spec_fields)}")
    if loaded.spec is not None:
        return loaded.spec.with_(**overrides)
    return _infer_spec(loaded.state_dict, **overrides)


def _loaded(source: str | Path | LoadedWeights) -> tuple[LoadedWeights, str]:
    """The weights and the name errors give them."""
    loaded = source if isinstance(source, LoadedWeights) else read_weights(source)
    return loaded, loaded.path or loaded.source


def load_encoder(path_or_dir: str | Path | LoadedWeights, **overrides: Any) -> VideoEncoder:
    """An encoder (eval mode) from any supported checkpoint (or weights `read_weights` already
    read). `forward(video)` with video [B, 3, F, H, W] normalised returns token features
    [B, N, D] after the final norm. Overrides set VideoViTSpec fields, e.g. num_frames=8."""
    loaded, name = _loaded(path_or_dir)
    spec = _spec_for_loading(loaded, overrides)
    has_norm = "encoder.norm.weight" in loaded.state_dict
    encoder = VideoEncoder(spec, final_norm=has_norm)
    enc_sd = {k[len("encoder.") :]: v for k, v in loaded.state_dict.items() if k.startswith("encoder.")}
    report = load_into(encoder, enc_sd, source=name)
    if report.missing:
        raise WeightsError(f"{name}: the encoder is incomplete: {report}")
    return encoder.eval()


def load_pretrain_model(path_or_dir: str | Path, **overrides: Any) -> PretrainAutoencoder:
    """The pretraining autoencoder (eval mode) from any supported pretraining checkpoint."""
    loaded = read_weights(path_or_dir)
    if "encoder_to_decoder.weight" not in loaded.state_dict:
        raise WeightsError(f"{path_or_dir}: holds no decoder (a fine-tuned or encoder-only checkpoint)")
    model = PretrainAutoencoder(_spec_for_loading(loaded, overrides))
    report = load_into(model, loaded.state_dict, source=str(path_or_dir))
    if report.missing:
        raise WeightsError(f"{path_or_dir}: the autoencoder is incomplete: {report}")
    return model.eval()


def load_classifier(path_or_dir: str | Path | LoadedWeights, **overrides: Any) -> VideoClassifier:
    """A fine-tuned classifier/regressor (eval mode) from a checkpoint that holds its head
    (or from weights `read_weights` already read)."""
    loaded, name = _loaded(path_or_dir)
    sd = loaded.state_dict
    if "head.weight" not in sd:
        raise WeightsError(f"{name}: holds no classification/regression head")
    mean_pooling = loaded.meta.get("use_mean_pooling", "fc_norm.weight" in sd)
    model = VideoClassifier(_spec_for_loading(loaded, overrides), sd["head.weight"].shape[0], mean_pooling)
    report = load_into(model, sd, source=name)
    if report.missing:
        raise WeightsError(f"{name}: the classifier is incomplete: {report}")
    return model.eval()


# --------------------------------------------------------------------------------- writing


def _model_kind(model: nn.Module) -> str:
    if isinstance(model, PretrainAutoencoder):
        return "pretrain"
    if isinstance(model, VideoClassifier):
        return "finetune"
    raise TypeError(f"cannot export a {type(model).__name__}")


def everest_meta(model: nn.Module) -> dict[str, Any]:
    """What our checkpoints record beside the weights so that they rebuild exactly."""
    meta = {"spec": model.spec.to_dict(), "kind": _model_kind(model)}
    if isinstance(model, VideoClassifier):
        meta["use_mean_pooling"] = model.use_mean_pooling
    return meta


def save_everest(model: nn.Module, path: str | Path, state_dict: dict[str, Tensor] | None = None) -> None:
    """One fp32 file {'model': weights, 'everest': meta} that every loader here reads."""
    sd = state_dict if state_dict is not None else model.state_dict()
    torch.save({"model": {k: v.detach().float().cpu() for k, v in sd.items()}, "everest": everest_meta(model)}, path)


def export_consolidated(checkpoint: str | Path, path: str | Path) -> tuple[str, int]:
    """One fp32 file from a DeepSpeed checkpoint folder (what launch/export.py writes).
    Returns (model kind, parameter count)."""
    loaded = read_weights(checkpoint)
    if loaded.spec is None:
        raise WeightsError(f"{checkpoint}: no {META_FILE} beside the weights; not an everest training checkpoint")
    sd = {k: v.float().contiguous() for k, v in loaded.state_dict.items()}
    torch.save({"model": sd, "everest": loaded.meta}, path)
    return loaded.meta.get("kind", "unknown"), sum(v.numel() for v in sd.values())


def export_videomae(model: nn.Module, path: str | Path) -> None:
    """Official VideoMAE/EVEREST naming: pretraining keeps 'encoder.'/'decoder.', fine-tuning
    models drop the 'encoder.' prefix, all under a 'model' key."""
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    if isinstance(model, VideoClassifier):
        sd = {k.removeprefix("encoder."): v for k, v in sd.items()}
    torch.save({"model": sd}, path)


def export_huggingface(model: nn.Module, out_dir: str | Path) -> Path:
    """A folder that transformers' VideoMAEForPreTraining / VideoMAEForVideoClassification
    `from_pretrained` reads (config.json + model.safetensors)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model, VideoClassifier) and not model.use_mean_pooling:
        raise WeightsError("Hugging Face VideoMAE has no class token; export a mean-pooling model")
    try:
        sd = canonical_to_hf({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()})
    except ValueError as err:
        raise WeightsError(str(err)) from err
    weights = out / "model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(weights), metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    weights.chmod(0o666 & ~umask)  # safetensors writes 0600; give it the mode every other file gets
    (out / "config.json").write_text(json.dumps(hf_config_from(model), indent=2))
    return out
