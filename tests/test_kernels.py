"""Every Triton kernel equals its torch twin, run through Triton's interpreter on CPU tensors.

Triton fixes at import time whether `@triton.jit` functions (its own library included) are
compiled or interpreted, and the rest of the suite imports triton first. So a normal run holds
one test here, which re-runs this module in a fresh process with TRITON_INTERPRET=1; there the
test classes below are collected (`TRITON_INTERPRET=1 pytest tests/test_kernels.py` runs them
directly). Each test forces the dispatcher to 'triton' or 'torch'.
"""

import os
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import kernels
from kernels import dispatch, gather, motion, topk

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
BF16_ULP = 2.0**-7  # relative spacing of bfloat16 values

if not INTERPRETING:

    @pytest.mark.slow
    def test_kernels_under_triton_interpreter():
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
        assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]


@pytest.fixture
def backend():
    """Set a kernel backend for the test body, then hand the choice back."""
    yield kernels.set_backend
    kernels.set_backend(None)


def layout(tensor: torch.Tensor, kind: str) -> torch.Tensor:
    """The same values as `tensor` [B, N, D] in another memory layout."""
    if kind == "model":  # what PatchEmbed3d hands over: [B, D, N] storage, transposed
        return tensor.transpose(1, 2).contiguous().transpose(1, 2)
    if kind == "strided":  # every other column of a wider buffer
        wide = torch.zeros(*tensor.shape[:-1], 2 * tensor.shape[-1], dtype=tensor.dtype)
        wide[..., ::2] = tensor
        return wide[..., ::2]
    return tensor.clone()


class TestDispatch:
    __test__ = INTERPRETING

    def test_kernels_are_interpreted(self):
        assert dispatch.interpreted()
        for kernel in (
            motion._motion_score_kernel,
            topk._topk_select_kernel,
            gather._gather_kernel,
            gather._scatter_kernel,
        ):
            assert type(kernel).__name__ == "InterpretedFunction"

    def test_backend_choice(self, backend, monkeypatch):
        cpu = torch.zeros(1)
        assert dispatch.backend() == "auto" and not dispatch.uses_triton(cpu)
        monkeypatch.setenv("EVEREST_KERNELS", "triton")
        backend("auto")
        assert dispatch.backend() == "triton" and dispatch.uses_triton(cpu)
        backend("torch")
        assert dispatch.backend() == "torch" and not dispatch.uses_triton(cpu)
        with pytest.raises(ValueError):
            backend("cuda")


# ---------------------------------------------------------------------------------- motion score

MOTION_CASES = [  # B, T, L, D, dtype, layout
    (1, 2, 7, 384, torch.float32, "contiguous"),
    (2, 3, 37, 768, torch.bfloat16, "model"),
    (3, 4, 5, 1280, torch.float32, "strided"),
    (4, 2, 33, 1408, torch.bfloat16, "model"),
    (2, 5, 3, 100, torch.float16, "contiguous"),
]


def motion_float64(emb: torch.Tensor) -> torch.Tensor:
    """DESIGN.md's formula, written out directly, in float64."""
    e = emb.double()
    score = torch.zeros(e.shape[:3], dtype=torch.float64)
    for t in range(1, e.shape[1]):
        score[:, t] = ((e[:, t] - e[:, t - 1]) ** 2).sum(-1).sqrt()
    if e.shape[1] > 1:
        score[:, 0] = score[:, 1]
    return score.flatten(1)


class TestMotionScore:
    __test__ = INTERPRETING

    @pytest.mark.parametrize("batch, slots, positions, width, dtype, kind", MOTION_CASES)
    def test_kernel_matches_twin_and_formula(self, backend, batch, slots, positions, width, dtype, kind):
        tokens = layout(torch.randn(batch, slots * positions, width).to(dtype), kind)
        emb = tokens.unflatten(1, (slots, positions))
        backend("triton")
        fast = kernels.motion_score(emb)
        backend("torch")
        twin = kernels.motion_score(emb)
        assert fast.dtype == twin.dtype == torch.float32 and fast.shape == (batch, slots * positions)
        torch.testing.assert_close(fast, twin, rtol=2e-6, atol=1e-6)
        torch.testing.assert_close(twin.double(), motion_float64(emb), rtol=2e-6, atol=1e-6)

    @pytest.mark.parametrize("name", ["triton", "torch"])
    def test_single_slot_scores_zero(self, backend, name):
        backend(name)
        assert torch.equal(kernels.motion_score(torch.randn(2, 1, 5, 8)), torch.zeros(2, 5))


