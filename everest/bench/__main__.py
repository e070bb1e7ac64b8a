"""python -m everest.bench pretrain|finetune --backbone vit-b [--batch 2] [--repeats 3] [--frames 16]
    [--size 224] [--breakdown 3] [--json FILE] [--plot FILE.png] [--spec depth=2 ...]

Prints a Markdown table of counted FLOPs, median wall time, peak memory and tokens per training
step for each strategy, with ratios against the baseline (VideoMAE tube masking for
pretraining, all tokens for fine-tuning), then where each step's time goes: the median of
every stage (data to device, embed+score+select, encoder, decoder, loss, backward, optimizer).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import yaml

from everest.bench.measure import measure
from everest.bench.report import markdown, plot, write_json
from everest.bench.workloads import build_bench
from everest.models import PRESETS, spec_for

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m everest.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", choices=["pretrain", "finetune"])
    parser.add_argument("--backbone", default="vit-b", choices=list(PRESETS))
    parser.add_argument("--batch", type=int, default=2, help="clips per step")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per strategy (median reported)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed steps per strategy before timing, the first one FLOP-counted (>= 1)",
    )
    parser.add_argument(
        "--breakdown", type=int, default=3, help="stage-timed steps per strategy after the timed ones (0: no breakdown)"
    )
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument(
        "--spec",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a VideoViTSpec field of the preset, e.g. depth=2 (repeatable)",
    )
    parser.add_argument("--rho", type=float, default=0.7, help="motion-centric masking ratio (pretrain)")
    parser.add_argument("--mask-ratio", type=float, default=0.9, help="pretraining mask ratio")
    parser.add_argument("--mcm-ratio", type=float, default=0.4, help="fine-tuning MCM ratio")
    parser.add_argument("--num-classes", type=int, default=400)
    parser.add_argument(
        "--strategies",
        default=None,
        help="comma-separated subset to run, baseline included (default: all), "
        "e.g. everest,videomae when no masking does not fit",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", *DTYPES], help="model dtype (auto: bf16 on CUDA, fp32 on CPU)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--plot", default=None, help="write a bar chart here (.png)")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.repeats < 1 or args.breakdown < 0:
        parser.error("--warmup and --repeats must be >= 1, --breakdown >= 0")
    return args


def _spec_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--spec {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    dtype = DTYPES[args.dtype] if args.dtype != "auto" else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    spec = spec_for(
        args.backbone,
        num_frames=args.frames,
        input_size=args.size,
        patch_size=args.patch,
        attention_backend="sdpa",
        **_spec_overrides(args.spec),
    )
    try:
        bench = build_bench(
            args.task,
            spec,
            args.batch,
            device,
            dtype,
            args.seed,
            args.rho,
            args.mask_ratio,
            args.mcm_ratio,
            args.num_classes,
            args.strategies.split(",") if args.strategies else None,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]
    results = measure(
        bench, args.repeats, args.warmup, log=lambda line: print(line, file=sys.stderr), breakdown=args.breakdown
    )
    print(markdown(bench, results, args.repeats, args.backbone, (load_before, os.getloadavg()[0])))
    if args.json:
        write_json(results, args.json)
    if args.plot:
        plot(bench, results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
