"""Which CPU matrix-product backend is faster here, chosen by measurement.

oneDNN ran the model's fp32 products about 2x faster than `F.linear` (MKL) on an AVX-512 AMD
EPYC, and slower on an AVX2-only one. So `auto` measures instead of assuming: for the model's own
(in, out) features at its micro-batch's token count it times the forward, the input gradient and
the weight gradient on each backend (interleaved, medians; `everest.bench.timing`), takes the
faster per dtype, and caches the choice on disk under the CPU's signature (model name, ISA
level and flags, the oneDNN / MKL instruction caps, torch version, threads), so later runs on the
same machine pay nothing. `EVEREST_LINEAR=onednn|torch` or `features.linear_backend` force one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from everest.bench.timing import cpu_flags, cpu_name, isa_level
from everest.files import atomic_write
from everest.models import linear

Shape = tuple[int, int, int]  # (tokens M, in features K, out features N)
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_signature() -> dict[str, object]:
    """What the choice depends on."""
    flags = cpu_flags()
    return {
        "cpu": cpu_name(),
        "isa": isa_level(flags),
        "flags": sorted(flags & set(ISA_FLAGS)),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "mkl_enable_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS", ""),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _products(shapes: Sequence[Shape], dtype: torch.dtype, onednn: bool) -> Callable[[], None]:
    """One pass of the model's products on a backend: forward, input and weight gradient."""
    g = torch.Generator().manual_seed(0)
    tensors = [
        (
            torch.randn(m, k, generator=g).to(dtype).requires_grad_(),
            torch.randn(n, k, generator=g).to(dtype).requires_grad_(),
            torch.randn(m, n, generator=g).to(dtype),
        )
        for m, k, n in shapes
    ]
    op = linear.onednn_linear if onednn else F.linear

    def run() -> None:
        for x, w, grad in tensors:
            x.grad = w.grad = None
            op(x, w, None).backward(grad)

    return run


def measure(shapes: Sequence[Shape], dtype: torch.dtype, repeats: int = 5) -> dict[str, float]:
    """Median seconds of one pass of the model's products on each backend, timed interleaved."""
    from everest.bench.timing import interleaved

    candidates = {"onednn": _products(shapes, dtype, True), "torch": _products(shapes, dtype, False)}
    return interleaved(candidates, repeats, warmup=1, alternate=True).medians()


def cache_path() -> Path:
    root = os.environ.get("EVEREST_CACHE_DIR") or Path.home() / ".cache" / "everest"
    return Path(root) / "linear_backend.json"


def choose(
    model: str,
    shapes: Sequence[Shape],
    dtype: torch.dtype = torch.float32,
    measure_fn: Callable[[Sequence[Shape], torch.dtype], dict[str, float]] = measure,
) -> tuple[str, dict]:
    """(backend, record) for `model`'s products: the cached choice for this CPU signature, model,
    dtype and shapes, or the faster of the two by `measure_fn` (then cached). The record says
    which and why ('cached' or 'measured', the medians)."""
    dtype_name = str(dtype).removeprefix("torch.")
    if not linear.onednn_available(dtype):
        return "torch", {"source": f"oneDNN has no {dtype_name} products in this torch build on this CPU"}
    signature = {
        **cpu_signature(),
        "model": model,
        "dtype": dtype_name,
        "shapes": sorted(shapes),
    }
    key = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]["backend"], {**cache[key], "source": "cached", "cache": str(path)}
    seconds = measure_fn(shapes, dtype)
    chosen = min(seconds, key=seconds.get)
    cache[key] = {"backend": chosen, "seconds": seconds, "signature": signature}
    try:
        atomic_write(path, lambda f: json.dump(cache, f, indent=1))
    except OSError:
        pass  # a read-only home: measure again next time
    return chosen, {**cache[key], "source": "measured", "cache": str(path)}


def model_shapes(module: torch.nn.Module, tokens: int) -> list[Shape]:
    """The distinct (tokens, in, out) products of the model's everest Linear layers."""
    return sorted({(tokens, m.in_features, m.out_features) for m in module.modules() if isinstance(m, linear.Linear)})


def settle(module: torch.nn.Module, model: str, tokens: int, dtype: torch.dtype = torch.float32) -> str:
    """The backend `linear` will use for `dtype` in this process: forced by EVEREST_LINEAR, or
    chosen by measurement (`choose`) when it is 'auto'; returns a one-line account of it."""
    forced = linear.backend()
    if forced != "auto":
        return f"CPU linear backend {forced} (EVEREST_LINEAR)"
    chosen, record = choose(model, model_shapes(module, tokens), dtype)
    linear.set_choice(dtype, chosen)
    seconds = record.get("seconds", {})
    timings = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in seconds.items())
    return (
        f"CPU linear backend {chosen} for {str(dtype).removeprefix('torch.')} on {cpu_signature()['isa']} "
        f"({record['source']}{': ' + timings if timings else ''}; {record.get('cache', '')})"
    )
