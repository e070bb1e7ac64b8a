"""Microbenchmarks of the token kernels against their torch twins and the published code path.

    python -m kernels.bench {motion_score,topk_select,gather_tokens,selection,all} \\
        --batch 8 --frames 16 --size 224 --dim 768 --dtype bf16 [--json FILE]
    python -m kernels.bench check     # the kernels against their twins only

(The selection's share of a pretraining step: `python -m everest.bench.selection`.)

Timing runs on everest.bench.timing. On CUDA every op is timed with triton.testing.do_bench
(median, launch overhead included), the ops taking turns, after
the device's copy bandwidth is measured, and the kernels are checked against their twins first;
"graph ms" replays the kernels and twins as a CUDA graph: GPU time alone (the reference path's
boolean indexing waits on the host and cannot be captured). On CPU the torch twins and the
reference path are timed, and the Triton kernels run once through the interpreter (in a child
process with TRITON_INTERPRET=1) for correctness only: GPU figures need a GPU.

"reference" is the published EVEREST code path: detach + clone, torch.norm over the slot
differences, argsort of the scores, argsort of the shuffle noise, argsort to restore the order,
boolean masks, positions added to every token and boolean-mask indexing of the visible ones.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import triton
from torch import Tensor

from everest.bench.timing import describe_device, environment, interleaved, markdown_table, write_json
from kernels import gather, motion, topk

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
OPS = ("motion_score", "topk_select", "gather_tokens", "selection")


@dataclass
class Shape:
    batch: int
    frames: int
    size: int
    dim: int
    dtype: str
    patch: int = 16
    tubelet: int = 2
    rho: float = 0.7
    mask_ratio: float = 0.9

    @property
    def slots(self) -> int:
        return self.frames // self.tubelet

    @property
    def positions(self) -> int:
        return (self.size // self.patch) ** 2

    @property
    def tokens(self) -> int:
        return self.slots * self.positions

    @property
    def kept(self) -> int:
        return int((1 - self.rho) * self.tokens)

    @property
    def visible(self) -> int:
        return int((1 - self.mask_ratio) * self.tokens)


@dataclass
class Row:
    op: str
    impl: str
    median_ms: float
    gbps: float
    pct_of_copy: float
    vs_twin: float | None = None
    vs_reference: float | None = None
    graph_ms: float | None = None  # CUDA only: replayed as a CUDA graph, launch overhead excluded


# -------------------------------------------------------------------- the published code path


def reference_scores(tokens: Tensor, shape: Shape) -> Tensor:
    x = tokens.detach().clone().reshape(shape.batch, shape.slots, shape.positions, shape.dim)
    distance = torch.norm(x[:, :-1] - x[:, 1:], p=2, dim=3)
    return torch.cat((distance[:, 0], distance.flatten(1)), dim=1)


def reference_masks(importance: Tensor, shape: Shape) -> tuple[Tensor, Tensor]:
    ids_sorted = torch.argsort(importance, dim=1, descending=True)
    noise = torch.rand(shape.batch, shape.kept, device=importance.device)
    shuffled = torch.argsort(noise, dim=1)
    ids_sorted[:, : shape.kept] = torch.gather(ids_sorted[:, : shape.kept], 1, shuffled)
    ids_restore = torch.argsort(ids_sorted, dim=1)
    input_mask = torch.ones(shape.batch, shape.tokens, device=importance.device)
    input_mask[:, : shape.visible] = 0
    target_mask = torch.ones(shape.batch, shape.tokens, device=importance.device)
    target_mask[:, shape.visible : shape.kept] = 0
    input_mask = torch.gather(input_mask, 1, ids_restore).bool()
    target_mask = torch.gather(target_mask, 1, ids_restore).bool()
    return input_mask, target_mask


def reference_gather(tokens: Tensor, pos: Tensor, input_mask: Tensor) -> Tensor:
    x = tokens + pos.type_as(tokens)
    return x[~input_mask].reshape(tokens.shape[0], -1, tokens.shape[-1])


# ------------------------------------------------------------------------------ measurement


def median_ms(fns: dict[str, Callable[[], object]], cuda: bool, repeats: int) -> dict[str, float]:
    """Median milliseconds of each function, the functions taking turns (round after round on
    CPU, so a busy machine slows them alike); on CUDA each turn is one triton do_bench median."""
    if cuda:
        timings = interleaved(
            fns, 1, 0, timer=lambda fn: triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3
        )
    else:
        timings = interleaved(fns, repeats, 1)
    return {name: 1e3 * seconds for name, seconds in timings.medians().items()}


def graph_ms(fn: Callable[[], object]) -> float:
    """Median milliseconds of `fn` replayed as a CUDA graph (no launch overhead)."""
    return float(triton.testing.do_bench_cudagraph(fn, return_mode="median"))


def copy_gbps(device: torch.device, nbytes: int, cuda: bool, repeats: int) -> float:
    """Read + write bandwidth of a plain copy of `nbytes`: the ceiling of a memory-bound op."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    ms = median_ms({"copy": lambda: dst.copy_(src)}, cuda, repeats)["copy"]
    return 2 * src.numel() * 4 / ms / 1e6


