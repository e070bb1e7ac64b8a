"""Counting, timing and peak memory of the benchmark's training steps.

- FLOPs: `torch.utils.flop_counter` over one whole step (the first warm-up step).
- Wall time: median over `repeats` steps after warm-up, strategies interleaved (A B C A B C
  ...) so that machine noise hits them alike; CUDA is synchronised around each step
  (`everest.bench.timing.interleaved`).
- Stage breakdown: `breakdown` further interleaved steps per strategy with every stage
  (`workloads.STAGES`, the record_function ranges of the step and its objective) synchronised
  and timed (`everest.bench.timing.interleaved_ranges`); the median of each stage is reported.
  The synchronisation makes these steps a little slower than the timed ones on CUDA.
- Memory of one step per strategy, on CUDA from the caching allocator's counters
  (`memory_allocated`, `max_memory_allocated`: weights, optimizer states, gradients,
  activations); on CPU from the process's resident set (VmRSS, and VmHWM reset before the step
  through /proc/self/clear_refs), with glibc told to map every buffer of 64 KiB or more on its
  own so that freed tensors leave the resident set (the CPU peak counts the Python process too).
  `peak_mem_bytes` is the peak during the step, `step_mem_bytes` the peak minus what was held
  just before it (gradients, activations, temporaries) and `activation_bytes` what the forward
  left held for the backward.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch

from everest.bench.timing import describe_device, interleaved, interleaved_ranges, median
from everest.bench.workloads import STAGES, Bench, StepTokens, Workload, train_step
from everest.estimate.flops import flop_counter

_M_MMAP_THRESHOLD = -3
_OWN_MAPPING_BYTES = 64 * 1024


@dataclass
class StrategyResult:
    label: str
    flops: int  # counted, whole step
    model_flops: int  # analytical (everest.estimate), whole step, as counted (SDPA recompute included)
    recompute_flops: int  # of which SDPA's QK^T recompute in the backward
    wall_s: float  # median
    peak_mem_bytes: int | None
    step_mem_bytes: int | None
    activation_bytes: int | None
    encoder_tokens: int  # whole batch
    decoder_tokens: int
    wall_s_all: list[float] = field(default_factory=list)
    stage_s: dict[str, float] = field(default_factory=dict)  # median seconds per stage (breakdown)
    device: str = ""  # timing.describe_device

    def to_dict(self) -> dict:
        return asdict(self)


class CudaMeter:
    """Bytes held by the CUDA caching allocator's tensors."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def current(self) -> int:
        torch.cuda.synchronize(self.device)
        return torch.cuda.memory_allocated(self.device)

    def peak(self) -> int:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device)


class RssMeter:
    """The process's resident set on Linux; raises OSError where its counters are missing."""

    def __init__(self):
        self.libc = ctypes.CDLL("libc.so.6")
        self.libc.mallopt(_M_MMAP_THRESHOLD, _OWN_MAPPING_BYTES)
        self.start()

    @staticmethod
    def _status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise OSError(f"{key} not in /proc/self/status")

    def start(self) -> None:
        gc.collect()
        self.libc.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS

    def current(self) -> int:
        return self._status("VmRSS")

    def peak(self) -> int:
        return self._status("VmHWM")


def memory_step(bench: Bench, workload: Workload, meter: CudaMeter | RssMeter) -> tuple[int, int, int]:
    """One training step -> (peak bytes, peak above the start, bytes the forward left held)."""
    meter.start()
    before = meter.current()
    loss, _ = workload.forward()
    held = meter.current() - before
    loss.backward()
    bench.optimizer.step()
    bench.optimizer.zero_grad(set_to_none=True)
    peak = meter.peak()
    return peak, peak - before, held


def _meter(device: torch.device) -> CudaMeter | RssMeter | None:
    if device.type == "cuda":
        return CudaMeter(device)
    try:
        return RssMeter()
    except OSError:
        return None


def measure(
    bench: Bench, repeats: int = 3, warmup: int = 1, log: Callable[[str], None] = print, breakdown: int = 0
) -> dict[str, StrategyResult]:
    """Counted FLOPs, median wall time, peak memory and (breakdown > 0) per-stage medians of
    every strategy's training step."""
    flops: dict[str, int] = {}
    counts: dict[str, StepTokens] = {}
    for w in bench.workloads:  # first warm-up step, counted
        with flop_counter() as counter:
            counts[w.name] = train_step(bench, w)
        flops[w.name] = counter.get_total_flops()
    steps = {w.name: partial(train_step, bench, w) for w in bench.workloads}
    walls = interleaved(steps, repeats, warmup - 1, bench.device, log=log).wall
    stages = interleaved_ranges(steps, breakdown, STAGES, bench.device) if breakdown else {}
    meter = _meter(bench.device)
    results = {}
    for w in bench.workloads:
        peak, step, held = memory_step(bench, w, meter) if meter else (None, None, None)
        results[w.name] = StrategyResult(
            label=w.label,
            flops=flops[w.name],
            model_flops=w.model_flops.total,
            recompute_flops=w.model_flops.recompute,
            stage_s=stages.get(w.name, {}),
            wall_s=median(walls[w.name]),
            peak_mem_bytes=peak,
            step_mem_bytes=step,
            activation_bytes=held,
            encoder_tokens=counts[w.name].encoder,
            decoder_tokens=counts[w.name].decoder,
            wall_s_all=walls[w.name],
            device=describe_device(bench.device),
        )
    return results
