"""The DeepSpeed JSON is the contract with DeepSpeed; the YAML owns the training values.

Values the YAML owns (micro batch, accumulation, clipping, optimizer hyper-parameters) are
"auto" in our JSON files and are filled from the YAML. A JSON that states one explicitly wins
over a YAML default, and is refused when the YAML also states it with another value.
Precision follows the JSON on GPU; on CPU runs are fp32 unless training.precision asks.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from everest.config import Config, ConfigError, explicit_keys

# JSON path -> the YAML key that owns it.
OWNED: dict[tuple[str, ...], str] = {
    ("train_micro_batch_size_per_gpu",): "training.batch_size",
    ("gradient_accumulation_steps",): "training.accumulate_grad_batches",
    ("gradient_clipping",): "training.gradient_clip_val",
    ("optimizer", "type"): "optimizer.type",
    ("optimizer", "params", "lr"): "optimizer.lr",
    ("optimizer", "params", "betas"): "optimizer.betas",
    ("optimizer", "params", "eps"): "optimizer.eps",
    ("optimizer", "params", "weight_decay"): "optimizer.weight_decay",
}
_OPTIMIZER_NAMES = {"adamw": "adamw", "radam": "radam", "adam": "adamw"}


def load_ds_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training.deepspeed_config: file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON: {err}") from err


def _get(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def _yaml_get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _yaml_set(cfg: Config, key: str, value: Any) -> None:
    section, name = key.split(".")
    setattr(getattr(cfg, section), name, value)


def _normalise(key: str, value: Any) -> Any:
    if key == "optimizer.type":
        name = str(value).lower()
        if name not in _OPTIMIZER_NAMES:
            raise ConfigError(f"DeepSpeed optimizer type {value!r} is not supported; use AdamW or RAdam")
        return _OPTIMIZER_NAMES[name]
    if key == "optimizer.betas":
        return [float(v) for v in value]
    if key in ("training.batch_size", "training.accumulate_grad_batches"):
        return int(value)
    return float(value)


def resolve_ds_config(
    cfg: Config, ds_json: dict[str, Any], *, world_size: int, on_gpu: bool, source: str = "DeepSpeed config"
) -> dict[str, Any]:
    """Fill "auto" values from `cfg`, take explicit JSON values the YAML left at defaults
    (updating `cfg`), refuse contradictions, and return the dict for deepspeed.initialize
    (without the optimizer section: we pass our own optimizer)."""
    ds = copy.deepcopy(ds_json)
    explicit = explicit_keys(cfg)
    if "scheduler" in ds:
        raise ConfigError(
            f"{source}: remove the 'scheduler' section; the learning-rate schedule is set in the "
            "YAML (optimizer.warmup_steps / warmup_epochs / min_lr)"
        )
    for path, key in OWNED.items():
        json_value = _get(ds, path)
        if json_value is None or json_value == "auto":
            continue
        json_value = _normalise(key, json_value)
        yaml_value = _yaml_get(cfg, key)
        if key in explicit and json_value != yaml_value:
            raise ConfigError(
                f"{source}: '{'.'.join(path)}' is {json_value!r} but the YAML sets {key}={yaml_value!r}; "
                f'make them agree or set the JSON value to "auto"'
            )
        _yaml_set(cfg, key, json_value)
    for path, key in OWNED.items():
        if path[0] != "optimizer":
            _set(ds, path, _yaml_get(cfg, key))
    ds.pop("optimizer", None)

    global_batch = cfg.training.batch_size * cfg.training.accumulate_grad_batches * world_size
    stated = ds.get("train_batch_size", "auto")
    if stated not in ("auto", None) and int(stated) != global_batch:
        raise ConfigError(
            f"{source}: train_batch_size={stated} but batch_size {cfg.training.batch_size} x accumulation "
            f"{cfg.training.accumulate_grad_batches} x {world_size} ranks = {global_batch}"
        )
    ds["train_batch_size"] = global_batch
    _apply_precision(ds, cfg.training.precision, on_gpu)
    ds.setdefault("steps_per_print", 10**9)
    return ds


def _apply_precision(ds: dict[str, Any], precision: str, on_gpu: bool) -> None:
    if precision == "auto":
        if on_gpu:
            return
        precision = "fp32"
    ds.setdefault("bf16", {})["enabled"] = precision == "bf16"
    ds.setdefault("fp16", {})["enabled"] = precision == "fp16"


def zero_stage(ds: dict[str, Any]) -> int:
    return int(_get(ds, ("zero_optimization", "stage")) or 0)


def offloads_optimizer(ds: dict[str, Any]) -> bool:
    return (_get(ds, ("zero_optimization", "offload_optimizer", "device")) or "none") != "none"


def offloads_params(ds: dict[str, Any]) -> bool:
    return (_get(ds, ("zero_optimization", "offload_param", "device")) or "none") != "none"


def compute_dtype(ds: dict[str, Any]):
    """The dtype DeepSpeed keeps the model in for this config."""
    import torch

    if _get(ds, ("bf16", "enabled")):
        return torch.bfloat16
    if _get(ds, ("fp16", "enabled")):
        return torch.float16
    return torch.float32