@dataclass
class Inputs:
    tokens: Tensor  # [B, N, D] in the patch embedding's layout (D-stride N)
    pos: Tensor  # [N, D] float32
    scores: Tensor
    noise: Tensor
    visible: Tensor


def make_inputs(shape: Shape, device: torch.device) -> Inputs:
    gen = torch.Generator(device=device).manual_seed(0)
    tokens = torch.randn(shape.batch, shape.dim, shape.tokens, device=device, generator=gen)
    tokens = tokens.to(DTYPES[shape.dtype]).transpose(1, 2)
    pos = torch.randn(shape.tokens, shape.dim, device=device, generator=gen)
    scores = motion.motion_score_torch(tokens.unflatten(1, (shape.slots, shape.positions)))
    noise = torch.rand(scores.shape, device=device, generator=gen)
    visible, _ = topk.topk_select_torch(scores, shape.kept, shape.visible, noise)
    return Inputs(tokens, pos, scores, noise, visible)


def op_bytes(op: str, shape: Shape) -> int:
    """The least memory traffic each op needs: what it must read once and write once."""
    elem = DTYPES[shape.dtype].itemsize
    b, n, d = shape.batch, shape.tokens, shape.dim
    motion_bytes = b * n * d * elem + b * n * 4
    select_bytes = 2 * b * n * 4 + b * shape.kept * 8
    gather_bytes = b * shape.visible * (2 * d * elem + d * 4 + 8)
    return {
        "motion_score": motion_bytes,
        "topk_select": select_bytes,
        "gather_tokens": gather_bytes,
        "selection": motion_bytes + select_bytes + gather_bytes,
    }[op]


def implementations(op: str, shape: Shape, x: Inputs) -> dict[str, Callable[[], object]]:
    emb = x.tokens.unflatten(1, (shape.slots, shape.positions))
    k, v = shape.kept, shape.visible

    def path(score_fn, select_fn, gather_fn):
        def run():
            scores = score_fn(emb)
            noise = torch.rand(scores.shape, device=scores.device)
            visible, _ = select_fn(scores, k, v, noise)
            return gather_fn(x.tokens, visible, x.pos)

        return run

    def reference_path():
        input_mask, _ = reference_masks(reference_scores(x.tokens, shape), shape)
        return reference_gather(x.tokens, x.pos, input_mask)

    reference_input_mask = reference_masks(x.scores, shape)[0]
    table = {
        "motion_score": {
            "triton": lambda: motion.motion_score_triton(emb),
            "torch twin": lambda: motion.motion_score_torch(emb),
            "reference": lambda: reference_scores(x.tokens, shape),
        },
        "topk_select": {
            "triton": lambda: topk.topk_select_triton(x.scores, k, v, x.noise),
            "torch twin": lambda: topk.topk_select_torch(x.scores, k, v, x.noise),
            "reference": lambda: reference_masks(x.scores, shape),
        },
        "gather_tokens": {
            "triton": lambda: gather.gather_triton(x.tokens, x.visible, x.pos),
            "torch twin": lambda: gather.gather_torch(x.tokens, x.visible, x.pos),
            "reference": lambda: reference_gather(x.tokens, x.pos, reference_input_mask),
        },
        "selection": {
            "triton": path(motion.motion_score_triton, topk.topk_select_triton, gather.gather_triton),
            "torch twin": path(motion.motion_score_torch, topk.topk_select_torch, gather.gather_torch),
            "reference": reference_path,
        },
    }[op]
    if x.tokens.device.type != "cuda":
        del table["triton"]
    return table


def bench_op(op: str, shape: Shape, x: Inputs, ceiling: float, cuda: bool, repeats: int) -> list[Row]:
    nbytes = op_bytes(op, shape)
    fns = implementations(op, shape, x)
    times = median_ms(fns, cuda, repeats)
    rows = []
    for impl, ms in times.items():
        gbps = nbytes / ms / 1e6
        graph = graph_ms(fns[impl]) if cuda and impl != "reference" else None
        rows.append(
            Row(op, impl, ms, gbps, 100 * gbps / ceiling, times["torch twin"] / ms, times["reference"] / ms, graph)
        )
    return rows


# ---------------------------------------------------------------------------- correctness


