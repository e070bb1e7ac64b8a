"""The timing harness every benchmark uses: warm-up, interleaved repeats, medians, stage ranges,
the Markdown table and the JSON record, and the line naming the hardware.

- `interleaved` warms every candidate up, then times `repeats` rounds in which every candidate
  runs once in turn (A B C A B C ...; `alternate` reverses every other round: A B, B A), so that
  noise on a shared machine hits them alike. Each timed call is synchronised on CUDA before and
  after, and both the wall clock and this process's CPU time are kept; report their medians.
- `timed_ranges` times the `torch.profiler.record_function` ranges the training objectives name
  (embed+score+select, encoder, decoder, loss): while it is open those ranges are synchronised
  and timed, and still entered, so that a running profiler sees them too. `interleaved_ranges`
  gives the median seconds of every range per candidate.

Imports only the standard library and torch, so that every layer (kernels/ included) can use it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

Clock = Callable[[], float]
Candidate = Callable[[], object]


# ------------------------------------------------------------------------------ the hardware


def cpu_name() -> str:
    """The processor's model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The processor's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def isa_level(flags: set[str] | None = None) -> str:
    """'AMX', 'AVX-512', 'AVX2' or 'older': what the CPU offers, capped where oneDNN's
    ONEDNN_MAX_CPU_ISA or MKL's MKL_ENABLE_INSTRUCTIONS ask for AVX2."""
    flags = cpu_flags() if flags is None else flags
    level = (
        "AMX" if "amx_tile" in flags else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "older"
    )
    caps = (os.environ.get("ONEDNN_MAX_CPU_ISA", ""), os.environ.get("MKL_ENABLE_INSTRUCTIONS", ""))
    if level in ("AMX", "AVX-512") and any(cap.upper().startswith("AVX2") for cap in caps):
        return "AVX2"
    return level


def describe_device(device: torch.device | str | None = None) -> str:
    """'NVIDIA H100 80GB HBM3 (CUDA 13.0)' or 'CPU <model name> (<ISA level>), 8 threads[, linear
    <backend>]' (the backend of the models' CPU products, when this process uses the models)."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    text = f"CPU {cpu_name()} ({isa_level()}), {torch.get_num_threads()} threads"
    linear = sys.modules.get("everest.models.linear")  # the models' CPU products, when this process uses them
    return f"{text}, linear {linear.describe_backend()}" if linear is not None else text


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """What a JSON record says about where it ran."""
    return {
        "device": describe_device(device),
        "cpu_isa": isa_level(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
    }


# ---------------------------------------------------------------------------------- timing


def synchronize(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Candidate, device: torch.device | str | None = None, clock: Clock = time.perf_counter) -> float:
    """Seconds of one call of `fn`, CUDA synchronised before and after."""
    synchronize(device)
    start = clock()
    fn()
    synchronize(device)
    return clock() - start


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def medians(samples: Mapping[str, Iterable[float]]) -> dict[str, float]:
    """The median of every candidate's samples."""
    return {name: median(values) for name, values in samples.items()}


@dataclass
class Timings:
    """Seconds of every timed call per candidate, in call order: wall clock and process CPU time."""

    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def medians(self, clock: str = "wall") -> dict[str, float]:
        return medians(self.wall if clock == "wall" else self.cpu)


def _rounds(
    candidates: Mapping[str, Candidate],
    repeats: int,
    sample: Callable[[str, Candidate], None],
    alternate: bool = False,
    before_round: Callable[[int], None] | None = None,
    after_round: Callable[[int], None] | None = None,
) -> None:
    names = list(candidates)
    for r in range(repeats):
        if before_round is not None:
            before_round(r)
        for name in names[::-1] if alternate and r % 2 else names:
            sample(name, candidates[name])
        if after_round is not None:
            after_round(r)


def warm_up(candidates: Mapping[str, Candidate], rounds: int) -> None:
    """Untimed calls, interleaved like the timed ones."""
    for _ in range(rounds):
        for fn in candidates.values():
            fn()


def interleaved(
    candidates: Mapping[str, Candidate],
    repeats: int,
    warmup: int = 1,
    device: torch.device | str | None = None,
    *,
    alternate: bool = False,
    before_round: Callable[[int], None] | None = None,
    timer: Callable[[Candidate], float] | None = None,
    log: Callable[[str], None] | None = None,
    label: str = "",
    clock: Clock = time.perf_counter,
    cpu_clock: Clock = time.process_time,
) -> Timings:
    """`warmup` untimed rounds, then `repeats` timed rounds of every candidate in turn.

    `before_round(r)` runs (untimed) before timed round r, e.g. to draw the round's inputs.
    `timer(fn)` replaces the synchronised wall clock for one call (e.g. triton.testing.do_bench,
    which warms up and repeats by itself); `log` gets one line per round."""
    warm_up(candidates, warmup)
    out = Timings({name: [] for name in candidates}, {name: [] for name in candidates})

    def sample(name: str, fn: Candidate) -> None:
        cpu = cpu_clock()
        out.wall[name].append(timer(fn) if timer is not None else timed(fn, device, clock))
        out.cpu[name].append(cpu_clock() - cpu)

    def report(r: int) -> None:
        if log is not None:
            log(f"{label}repeat {r + 1}/{repeats}: " + ", ".join(f"{n} {v[-1]:.4g}s" for n, v in out.wall.items()))

    _rounds(candidates, repeats, sample, alternate, before_round, report)
    return out


# ------------------------------------------------------------------------ stages of a step


@contextmanager
def timed_ranges(
    names: Iterable[str], device: torch.device | str | None = None, clock: Clock = time.perf_counter
) -> Iterator[dict[str, float]]:
    """Seconds spent in the `torch.profiler.record_function` ranges named `names` while open
    (summed over repeated ranges of one name); other ranges are left alone. The ranges must be
    opened as `torch.profiler.record_function(name)`, as the training objectives do."""
    wanted, seconds = set(names), defaultdict(float)
    real = torch.profiler.record_function

    @contextmanager
    def record_function(name: str, args: str | None = None) -> Iterator[None]:
        if name not in wanted:
            with real(name, args):
                yield
            return
        synchronize(device)
        start = clock()
        with real(name, args):
            yield
        synchronize(device)
        seconds[name] += clock() - start

    torch.profiler.record_function = record_function
    try:
        yield seconds
    finally:
        torch.profiler.record_function = real


def interleaved_ranges(
    candidates: Mapping[str, Candidate],
    repeats: int,
    names: Sequence[str],
    device: torch.device | str | None = None,
    clock: Clock = time.perf_counter,
) -> dict[str, dict[str, float]]:
    """Median seconds of every named range per candidate over `repeats` interleaved calls
    (ranges a candidate never opens are left out), in the order of `names`."""
    seen: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in candidates}

    def sample(name: str, fn: Candidate) -> None:
        with timed_ranges(names, device, clock) as seconds:
            fn()
        for stage, value in seconds.items():
            seen[name][stage].append(value)

    _rounds(candidates, repeats, sample)
    return {name: {stage: median(stages[stage]) for stage in names if stage in stages} for name, stages in seen.items()}


# ---------------------------------------------------------------------------------- output


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A Markdown table; `align` has one letter per column, 'l' or 'r' (default: the first
    column left, the others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | Path, record: Any) -> Path:
    """Write `record` (dicts, lists, numbers, strings) as indented JSON, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
