"""The command line shared by launch/pretrain.py and launch/finetune.py.

    [deepspeed [launcher args]] launch/<entry>.py [--config X.yaml] [--deepspeed_config J.json]
        [--resume PATH|auto] [section.key=value ...]

Everything that can be checked (YAML, overrides, the DeepSpeed JSON against the YAML) is checked
before the process group, the data or the model are touched.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

from everest.config import Config, ConfigError, load_config


def parse_args(argv: list[str] | None, default_config: str, description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config, help=f"YAML experiment config (default {default_config})")
    parser.add_argument("--deepspeed_config", "--deepspeed-config", default=None,
                        help="DeepSpeed JSON (overrides training.deepspeed_config)")
    parser.add_argument("--resume", default=None, help="checkpoint folder or tag to resume, or 'auto' (newest in checkpoint.dir)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.mask_ratio=0.85")
    return parser.parse_args(argv)


def load_run_config(args: argparse.Namespace) -> Config:
    """The validated config, with the DeepSpeed JSON checked against it (no heavy work)."""
    from everest.engine.ds_config import load_ds_json, resolve_ds_config
    from everest.engine.trainer import resolve_path

    overrides = list(args.overrides)
    if args.deepspeed_config:
        overrides.append(f"training.deepspeed_config={args.deepspeed_config}")
    cfg = load_config(resolve_path(args.config), overrides)
    ds_path = resolve_path(cfg.training.deepspeed_config)
    world = int(os.environ.get("WORLD_SIZE", 1))
    resolve_ds_config(copy.deepcopy(cfg), load_ds_json(ds_path), world_size=world, on_gpu=False, source=str(ds_path))
    return cfg


def exit_on_user_error(fn):
    """Run `fn`; a problem the user can fix (config, data path, checkpoint, network, disk)
    becomes one clear line on stderr and exit status 2 instead of a traceback."""
    from everest.engine.checkpoint import CheckpointSaveError
    from everest.engine.trainer import NonFiniteLossError
    from everest.models.weights import WeightsError

    user_errors = (ConfigError, WeightsError, FileNotFoundError, ConnectionError, CheckpointSaveError,
                   NonFiniteLossError)

    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except user_errors as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            return 2
    return wrapper
