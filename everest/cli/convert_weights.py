"""Convert checkpoints between our format, official VideoMAE/EVEREST .pth and Hugging Face.

    python launch/convert_weights.py --input CKPT --output OUT --to huggingface|videomae|everest
        [--num-frames 16] [--input-size 224]

The input may be any format `everest.models.read_weights` reads (a DeepSpeed run folder, an
exported .pt, an official .pth, a Hugging Face folder). Pretraining checkpoints (with a decoder)
become pretraining models; checkpoints with a head become classifiers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="checkpoint file or folder")
    parser.add_argument("--output", required=True, help="output file (.pth/.pt) or folder (huggingface)")
    parser.add_argument("--to", required=True, choices=["huggingface", "videomae", "everest"])
    parser.add_argument("--num-frames", type=int, default=None, help="clip length the model is built for")
    parser.add_argument("--input-size", type=int, default=None, help="frame size the model is built for")
    args = parser.parse_args(argv)

    if not Path(args.input).exists():
        print(f"error: --input {args.input}: no such file or folder", file=sys.stderr)
        return 2

    from everest.models import (  # after the arguments: --help and typos answer at once
        WeightsError,
        export_huggingface,
        export_videomae,
        load_classifier,
        load_pretrain_model,
        read_weights,
        save_everest,
    )

    overrides = {k: v for k, v in (("num_frames", args.num_frames), ("input_size", args.input_size)) if v}
    try:
        keys = read_weights(args.input).state_dict
        if "encoder_to_decoder.weight" in keys:
            model = load_pretrain_model(args.input, **overrides)
        elif "head.weight" in keys:
            model = load_classifier(args.input, **overrides)
        else:
            raise WeightsError(f"{args.input}: neither a pretraining model (decoder) nor a fine-tuned one (head)")
        if args.to == "huggingface":
            export_huggingface(model, args.output)
        elif args.to == "videomae":
            export_videomae(model, args.output)
        else:
            save_everest(model, args.output)
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({type(model).__name__}, {args.to} format)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