def check(shape: Shape, device: torch.device) -> list[str]:
    """Compare every Triton kernel with its torch twin on `shape`; returns the failures."""
    x = make_inputs(shape, device)
    emb = x.tokens.unflatten(1, (shape.slots, shape.positions))
    failures = []
    if not torch.allclose(motion.motion_score_triton(emb), x.scores, rtol=2e-6, atol=1e-5):
        failures.append("motion_score")
    got = topk.topk_select_triton(x.scores, shape.kept, shape.visible, x.noise)
    want = topk.topk_select_torch(x.scores, shape.kept, shape.visible, x.noise)
    if not all(torch.equal(a, b) for a, b in zip(got, want, strict=True)):
        failures.append("topk_select")
    exact = device.type == "cuda" or shape.dtype == "fp32"  # the interpreter truncates to 16 bits
    out, twin = gather.gather_triton(x.tokens, x.visible, x.pos), gather.gather_torch(x.tokens, x.visible, x.pos)
    if not (torch.equal(out, twin) if exact else torch.allclose(out, twin, rtol=2**-7, atol=0)):
        failures.append("gather_tokens")
    zeros = torch.zeros_like(x.tokens)
    if not torch.equal(
        gather.scatter_triton(out, x.visible, zeros.clone()), gather.scatter_torch(out, x.visible, zeros)
    ):
        failures.append("scatter_tokens")
    return failures


def check_interpreted(shape: Shape) -> str:
    """Run `check` on CPU in a child process where the kernels are interpreted."""
    small = Shape(**{**asdict(shape), "batch": min(shape.batch, 2)})
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    args = [sys.executable, "-m", "kernels.bench", "check", "--device", "cpu", *shape_args(small)]
    run = subprocess.run(args, env=env, capture_output=True, text=True)
    return run.stdout.strip() or run.stderr.strip()[-500:]


def shape_args(shape: Shape) -> list[str]:
    return [
        "--batch",
        str(shape.batch),
        "--frames",
        str(shape.frames),
        "--size",
        str(shape.size),
        "--dim",
        str(shape.dim),
        "--dtype",
        shape.dtype,
    ]


# ----------------------------------------------------------------------------------- output


def table(rows: list[Row]) -> str:
    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    graphs = any(r.graph_ms is not None for r in rows)
    header = ["op", "impl", "median ms", "GB/s", "% of copy", "vs twin", "vs reference"]
    header += ["graph ms"] if graphs else []
    cells = [
        [
            r.op,
            r.impl,
            f"{r.median_ms:.4f}",
            f"{r.gbps:.1f}",
            f"{r.pct_of_copy:.1f}",
            ratio(r.vs_twin),
            ratio(r.vs_reference),
        ]
        + (["-" if r.graph_ms is None else f"{r.graph_ms:.4f}"] if graphs else [])
        for r in rows
    ]
    return markdown_table(header, cells, "ll" + "r" * (len(header) - 2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kernels.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=(*OPS, "all", "check"))
    parser.add_argument("--batch", type=int, default=8, help="clips")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--dim", type=int, default=768, help="token width")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per op on CPU")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    shape = Shape(args.batch, args.frames, args.size, args.dim, args.dtype)
    repeats = args.repeats
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    cuda = device.type == "cuda"
    if args.what == "check":
        failures = check(shape, device)
        print("kernels match their twins" if not failures else "MISMATCH: " + ", ".join(failures))
        sys.exit(1 if failures else 0)
    print(f"device: {describe_device(device)}; torch {torch.__version__}, triton {triton.__version__}")
    print(
        f"shape: batch {shape.batch}, {shape.frames} frames, {shape.size}px, D={shape.dim}, "
        f"{shape.dtype}: N={shape.tokens}, K={shape.kept}, V={shape.visible}"
    )
    if cuda:
        failures = check(shape, device)
        verdict = "kernels match their twins" if not failures else "MISMATCH: " + ", ".join(failures)
    else:
        verdict = "interpreted kernels (batch <= 2): " + check_interpreted(shape)
        print("CPU run: the torch twins and the reference path are timed; Triton timings need a GPU.")
    print(verdict)
    x = make_inputs(shape, device)
    ceiling = copy_gbps(device, max(x.tokens.numel() * x.tokens.element_size(), 1 << 26), cuda, repeats)
    print(f"copy bandwidth (read + write): {ceiling:.1f} GB/s")
    rows = []
    for op in OPS if args.what == "all" else (args.what,):
        rows += bench_op(op, shape, x, ceiling, cuda, repeats)
    print(table(rows))
    if args.json:
        write_json(
            args.json,
            {
                **environment(device),
                "triton": triton.__version__,
                "shape": asdict(shape),
                "copy_gbps": ceiling,
                "check": verdict,
                "rows": [asdict(r) for r in rows],
            },
        )


if __name__ == "__main__":
    main()
