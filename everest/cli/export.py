"""Consolidate a DeepSpeed checkpoint (any ZeRO stage, any number of ranks) into one fp32 file.

    python launch/export.py --checkpoint output/checkpoints [--tag TAG] --output model.pt

The file holds {'model': weights, 'everest': architecture}; `everest.models.load_encoder`,
`load_pretrain_model`, `load_classifier` and fine-tuning's model.pretrained_path read it
directly. Uses DeepSpeed's zero_to_fp32 for ZeRO shards.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint.dir of a run (uses 'latest') or a tag folder")
    parser.add_argument("--tag", default=None, help="a tag inside --checkpoint instead of 'latest'")
    parser.add_argument("--output", required=True, help="the .pt file to write")
    args = parser.parse_args(argv)
    source = Path(args.checkpoint) / args.tag if args.tag else Path(args.checkpoint)
    if not source.exists():
        print(f"error: --checkpoint {source}: no such file or folder", file=sys.stderr)
        return 2

    from everest.engine import distributed  # noqa: F401  (first of the heavy imports: selects DeepSpeed's accelerator)

    # isort: split
    from everest.models.weights import WeightsError, export_consolidated

    try:
        kind, count = export_consolidated(source, args.output)
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {kind} model, {count / 1e6:.2f}M parameters in fp32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