# ------------------------------------------------------------------------------- top-k selection


def select_slowly(scores, num_kept, num_visible, noise):
    """The documented rule in plain Python: keep by score descending, then lower index; split by
    noise ascending, then lower index."""
    visible, target = [], []
    for row, row_noise in zip(scores.tolist(), noise.tolist()):
        kept = sorted(range(len(row)), key=lambda i: (-row[i], i))[:num_kept]
        ranked = sorted(kept, key=lambda i: (row_noise[i], i))
        visible.append(sorted(ranked[:num_visible]))
        target.append(sorted(ranked[num_visible:]))
    return torch.tensor(visible), torch.tensor(target).reshape(len(visible), -1)


def tied_scores(batch: int, tokens: int) -> torch.Tensor:
    """Scores with many exact ties, negative values and both signed zeros."""
    scores = torch.randint(-3, 4, (batch, tokens)).float() / 2
    scores[:, ::7] = -0.0
    return scores


TOPK_CASES = [  # B, N, K, V
    (1, 1, 1, 1),
    (2, 37, 11, 3),
    (3, 1568, 470, 156),
    (4, 1000, 600, 600),
    (1, 8197, 2459, 819),
]


class TestTopkSelect:
    __test__ = INTERPRETING

    @pytest.mark.parametrize("batch, tokens, num_kept, num_visible", TOPK_CASES)
    @pytest.mark.parametrize("make_scores", [torch.rand, tied_scores], ids=["distinct", "tied"])
    def test_kernel_matches_twin_and_rule(self, backend, batch, tokens, num_kept, num_visible, make_scores):
        scores = make_scores(batch, tokens)
        noise = torch.rand(batch, tokens)
        noise[:, : tokens // 3] = 0.5  # ties in the split too
        backend("triton")
        visible, target = kernels.topk_select(scores, num_kept, num_visible, noise)
        backend("torch")
        visible_twin, target_twin = kernels.topk_select(scores, num_kept, num_visible, noise)
        want_visible, want_target = select_slowly(scores, num_kept, num_visible, noise)
        assert torch.equal(visible, visible_twin) and torch.equal(visible_twin, want_visible)
        if num_kept == num_visible:
            assert target is None and target_twin is None
        else:
            assert torch.equal(target, target_twin) and torch.equal(target_twin, want_target)

    @pytest.mark.parametrize("name", ["triton", "torch"])
    def test_rejects_bad_counts(self, backend, name):
        backend(name)
        with pytest.raises(ValueError):
            kernels.topk_select(torch.rand(1, 10), 5, 6, torch.rand(1, 10))
        with pytest.raises(ValueError):
            kernels.topk_select(torch.rand(1, 10), 5, 2)


# ------------------------------------------------------------------------------ gather / scatter

GATHER_CASES = [  # B, N, K, D, dtype, layout
    (1, 37, 5, 384, torch.float32, "contiguous"),
    (2, 101, 33, 768, torch.bfloat16, "model"),
    (3, 45, 45, 1280, torch.float32, "strided"),
    (4, 29, 7, 1408, torch.bfloat16, "model"),
]


def distinct_index(batch: int, tokens: int, count: int) -> torch.Tensor:
    return torch.stack([torch.randperm(tokens)[:count] for _ in range(batch)])


def rows_of(batch: int) -> torch.Tensor:
    return torch.arange(batch)[:, None]


def gather_by_indexing(tokens, index, pos):
    """Plain torch indexing; the positional add in float32, rounded once."""
    out = tokens[rows_of(tokens.shape[0]), index]
    return out if pos is None else (out.float() + pos[index]).to(tokens.dtype)


class TestGatherScatter:
    __test__ = INTERPRETING

    @pytest.mark.parametrize("batch, tokens, count, width, dtype, kind", GATHER_CASES)
    @pytest.mark.parametrize("with_pos", [False, True], ids=["plain", "pos"])
    def test_gather_and_grads_match_indexing(self, backend, batch, tokens, count, width, dtype, kind, with_pos):
        base = torch.randn(batch, tokens, width).to(dtype)
        index = distinct_index(batch, tokens, count)
        pos = torch.randn(tokens, width) if with_pos else None
        upstream = torch.randn(batch, count, width).to(dtype)

        def run(op):
            tokens_in = layout(base, kind).requires_grad_()
            pos_in = pos.clone().requires_grad_() if with_pos else None
            out = op(tokens_in, index, pos_in)
            out.backward(upstream)
            return out, tokens_in.grad, pos_in.grad if with_pos else None

        want, want_grad, want_grad_pos = run(gather_by_indexing)
        for name in ("triton", "torch"):
            backend(name)
            out, grad, grad_pos = run(kernels.gather_tokens)
            if name == "triton" and with_pos and dtype == torch.bfloat16:
                # The interpreter truncates float32 -> bfloat16; compiled kernels round to nearest.
                torch.testing.assert_close(out, want, rtol=BF16_ULP, atol=0)
            else:
                assert torch.equal(out, want)
            assert torch.equal(grad, want_grad)
            if with_pos:
                torch.testing.assert_close(grad_pos, want_grad_pos, rtol=1e-5, atol=1e-5)

    @pytest.mark.parametrize("batch, tokens, count, width, dtype, kind", GATHER_CASES)
    def test_scatter_and_grads_match_indexing(self, backend, batch, tokens, count, width, dtype, kind):
        base = torch.randn(batch, count, width).to(dtype)
        index = distinct_index(batch, tokens, count)
        upstream = torch.randn(batch, tokens, width).to(dtype)
        want = torch.zeros(batch, tokens, width, dtype=dtype)
        want[rows_of(batch), index] = base
        for name in ("triton", "torch"):
            backend(name)
            src = layout(base, kind).requires_grad_()
            out = kernels.scatter_tokens(src, index, tokens)
            out.backward(upstream)
            assert torch.equal(out, want)
            assert torch.equal(src.grad, upstream[rows_of(batch), index])


# ------------------------------------------------------------------------------------ memory


def storage_ptr(value) -> int | None:
    if isinstance(value, torch.Tensor):
        return value.untyped_storage().data_ptr()
    if isinstance(value, (torch.UntypedStorage, torch.TypedStorage)):
        return value.data_ptr()
    return None


class LargeAllocations(TorchDispatchMode):
    """Records the storage of every op result of at least `limit` elements that is new memory:
    not on the meta device and sharing no storage with the op's arguments (the interpreter
    re-wraps argument storages; that allocates nothing)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.storages: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        known = {storage_ptr(a) for a in args}
        for result in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(result, torch.Tensor) and result.numel() >= self.limit and not result.is_meta:
                if storage_ptr(result) not in known:
                    self.storages.add(result.untyped_storage().data_ptr())
        return out


class TestMemory:
    __test__ = INTERPRETING

    @pytest.mark.parametrize("name", ["triton", "torch"])
    def test_nothing_of_clip_size_but_outputs(self, backend, name):
        """No op allocates more than one slot's worth of elements, outputs (and gradients) aside."""
        batch, slots, positions, width = 2, 4, 50, 384
        one_slot = batch * positions * width
        tokens = layout(torch.randn(batch, slots * positions, width), "model").requires_grad_()
        emb = tokens.detach().unflatten(1, (slots, positions))
        pos = torch.randn(slots * positions, width)
        backend(name)
        scores = kernels.motion_score(emb)
        noise = torch.rand_like(scores)
        visible, _ = kernels.topk_select(scores, 120, 40, noise)
        for op in (
            lambda: kernels.motion_score(emb),
            lambda: kernels.topk_select(scores, 120, 40, noise)[0],
            lambda: kernels.gather_tokens(tokens, visible, pos),
            lambda: kernels.scatter_tokens(tokens[:, :40].detach(), visible, slots * positions),
        ):
            with LargeAllocations(one_slot + 1) as seen:
                out = op()
            assert seen.storages <= {out.untyped_storage().data_ptr()}
        out = kernels.gather_tokens(tokens, visible, pos)
        with LargeAllocations(one_slot + 1) as seen:
            out.backward(torch.randn_like(out))
        assert seen.storages <= {tokens.grad.untyped_storage().data_ptr()}
