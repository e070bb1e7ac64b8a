"""python -m everest.bench.gpu --published DIR [--batches 8 32 128] [--repeats 10] [--warmup 3]
    [--compile] [--out performance_gpu.md] [--json FILE]

The GPU measurements of docs/performance.md in one command, ViT-B, 16x224x224, bf16, for
each batch size: EVEREST vs VideoMAE tube pretraining and MCM 0.4 vs all-token fine-tuning
(`everest.bench`, with the per-stage breakdown), then ours vs the published code's fp16 autocast
path (`everest.bench.versus`, DIR as there). Prints a summary table (wall ratio against the
FLOPs ratio, clips/s against the published code, peak memory) followed by every detailed table,
and writes all of it to --out (and every figure to --json).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch

from everest.bench.measure import StrategyResult, measure
from everest.bench.report import markdown
from everest.bench.timing import describe_device, environment, markdown_table, median, write_json
from everest.bench.versus import Comparison, import_published, render, run
from everest.bench.workloads import build_bench
from everest.models import spec_for


def _clips_per_s(batch: int, c: Comparison, side: str) -> float:
    return batch / (median(c.fwd_bwd_s[side]) + median(c.optimizer_s[side]))


SUMMARY = [
    "step",
    "batch",
    "FLOPs EVEREST / baseline",
    "wall EVEREST / baseline",
    "wall from FLOPs ratio",
    "peak GiB EVEREST / baseline",
    "clips/s ours",
    "clips/s published",
    "ours / published",
    "fwd+bwd memory GiB ours / published",
]


def summary_row(batch: int, task: str, ev: StrategyResult, base: StrategyResult, c: Comparison) -> list[str]:
    flops, wall = ev.flops / base.flops, ev.wall_s / base.wall_s
    ours, theirs = _clips_per_s(batch, c, "ours"), _clips_per_s(batch, c, "theirs")
    peak = "/".join(f"{c.peak_bytes[s] / 2**30:.2f}" if c.peak_bytes.get(s) else "n/a" for s in ("ours", "theirs"))
    return [
        task,
        str(batch),
        f"{flops:.3f}",
        f"{wall:.3f}",
        f"{100 * (wall / flops - 1):+.1f}%",
        f"{(ev.peak_mem_bytes or 0) / 2**30:.2f} / {(base.peak_mem_bytes or 0) / 2**30:.2f}",
        f"{ours:.1f}",
        f"{theirs:.1f}",
        f"{ours / theirs:.2f}x",
        peak,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m everest.bench.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--published", required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="our blocks under torch.compile (features.compile)")
    parser.add_argument("--out", default="performance_gpu.md")
    parser.add_argument("--json", default=None, help="also write every figure here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: python -m everest.bench.gpu needs a CUDA device", file=sys.stderr)
        return 2
    device, dtype = torch.device("cuda"), torch.bfloat16
    mp, mf = import_published(args.published)
    log = partial(print, file=sys.stderr)
    spec = spec_for("vit-b", attention_backend="auto", compile=args.compile)
    rows, details, runs = [], [], []
    for batch in args.batches:
        for task, strategies, baseline in (
            ("pretrain", ["everest", "videomae"], "videomae"),
            ("finetune", ["everest", "none"], "none"),
        ):
            bench = build_bench(task, spec, batch, device, dtype, strategies=strategies)
            results = measure(bench, args.repeats, args.warmup, log=log, breakdown=3)
            details.append(markdown(bench, results, args.repeats, "vit-b", (os.getloadavg()[0],) * 2))
            del bench
            torch.cuda.empty_cache()
            load = os.getloadavg()[0]
            cmp = run(task, mp, mf, batch, args.repeats, args.warmup, device, dtype, False, log, args.compile)
            details.append(render([cmp], batch, device, dtype, (load, os.getloadavg()[0])))
            rows.append(summary_row(batch, task, results["everest"], results[baseline], cmp))
            runs.append(
                {
                    "task": task,
                    "batch": batch,
                    "strategies": {k: r.to_dict() for k, r in results.items()},
                    "versus": asdict(cmp),
                }
            )
            torch.cuda.empty_cache()
    head = [
        f"### ViT-B, 16x224x224, bf16 on {describe_device(device)}{', compiled blocks' if args.compile else ''}",
        "",
        "EVEREST against VideoMAE tube masking (pretraining) or all tokens (fine-tuning) in our code; ours "
        "(EVEREST, MCM 0.4 for fine-tuning) against the published code's fp16 autocast path; clips/s: batch / "
        "median (forward+backward + optimizer step).",
        "",
        markdown_table(SUMMARY, rows),
    ]
    text = "\n".join(head) + "\n\n" + "\n\n".join(details) + "\n"
    print(text)
    Path(args.out).write_text(text)
    if args.json:
        write_json(args.json, {**environment(device), "compile": args.compile, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
