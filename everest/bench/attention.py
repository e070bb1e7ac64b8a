"""python -m everest.bench.attention [--backbone vit-b] [--batch 2] [--frames 16] [--size 224]
    [--repeats 6] [--threads N] [--json FILE]

SDPA against explicit attention (softmax(QK^T)V, `EVEREST_ATTENTION=math`) at the shapes a
training step runs: the encoder over the visible tokens and the decoder over visible plus target
tokens of EVEREST pretraining (default mask ratio and rho), and the encoder over the MCM tokens of
fine-tuning. Forward and backward of `everest.models.attention.attention`, the two backends taking
turns after one warm-up (everest.bench.timing); the table gives medians in ms and their ratio, and
the step's total over its blocks.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import Any

import torch

from everest.bench.timing import describe_device, environment, interleaved, markdown_table, write_json
from everest.estimate.plans import finetune_plan, pretrain_plan
from everest.models import spec_for
from everest.models.attention import attention

Shape = tuple[int, int, int, int]  # batch, tokens, heads, head width


def step_shapes(backbone: str, batch: int, frames: int, size: int) -> dict[str, tuple[Shape, int]]:
    """{stage: ((batch, tokens, heads, head width), blocks)} of a pretraining and an MCM
    fine-tuning step (the class token counts where fine-tuning prepends one)."""
    spec = spec_for(backbone, num_frames=frames, input_size=size)
    pre, fine = pretrain_plan("everest", spec), finetune_plan("everest", spec)
    enc_heads, dec_heads = spec.num_heads, spec.decoder_num_heads
    return {
        "pretraining encoder": ((batch, pre.encoder, enc_heads, spec.embed_dim // enc_heads), spec.depth),
        "pretraining decoder": (
            (batch, pre.decoder, dec_heads, spec.decoder_embed_dim // dec_heads),
            spec.decoder_depth,
        ),
        "MCM fine-tuning encoder": ((batch, fine.encoder, enc_heads, spec.embed_dim // enc_heads), spec.depth),
    }


def _forward_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grad: torch.Tensor, backend: str) -> None:
    q.grad = k.grad = v.grad = None
    attention(q, k, v, backend=backend).backward(grad)


def compare(shapes: dict[str, tuple[Shape, int]], repeats: int = 6) -> list[dict[str, Any]]:
    """Median seconds of SDPA and explicit attention, forward+backward, per stage."""
    results = []
    for stage, (shape, blocks) in shapes.items():
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(*shape, generator=g).requires_grad_() for _ in range(3))
        grad = torch.randn(*shape, generator=g)
        candidates = {b: partial(_forward_backward, q, k, v, grad, b) for b in ("sdpa", "math")}
        med = interleaved(candidates, repeats, warmup=1, alternate=True).medians()
        results.append(
            {"stage": stage, "shape": list(shape), "blocks": blocks, "sdpa_s": med["sdpa"], "math_s": med["math"]}
        )
    return results


def render(results: list[dict[str, Any]]) -> str:
    rows = [
        [
            r["stage"],
            "x".join(map(str, r["shape"])),
            r["blocks"],
            f"{r['sdpa_s'] * 1e3:.2f}",
            f"{r['math_s'] * 1e3:.2f}",
            f"{r['math_s'] / r['sdpa_s']:.2f}",
            f"{r['sdpa_s'] * r['blocks'] * 1e3:.0f} / {r['math_s'] * r['blocks'] * 1e3:.0f}",
        ]
        for r in results
    ]
    header = [
        "stage",
        "batch x tokens x heads x width",
        "blocks",
        "SDPA ms",
        "explicit ms",
        "explicit / SDPA",
        "all blocks ms SDPA / explicit",
    ]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m everest.bench.attention",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backbone", default="vit-b")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = compare(step_shapes(args.backbone, args.batch, args.frames, args.size), args.repeats)
    print(f"{describe_device()}, torch {torch.__version__}; forward+backward, medians of {args.repeats}\n")
    print(render(results))
    if args.json:
        write_json(args.json, {**environment(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
