"""Counting, timing and peak memory of the benchmark's training steps.

- FLOPs: `torch.utils.flop_counter` over one whole step (the first warm-up step).
- Wall time: median over `repeats` steps after warm-up, strategies interleaved (A B C A B C
  ...) so that machine noise hits them alike; CUDA is synchronised around each step.
- Peak memory, on CUDA: `torch.cuda.max_memory_allocated` during one step (everything
  allocated: weights, optimizer states, gradients, activations). On CPU: the process's peak
  resident set size during one step (VmHWM, reset before the step through
  /proc/self/clear_refs), with glibc told to map every buffer of 64 KiB or more on its own so
  that freed tensors leave the resident set. It counts the Python process too.
  `step_mem_bytes` is the peak minus what was held just before the step (activations,
  gradients and temporaries: what the strategy itself costs).
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from everest.bench.workloads import Bench, StepTokens, train_step
from everest.estimate.flops import flop_counter

_M_MMAP_THRESHOLD = -3
_OWN_MAPPING_BYTES = 64 * 1024


@dataclass
class StrategyResult:
    label: str
    flops: int  # counted, whole step
    model_flops: int  # analytical (everest.estimate), whole step
    wall_s: float  # median
    peak_mem_bytes: int | None
    step_mem_bytes: int | None
    encoder_tokens: int  # whole batch
    decoder_tokens: int
    wall_s_all: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _proc_status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def cpu_peak_memory(fn: Callable[[], object]) -> tuple[int, int] | None:
    """(peak RSS during fn, RSS before fn) in bytes, or None where Linux's counters are missing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _OWN_MAPPING_BYTES)
        gc.collect()
        libc.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _proc_status_bytes("VmRSS")
    except OSError:
        return None
    fn()
    return _proc_status_bytes("VmHWM"), before


def cuda_peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[int, int]:
    """(max allocated during fn, allocated before fn) in bytes."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device), before


def measure(bench: Bench, repeats: int = 3, warmup: int = 1, log: Callable[[str], None] = print) -> dict[str, StrategyResult]:
    """Counted FLOPs, median wall time and peak memory of every strategy's training step."""
    flops: dict[str, int] = {}
    counts: dict[str, StepTokens] = {}
    for w in bench.workloads:  # first warm-up step, counted
        with flop_counter() as counter:
            counts[w.name] = train_step(bench, w)
        flops[w.name] = counter.get_total_flops()
    for _ in range(warmup - 1):
        for w in bench.workloads:
            train_step(bench, w)
    walls: dict[str, list[float]] = {w.name: [] for w in bench.workloads}
    for r in range(repeats):
        for w in bench.workloads:
            walls[w.name].append(timed(lambda: train_step(bench, w), bench.device))
        log(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in walls.items()))
    results = {}
    for w in bench.workloads:
        if bench.device.type == "cuda":
            mem = cuda_peak_memory(lambda: train_step(bench, w), bench.device)
        else:
            mem = cpu_peak_memory(lambda: train_step(bench, w))
        results[w.name] = StrategyResult(
            label=w.label, flops=flops[w.name], model_flops=w.model_flops.total,
            wall_s=statistics.median(walls[w.name]),
            peak_mem_bytes=mem[0] if mem else None, step_mem_bytes=mem[0] - mem[1] if mem else None,
            encoder_tokens=counts[w.name].encoder, decoder_tokens=counts[w.name].decoder,
            wall_s_all=walls[w.name])
    return results
