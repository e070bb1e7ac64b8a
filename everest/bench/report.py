"""Benchmark output: a Markdown table with ratios, the JSON record and a bar chart."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from everest.bench.measure import StrategyResult
from everest.bench.timing import describe_device, markdown_table
from everest.bench.timing import write_json as _write_json
from everest.bench.workloads import STAGES, Bench

GIB = 2**30


def _gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / GIB:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.3f}"


def memory_note(device: torch.device) -> str:
    if device.type == "cuda":
        return "peak memory: torch.cuda.max_memory_allocated during one step"
    return (
        "peak memory: the process's peak resident set size during one step (VmHWM; includes the "
        "Python process, weights and optimizer states)"
    )


def markdown(
    bench: Bench,
    results: dict[str, StrategyResult],
    repeats: int,
    backbone: str,
    load: tuple[float, float] | None = None,
) -> str:
    """The table with ratios against the baseline; `load` = 1-minute load average before and after."""
    s = bench.spec
    base = results[bench.baseline]
    lines = [
        f"### {backbone} {bench.task} step: batch {bench.batch}, {s.num_frames}x{s.input_size}x{s.input_size} clips "
        f"({s.num_patches} tokens per clip)",
        "",
        f"{describe_device(bench.device)}, torch {torch.__version__}, {str(bench.dtype).removeprefix('torch.')}; "
        f"wall time: median of {repeats} interleaved steps after warm-up (forward, backward, AdamW step); "
        f'FLOPs: torch.utils.flop_counter over one step ("recompute": the part that is SDPA recomputing '
        f"QK^T in the backward, which code keeping the scores does not do); {memory_note(bench.device)}; "
        "step memory: peak minus what was held before the step; activations: what the forward left held."
        + (
            f" Host load average {load[0]:.2f} at the start, {load[1]:.2f} at the end ({os.cpu_count()} CPUs)."
            if load
            else ""
        ),
        "",
    ]
    rows = [
        [
            r.label,
            r.encoder_tokens,
            r.decoder_tokens,
            f"{r.flops / 1e9:.1f}",
            f"{r.model_flops / 1e9:.1f}",
            f"{r.recompute_flops / 1e9:.1f}",
            f"{r.wall_s:.3f}",
            _gib(r.peak_mem_bytes),
            _gib(r.step_mem_bytes),
            _gib(r.activation_bytes),
        ]
        for r in results.values()
    ]
    rows += [
        [
            f"{r.label} / {base.label}",
            _ratio(r.encoder_tokens, base.encoder_tokens),
            _ratio(r.decoder_tokens, base.decoder_tokens),
            _ratio(r.flops, base.flops),
            _ratio(r.model_flops, base.model_flops),
            _ratio(r.recompute_flops, base.recompute_flops),
            _ratio(r.wall_s, base.wall_s),
            _ratio(r.peak_mem_bytes, base.peak_mem_bytes),
            _ratio(r.step_mem_bytes, base.step_mem_bytes),
            _ratio(r.activation_bytes, base.activation_bytes),
        ]
        for name, r in results.items()
        if name != bench.baseline
    ]
    lines.append(
        markdown_table(
            [
                "strategy",
                "encoder tokens",
                "decoder tokens",
                "GFLOPs counted",
                "GFLOPs model",
                "of which recompute",
                "wall s",
                "peak mem GiB",
                "step mem GiB",
                "activations GiB",
            ],
            rows,
        )
    )
    lines.append("")
    for name, r in results.items():
        if name == bench.baseline:
            continue
        flops_ratio, wall_ratio = r.flops / base.flops, r.wall_s / base.wall_s
        no_recompute = (r.model_flops - r.recompute_flops) / max(base.model_flops - base.recompute_flops, 1)
        lines.append(
            f"{r.label} / {base.label}: FLOPs {flops_ratio:.3f} ({no_recompute:.3f} without the "
            f"recompute), wall time {wall_ratio:.3f} "
            f"({100 * (wall_ratio / flops_ratio - 1):+.1f}% from the FLOPs ratio)"
        )
    if any(r.stage_s for r in results.values()):
        lines += ["", *stage_table(results)]
    return "\n".join(lines)


def stage_table(results: dict[str, StrategyResult]) -> list[str]:
    """Median seconds per stage and its share of the stages' sum, one column pair per strategy."""
    shown = [r for r in results.values() if r.stage_s]
    lines = [
        "Where a step's time goes (median seconds per stage over the breakdown steps, each stage "
        "synchronised; share of the step in brackets):",
        "",
    ]
    totals = [sum(r.stage_s.values()) for r in shown]
    rows = [
        [
            stage,
            *(
                f"{r.stage_s[stage]:.4f} ({100 * r.stage_s[stage] / t:.0f}%)" if stage in r.stage_s else "-"
                for r, t in zip(shown, totals, strict=True)
            ),
        ]
        for stage in STAGES
    ]
    rows.append(["sum", *(f"{t:.4f}" for t in totals)])
    return lines + markdown_table(["stage", *(r.label for r in shown)], rows).splitlines()


def write_json(results: dict[str, StrategyResult], path: str | Path) -> None:
    """{strategy: its result}; every result names the hardware it ran on (`device`)."""
    _write_json(path, {name: r.to_dict() for name, r in results.items()})


def plot(bench: Bench, results: dict[str, StrategyResult], path: str | Path) -> None:
    """Bars per strategy: counted TFLOPs, median wall time and activation memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.label for r in results.values()]
    panels = [
        ("TFLOPs per step", [r.flops / 1e12 for r in results.values()]),
        ("wall time per step, s", [r.wall_s for r in results.values()]),
        ("activations, GiB", [(r.activation_bytes or 0) / GIB for r in results.values()]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    colors = ["tab:green", "tab:blue", "tab:gray"][: len(labels)]
    for ax, (title, values) in zip(axes, panels, strict=True):
        bars = ax.bar(range(len(values)), values, color=colors)
        ax.bar_label(bars, fmt="%.3g")
        ax.margins(y=0.15)
        ax.set_title(title)
        ax.set_xticks(range(len(values)), labels, rotation=20, ha="right", fontsize=8)
    fig.suptitle(f"{bench.task} step, batch {bench.batch}, {describe_device(bench.device)}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
