"""Multi-view test of a fine-tuned model: per-video predictions (CSV) and metrics (JSON).

    python launch/evaluate.py --config X.yaml --checkpoint CKPT [--split test|val]
        [--output_dir DIR] [training.test_num_segment=5 training.test_num_crop=3 ...]
    deepspeed --num_gpus N launch/evaluate.py ...     # shards the videos over ranks

CKPT is a fine-tuning checkpoint in any format (a DeepSpeed run folder or tag, an exported .pt,
an official .pth, a Hugging Face folder). A run folder is scored at its best checkpoint by the
monitored metric (the one fine-tuning tests; `latest` when none was ranked); pass a tag folder
to score another. summary.json records the checkpoint scored.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from everest.cli.common import exit_on_user_error
from everest.config import resolve_path


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument(
        "--checkpoint", required=True, help="run folder (its best checkpoint is scored), tag folder or weights file"
    )
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument("--output_dir", default=None, help="default: <checkpoint>/../eval_<split>")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)

    from everest.config import load_config
    from everest.engine.checkpoint import choose_checkpoint

    cfg = load_config(resolve_path(args.config), args.overrides)
    if not Path(args.checkpoint).exists():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such file or folder")
    checkpoint, why = choose_checkpoint(args.checkpoint)
    out_dir = Path(args.output_dir) if args.output_dir else Path(args.checkpoint).parent / f"eval_{args.split}"
    print(f"checkpoint: {checkpoint} ({why})", flush=True)

    from everest.engine import distributed  # first of the heavy imports: selects DeepSpeed's accelerator

    # isort: split
    from everest.tasks.multiview import evaluate_checkpoint

    dist_info = distributed.init_distributed(cfg.training.device)
    try:
        summary = evaluate_checkpoint(cfg, checkpoint, args.split, dist_info, out_dir)
    finally:
        distributed.shutdown()
    if summary is not None:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in summary["metrics"].items())
        print(
            f"{summary['videos']} videos, {cfg.training.test_num_segment}x{cfg.training.test_num_crop} views: "
            f"{metrics}; predictions in {out_dir / 'predictions.csv'}, summary in {out_dir / 'summary.json'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
