"""Typed experiment configuration: YAML + dotted command-line overrides, validated up front.

The tree mirrors the seed README's sections (data, model, training, optimizer, augmentation,
features, checkpoint, logging). Every problem is reported before any heavy work starts, as one
`ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from everest.models.presets import BACKBONE_NAMES


class ConfigError(ValueError):
    """A configuration key, type or value that cannot work."""


@dataclass
class DataConfig:
    train_optimized_dir: str | None = None
    val_optimized_dir: str | None = None
    test_optimized_dir: str | None = None
    cache_dir: str = "./cache"
    max_cache_size: str = "50GB"
    subset_ratio: float | None = None
    normalize_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    normalize_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    cloud_type: Literal["s3_public", "s3"] | None = None
    # Built-in synthetic data: generated and prepared on first use when no dataset is given.
    synthetic: bool = False
    synthetic_dir: str = "./data/synthetic"
    synthetic_videos: int = 48
    # "motion": shapes over smooth backgrounds, labelled by motion axis x speed (4 classes; speed
    # for regression). "objects": a shaded shape over a smooth colour texture, labelled by
    # shape x motion axis (8 classes). "digits": Moving MNIST from real handwritten digits, labelled
    # by the digit (10 classes). See everest/data/builtin/.
    synthetic_kind: Literal["motion", "objects", "digits"] = "motion"
    # Validation and test videos each; null: as many as synthetic_videos, between 4 and 96.
    synthetic_heldout: int | None = None
    # Digits per "digits" video: 1, or 2 (the second, of another class, a distractor).
    synthetic_digits: int = 1
    # The first N built-in train videos (N/classes of each class) are the representation probe's
    # labelled train clips in pretraining runs (0: no probe on the built-in data).
    synthetic_probe_videos: int = 100
    # A prepared, labelled dataset whose clips train the representation probe of a pretraining run
    # (kNN and linear on frozen encoder features), scored on the labelled val split.
    probe_train_dir: str | None = None


@dataclass
class ModelConfig:
    backbone: Literal[BACKBONE_NAMES] = "vit-b"  # the presets of everest/models/presets.py
    # Optional overrides of the backbone preset (None keeps the preset's value).
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    decoder_depth: int = 4
    decoder_embed_dim: int | None = None
    decoder_num_heads: int | None = None
    mask_type: Literal["motion-centric", "random", "tube"] = "motion-centric"
    mask_ratio: float = 0.9
    motion_centric_masking_ratio: float = 0.7
    normalize_target: bool = True
    input_size: int = 224
    patch_size: int = 16
    tubelet_size: int = 2
    drop_path_rate: float = 0.0
    layer_scale_init_value: float = 0.0
    norm_eps: float = 1e-6
    attention_backend: Literal["auto", "flash", "sdpa", "math"] = "auto"
    # Fine-tuning.
    task_type: Literal["classification", "regression"] = "classification"
    num_classes: int = 400
    output_dim: int = 1
    regression_loss: Literal["mse", "l1"] = "mse"
    use_mean_pooling: bool = True
    head_drop_rate: float = 0.0
    init_scale: float = 0.001
    mcm: bool = False
    mcm_ratio: float = 0.4
    mcm_at_test: bool = True
    pretrained_path: str | None = None
    layer_decay: float = 1.0


@dataclass
class TrainingConfig:
    batch_size: int = 16
    val_batch_size: int | None = None
    num_frames: int = 16
    frames_to_sample: int = 16
    temporal_stride: int = 4
    frame_selection: Literal["uniform", "information"] = "uniform"
    max_epochs: int = 100
    max_steps: int | None = None
    num_workers: int = 4
    pin_memory: bool = True
    gradient_clip_val: float = 0.0
    accumulate_grad_batches: int = 1
    strategy: Literal["deepspeed", "ddp", "auto"] = "deepspeed"
    deepspeed_config: str = "ds_configs/zero1.json"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    seed: int = 0
    # Deterministic kernels on GPU (torch.use_deterministic_algorithms, no cuDNN autotuning):
    # slower; a CPU run in one process repeats bitwise without it (docs/reproducibility.md).
    deterministic: bool = False
    max_consecutive_nonfinite: int = 10
    test_num_segment: int = 5
    test_num_crop: int = 3
    val_every_n_epochs: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass
class OptimizerConfig:
    type: Literal["adamw", "radam"] = "adamw"
    lr: float = 1.5e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    weight_decay_end: float | None = None
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    warmup_steps: int = 0
    warmup_epochs: float = 0.0
    scale_lr_by_batch: bool = False


@dataclass
class AugmentationConfig:
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.0
    rand_augment: str | None = None
    reprob: float = 0.0
    crop_scales: list[float] = field(default_factory=lambda: [1.0, 0.875, 0.75, 0.66])
    horizontal_flip: bool = True
    # Evaluation resizes the short side to this before cropping; null: model.input_size.
    short_side_size: int | None = None
    # Training crop: VideoMAE pretraining's multi-scale crop, or fine-tuning's random resized crop.
    train_crop: Literal["multi_scale", "random_resized"] = "multi_scale"


@dataclass
class FeaturesConfig:
    model_ema: bool = False
    model_ema_decay: float = 0.9999
    model_ema_force_cpu: bool = False
    use_checkpoint: bool = False
    kernel_backend: Literal["auto", "triton", "torch"] = "auto"
    compile: bool = False  # torch.compile each encoder/decoder block (fuses norms, GELU, residual adds)
    # CPU matrix products: "auto" times oneDNN against F.linear on the model's shapes at start-up
    # (cached per CPU) and takes the faster; the run's logged config records the choice.
    linear_backend: Literal["auto", "onednn", "torch"] = "auto"


@dataclass
class CheckpointConfig:
    enable: bool = True
    dir: str = "./output/checkpoints"
    prefix: str = "everest_"
    save_top_k: int = 3
    save_last: bool = False
    strict_top_k: bool = False
    monitor: str = "train_loss_epoch"
    monitor_mode: Literal["auto", "min", "max"] = "auto"
    save_ckpt_freq: int | None = None
    save_on_interrupt: bool = True


@dataclass
class LoggingConfig:
    log_dir: str = "./output/logs"
    log_freq: int = 10
    image_freq: int = 0
    run_name: str | None = None
    # Pretraining: warn once when pretext_progress is still below `pretext_warn_below` after this
    # share of the epochs (0 turns the warning off).
    pretext_warn_after: float = 0.3
    pretext_warn_below: float = 0.02
    # Pretraining: the representation probe (kNN and linear on frozen, mean-pooled encoder
    # features) at step 0 and at every n-th epoch's validation (0: never); kNN's k and temperature.
    probe_every_n_epochs: int = 1
    probe_knn_k: int = 20
    probe_knn_temperature: float = 0.07


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def has_split(self, split: str) -> bool:
        """True when the config names a dataset for `split` ('train', 'val', 'test', or 'probe':
        the representation probe's labelled train clips); the built-in data has all of them
        (the probe's unless data.synthetic_probe_videos is 0)."""
        d = self.data
        if split == "probe":
            return bool(d.probe_train_dir) or (d.synthetic and d.synthetic_probe_videos > 0)
        return bool(getattr(d, f"{split}_optimized_dir")) or d.synthetic


# ----------------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in inner) + " or null"
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting the harmless cases (int -> float,
    YAML 1.1 strings like "1e-3" -> float)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{key}: got {value!r}, expected {_type_name(tp)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            near = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(
                f"{key}: {value!r} is not allowed; choose one of " + ", ".join(repr(a) for a in allowed) + hint
            )
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: got {value!r}, expected {_type_name(tp)}")
        (item_tp,) = get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: got {value!r}, expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: got {value!r}, expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: got {value!r}, expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: got {value!r}, expected a string")
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in hints:
            near = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            hint = f"; did you mean '{prefix}{near[0]}'?" if near else ""
            raise ConfigError(
                f"unknown key '{dotted}'{hint} (known keys under "
                f"'{prefix.rstrip('.') or 'the top level'}': {', '.join(names)})"
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"{dotted}: expected a section (mapping), got {value!r}")
            kwargs[key] = _build(tp, value, f"{dotted}.")
        else:
            kwargs[key] = _coerce(value, tp, dotted)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[str, Any]:
    """Split `section.key=value`; the value is read as YAML (so 0.85, true, [1,2] work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or "." not in key:
        raise ConfigError(f"override {text!r} must name a section and a key, e.g. model.mask_ratio=0.85")
    return key, yaml.safe_load(raw) if raw.strip() else None


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(values: dict[str, Any] | None, overrides: list[str] = ()) -> Config:
    """Build and validate a Config from a nested mapping plus dotted overrides."""
    tree = dict(values or {})
    tree = {k: (dict(v) if isinstance(v, dict) else v) for k, v in tree.items()}
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(tree, key, value)
    cfg = _build(Config, tree, "")
    validate(cfg)
    cfg._explicit = frozenset(_leaf_keys(tree))
    return cfg


def _leaf_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        if isinstance(value, dict):
            keys.extend(_leaf_keys(value, f"{prefix}{key}."))
        else:
            keys.append(f"{prefix}{key}")
    return keys


def explicit_keys(cfg: Config) -> frozenset[str]:
    """Dotted keys the user set in the YAML file or on the command line (not defaults)."""
    return getattr(cfg, "_explicit", frozenset())


REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(path: str | Path) -> Path:
    """A path as given, or relative to the repository (so ds_configs/... works from anywhere)."""
    path = Path(path)
    return path if path.exists() or path.is_absolute() else REPO_ROOT / path


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a YAML file (or start from the defaults when `path` is None), apply overrides,
    validate, and return the typed Config."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (check --config; the shipped configs are under configs/)")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        return config_from_dict(values, overrides)
    except ConfigError as err:
        raise ConfigError(f"{_error_source(str(err), path, overrides)}{err}") from None


def _error_source(message: str, path: Path | None, overrides: list[str]) -> str:
    """Where the value a message names came from: the command line when it names an override's
    key (or the override itself is malformed), else the YAML file."""
    given: dict[str, str] = {}
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        given[key] = item
        if item in message or "=" not in item:
            return f"command line ({item}): "
    named = re.findall(r"\b[a-z_]+\.[a-z_0-9]+\b", message)
    from_cli = [given[key] for key in named if key in given]
    if from_cli:
        return f"command line ({', '.join(dict.fromkeys(from_cli))}): "
    return f"{path}: " if path is not None else ""


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# --------------------------------------------------------------------------------- validation


def token_counts(cfg: Config) -> dict[str, int]:
    """N, K (kept), V (visible) and the MCM keep count, truncating as the published code does."""
    m, t = cfg.model, cfg.training
    n = (t.num_frames // m.tubelet_size) * (m.input_size // m.patch_size) ** 2
    if m.mask_type == "motion-centric":
        kept = int((1 - m.motion_centric_masking_ratio) * n)
    else:
        kept = n
    visible = int((1 - m.mask_ratio) * n)
    return {
        "tokens": n,
        "kept": kept,
        "visible": visible,
        "targets": kept - visible,
        "mcm_kept": int((1 - m.mcm_ratio) * n),
    }


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: Config) -> None:
    """Raise ConfigError for any value that cannot work, naming the key."""
    m, t, o, a, d = cfg.model, cfg.training, cfg.optimizer, cfg.augmentation, cfg.data
    _check(0 < m.mask_ratio < 1, f"model.mask_ratio={m.mask_ratio} must lie in (0, 1)")
    _check(
        0 <= m.motion_centric_masking_ratio < 1,
        f"model.motion_centric_masking_ratio={m.motion_centric_masking_ratio} must lie in [0, 1)",
    )
    _check(0 <= m.mcm_ratio < 1, f"model.mcm_ratio={m.mcm_ratio} must lie in [0, 1)")
    for key in ("input_size", "patch_size", "tubelet_size", "decoder_depth"):
        _check(getattr(m, key) >= 1, f"model.{key}={getattr(m, key)} must be >= 1")
    _check(
        m.input_size % m.patch_size == 0,
        f"model.input_size={m.input_size} is not divisible by model.patch_size={m.patch_size}",
    )
    _check(
        t.num_frames % m.tubelet_size == 0,
        f"training.num_frames={t.num_frames} is not divisible by model.tubelet_size={m.tubelet_size}",
    )
    _check(t.num_frames >= m.tubelet_size, f"training.num_frames={t.num_frames} is below one tubelet")
    _check(
        t.frames_to_sample >= t.num_frames,
        f"training.frames_to_sample={t.frames_to_sample} must be >= training.num_frames={t.num_frames}",
    )
    counts = token_counts(cfg)
    _check(
        counts["visible"] >= 1,
        f"model.mask_ratio={m.mask_ratio} leaves no visible token out of {counts['tokens']}",
    )
    _check(
        counts["visible"] < counts["kept"],
        f"model.mask_ratio={m.mask_ratio} with model.motion_centric_masking_ratio="
        f"{m.motion_centric_masking_ratio} gives {counts['visible']} visible tokens >= "
        f"{counts['kept']} kept tokens: no reconstruction targets are left; raise mask_ratio "
        f"above 1 - kept/N = {1 - counts['kept'] / counts['tokens']:.3f}",
    )
    _check(counts["mcm_kept"] >= 1, f"model.mcm_ratio={m.mcm_ratio} keeps no token")
    for key in ("drop_path_rate", "head_drop_rate"):
        value = getattr(m, key)
        _check(0 <= value < 1, f"model.{key}={value} must lie in [0, 1)")
    _check(m.num_classes >= 1, f"model.num_classes={m.num_classes} must be >= 1")
    _check(m.output_dim >= 1, f"model.output_dim={m.output_dim} must be >= 1")
    _check(0 < m.layer_decay <= 1, f"model.layer_decay={m.layer_decay} must lie in (0, 1]")
    for key in ("embed_dim", "depth", "num_heads", "decoder_embed_dim", "decoder_num_heads"):
        value = getattr(m, key)
        _check(value is None or value >= 1, f"model.{key}={value} must be >= 1 or null")
    for key in (
        "batch_size",
        "num_frames",
        "frames_to_sample",
        "temporal_stride",
        "accumulate_grad_batches",
        "max_epochs",
        "test_num_segment",
        "test_num_crop",
        "max_consecutive_nonfinite",
        "val_every_n_epochs",
    ):
        _check(getattr(t, key) >= 1, f"training.{key}={getattr(t, key)} must be >= 1")
    _check(t.num_workers >= 0, f"training.num_workers={t.num_workers} must be >= 0")
    _check(t.max_steps is None or t.max_steps >= 1, f"training.max_steps={t.max_steps} must be >= 1")
    _check(t.gradient_clip_val >= 0, f"training.gradient_clip_val={t.gradient_clip_val} must be >= 0")
    _check(o.lr > 0, f"optimizer.lr={o.lr} must be > 0")
    _check(o.min_lr >= 0, f"optimizer.min_lr={o.min_lr} must be >= 0")
    _check(o.weight_decay >= 0, f"optimizer.weight_decay={o.weight_decay} must be >= 0")
    _check(
        len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
        f"optimizer.betas={o.betas} must be two numbers in [0, 1)",
    )
    _check(o.warmup_steps >= 0 and o.warmup_epochs >= 0, "optimizer.warmup_* must be >= 0")
    _check(
        len(d.normalize_mean) == 3 and len(d.normalize_std) == 3,
        "data.normalize_mean and data.normalize_std must hold three values (R, G, B)",
    )
    _check(all(s > 0 for s in d.normalize_std), f"data.normalize_std={d.normalize_std} must be > 0")
    _check(
        d.subset_ratio is None or 0 < d.subset_ratio <= 1,
        f"data.subset_ratio={d.subset_ratio} must lie in (0, 1] or be null",
    )
    for key in ("mixup", "cutmix", "label_smoothing", "reprob"):
        value = getattr(a, key)
        _check(value >= 0, f"augmentation.{key}={value} must be >= 0")
    _check(0 <= a.label_smoothing < 1, f"augmentation.label_smoothing={a.label_smoothing} must be < 1")
    _check(
        a.short_side_size is None or a.short_side_size >= m.input_size,
        f"augmentation.short_side_size={a.short_side_size} is below model.input_size={m.input_size}: "
        "evaluation crops would not fit",
    )
    _check(all(0 < s <= 1 for s in a.crop_scales), f"augmentation.crop_scales={a.crop_scales} must lie in (0, 1]")
    if m.task_type == "regression":
        _check(
            a.mixup == 0 and a.cutmix == 0,
            f"augmentation.mixup={a.mixup} / augmentation.cutmix={a.cutmix}: mixup and cutmix "
            "mix class labels and are not supported for model.task_type='regression'; set both to 0",
        )
    _check(
        (a.mixup == 0 and a.cutmix == 0) or t.batch_size % 2 == 0,
        f"training.batch_size={t.batch_size} must be even for mixup/cutmix (timm mixes a batch with its reverse)",
    )
    _check(0 < cfg.features.model_ema_decay < 1, "features.model_ema_decay must lie in (0, 1)")
    _check(cfg.checkpoint.save_top_k >= 0, "checkpoint.save_top_k must be >= 0")
    _check(
        cfg.checkpoint.save_ckpt_freq is None or cfg.checkpoint.save_ckpt_freq >= 1,
        "checkpoint.save_ckpt_freq must be >= 1 or null",
    )
    _check(cfg.logging.log_freq >= 1, f"logging.log_freq={cfg.logging.log_freq} must be >= 1")
    lg = cfg.logging
    _check(lg.probe_every_n_epochs >= 0, f"logging.probe_every_n_epochs={lg.probe_every_n_epochs} must be >= 0")
    _check(lg.probe_knn_k >= 1, f"logging.probe_knn_k={lg.probe_knn_k} must be >= 1")
    _check(lg.probe_knn_temperature > 0, f"logging.probe_knn_temperature={lg.probe_knn_temperature} must be > 0")
    _check(d.synthetic_digits in (1, 2), f"data.synthetic_digits={d.synthetic_digits} must be 1 or 2")
    _check(d.synthetic_probe_videos >= 0, f"data.synthetic_probe_videos={d.synthetic_probe_videos} must be >= 0")
    _check(
        0 <= cfg.logging.pretext_warn_after <= 1,
        f"logging.pretext_warn_after={cfg.logging.pretext_warn_after} must lie in [0, 1] (a share of the epochs)",
    )


# ------------------------------------------------------------------------------- reference


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    return (
        "null" if value is None else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    )


def config_reference_markdown() -> str:
    """The configuration reference (every key, its type or allowed values, its default), made
    from the dataclasses above so that the copy in docs/configuration.md cannot drift (a test compares them)."""
    lines = []
    for name, cls in typing.get_type_hints(Config).items():
        lines += [f"#### `{name}`", "", "| key | type / allowed values | default |", "| --- | --- | --- |"]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            lines.append(f"| `{name}.{f.name}` | {_type_name(hints[f.name])} | `{_default_text(f)}` |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


REFERENCE_START, REFERENCE_END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def with_reference(document_text: str) -> str:
    """`document_text` with the block between the reference markers regenerated."""
    head, rest = document_text.split(REFERENCE_START, 1)
    _, tail = rest.split(REFERENCE_END, 1)
    return f"{head}{REFERENCE_START}\n{config_reference_markdown()}{REFERENCE_END}{tail}"


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--write-docs"]:  # python -m everest.config --write-docs docs/configuration.md
        document = Path(sys.argv[2])
        document.write_text(with_reference(document.read_text()))
    else:
        print(config_reference_markdown(), end="")
