"""The options launch/extract_features.py and launch/predict.py share (standard library only:
the command line is parsed before any heavy import)."""

from __future__ import annotations

import argparse

from everest.config import ConfigError


def video_parser(
    description: str, checkpoint_help: str, batch_help: str, batch_default: int
) -> argparse.ArgumentParser:
    """A parser with --checkpoint, --videos, --config, --root, --batch_size, --workers, --device
    and the overrides; the entry point adds its own options."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help=checkpoint_help)
    parser.add_argument("--videos", required=True, help="folder, glob, video file, list file or prepared dataset")
    parser.add_argument("--config", default=None, help="YAML config giving the clip recipe (default: the checkpoint's)")
    parser.add_argument("--root", default=None, help="folder the list file's relative paths start from")
    parser.add_argument("--batch_size", "--batch-size", type=int, default=batch_default, help=batch_help)
    parser.add_argument("--workers", type=int, default=0, help="decoding processes (default 0: in the main one)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    return parser


def check_counts(batch_size: int, workers: int) -> None:
    """Raise ConfigError unless batch_size >= 1 and workers >= 0."""
    if batch_size < 1 or workers < 0:
        raise ConfigError(f"--batch_size {batch_size} must be >= 1 and --workers {workers} >= 0")


def exit_on_signal_with(message: str) -> None:
    """From now on SIGINT/SIGTERM end the process with `message` on stderr and status 130/143."""
    import signal
    import sys

    from everest.engine.interrupts import SIGNALS, exit_status

    def stop(signum: int, frame: object) -> None:
        print(f"interrupted ({signal.Signals(signum).name}): {message}", file=sys.stderr, flush=True)
        raise SystemExit(exit_status(signum))

    for sig in SIGNALS:
        signal.signal(sig, stop)


def chosen_checkpoint(path: str) -> str:
    """A run folder's best checkpoint (as launch/evaluate.py scores it), else `path`; named on
    stderr. Raises FileNotFoundError for a path that does not exist."""
    import sys
    from pathlib import Path

    from everest.engine.checkpoint import choose_checkpoint

    if not Path(path).exists():
        raise FileNotFoundError(f"--checkpoint {path}: no such file or folder")
    checkpoint, why = choose_checkpoint(path)
    if str(checkpoint) != str(path):
        print(f"checkpoint: {checkpoint} ({why})", file=sys.stderr, flush=True)
    return str(checkpoint)
