"""Memory and FLOPs of a pretraining run before launching it.

    python launch/estimate.py --config configs/pretrain/vit_b_k400.yaml \
        [--deepspeed_config ds_configs/zero2.json] --gpus 8 --nodes 1 --gpu-memory 80 [key=value ...]

Prints per-rank memory (model states under the ZeRO stage and offload from DeepSpeed's own
estimators; activations per clip with and without activation checkpointing), FLOPs per clip
(forward + backward, encoder and decoder) for EVEREST and VideoMAE tube masking at the same
model, and the largest micro-batch that fits.
"""

from __future__ import annotations

import argparse
import copy
import sys

from everest.cli.common import exit_on_user_error
from everest.config import resolve_path

DEFAULT_CONFIG = "configs/pretrain/vit_b_k400.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML experiment config (default {DEFAULT_CONFIG})")
    parser.add_argument(
        "--deepspeed_config",
        "--deepspeed-config",
        default=None,
        help="DeepSpeed JSON (default: the config's training.deepspeed_config)",
    )
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpu-memory", "--gpu_memory", type=float, default=80.0, help="GiB per GPU")
    parser.add_argument(
        "--reserve", type=float, default=2.0, help="GiB per GPU kept free for the CUDA context and allocator slack"
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.backbone=vit-l")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from everest.config import load_config
    from everest.engine.ds_config import load_ds_json, resolve_ds_config

    overrides = list(args.overrides)
    if args.deepspeed_config:
        overrides.append(f"training.deepspeed_config={args.deepspeed_config}")
    cfg = load_config(resolve_path(args.config), overrides)
    ds_path = cfg.training.deepspeed_config
    ds = resolve_ds_config(
        copy.deepcopy(cfg),
        load_ds_json(resolve_path(ds_path)),
        world_size=args.gpus * args.nodes,
        on_gpu=True,
        source=ds_path,
    )

    from everest.engine import distributed  # noqa: F401  (first of the heavy imports: selects DeepSpeed's accelerator)

    # isort: split
    from everest.estimate.report import estimate, render

    print(render(estimate(cfg, ds, args.gpus, args.nodes, args.gpu_memory, args.reserve), ds_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
