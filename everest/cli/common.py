"""The command line shared by the entry points: the training options of launch/pretrain.py and
launch/finetune.py, the exit status of a run, and one line instead of a traceback for an error
the user can fix.

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
from pathlib import Path

from everest.config import Config, ConfigError, load_config, resolve_path


def parse_args(
    argv: list[str] | None, default_config: str, description: str, example: str, outputs: str
) -> argparse.Namespace:
    """The shared options; `example` is an override worth showing, `outputs` says where results go."""
    epilog = f"""\
outputs: {outputs}
re-running: a run that finds checkpoint.dir already holding a run stops at once (exit status 2)
  and leaves it untouched: continue it with --resume auto, or pass checkpoint.dir=NEW_FOLDER.
Ctrl-C / SIGTERM: training stops at the next step and saves a checkpoint; exit status 130
  (SIGINT) or 143 (SIGTERM); --resume auto continues it in the same TensorBoard run.
config keys: docs/configuration.md (or python -m everest.config).
errors the user can fix (config, data, checkpoint) print one line and exit with status 2."""
    parser = argparse.ArgumentParser(
        description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=default_config, help=f"YAML experiment config (default {default_config})")
    parser.add_argument(
        "--deepspeed_config",
        "--deepspeed-config",
        default=None,
        help="DeepSpeed JSON (overrides training.deepspeed_config)",
    )
    parser.add_argument(
        "--resume",
        default=None,
        help="'auto' (continue the run in checkpoint.dir, or start one if it is empty), or a checkpoint folder or tag",
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help=f"config overrides, e.g. {example}")
    return parser.parse_args(argv)


def load_run_config(args: argparse.Namespace) -> Config:
    """The validated config, with the DeepSpeed JSON checked against it and a fresh run's
    checkpoint.dir checked to hold no other run (no heavy import: torch is not loaded yet)."""
    from everest.engine.checkpoint import ensure_fresh_dir
    from everest.engine.ds_config import load_ds_json, resolve_ds_config

    overrides = list(args.overrides)
    if args.deepspeed_config:
        overrides.append(f"training.deepspeed_config={args.deepspeed_config}")
    cfg = load_config(resolve_path(args.config), overrides)
    ds_path = resolve_path(cfg.training.deepspeed_config)
    world = int(os.environ.get("WORLD_SIZE", 1))
    resolve_ds_config(copy.deepcopy(cfg), load_ds_json(ds_path), world_size=world, on_gpu=False, source=str(ds_path))
    if cfg.checkpoint.enable:
        ensure_fresh_dir(cfg.checkpoint.dir, args.resume)
    check_local_paths(cfg)
    return cfg


def check_local_paths(cfg: Config) -> None:
    """Missing local datasets and pretrained checkpoints, found before the heavy imports (remote
    s3:// paths are checked when they are opened)."""
    if not cfg.data.synthetic:
        for split in ("train", "val", "test"):
            path = getattr(cfg.data, f"{split}_optimized_dir")
            if path and "://" not in path and not (Path(path) / "index.json").is_file():
                raise ConfigError(
                    f"data.{split}_optimized_dir={path}: no prepared dataset there (index.json "
                    "missing); create it with `python launch/prepare_data.py --videos ... --output ...`"
                )
    pretrained = cfg.model.pretrained_path
    if pretrained and "://" not in pretrained and not Path(pretrained).exists():
        raise ConfigError(f"model.pretrained_path={pretrained}: no such file or folder")


def run_status(result) -> int:
    """0 for a finished run (a FitResult); 128 + signal (130 SIGINT, 143 SIGTERM) for an interrupted one."""
    import signal

    from everest.engine.interrupts import exit_status

    return exit_status(result.signal or signal.SIGINT) if result.interrupted else 0


# Exceptions a user can fix, by module: checked only when their module is loaded, so that
# handling a config error never pays for importing torch.
_USER_ERRORS = {
    "everest.config": "ConfigError",
    "everest.models.weights": "WeightsError",
    "everest.engine.checkpoint": "CheckpointSaveError",
    "everest.engine.trainer": "NonFiniteLossError",
}


def is_user_error(err: BaseException) -> bool:
    if isinstance(err, (FileNotFoundError, ConnectionError)):
        return True
    return any(
        isinstance(err, getattr(sys.modules[name], cls)) for name, cls in _USER_ERRORS.items() if name in sys.modules
    )


def exit_on_user_error(fn):
    """Run `fn`; a problem the user can fix (config, data path, checkpoint, network, disk)
    becomes one clear line on stderr and exit status 2 instead of a traceback."""

    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except Exception as err:
            if not is_user_error(err):
                raise
            print(f"error: {err}", file=sys.stderr, flush=True)
            return 2

    return wrapper
