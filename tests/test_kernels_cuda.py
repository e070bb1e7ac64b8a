"""The compiled Triton kernels equal their torch twins on a CUDA device (run where one exists)."""

import pytest
import torch

import kernels
from everest import tokens as sel
from kernels import dispatch, gather, motion, topk

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device (tests/test_kernels.py covers the kernels on CPU)", allow_module_level=True)
CUDA = "cuda"
pytestmark = pytest.mark.gpu


def layout(tensor: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "model":  # the patch embedding's [B, D, N] storage, transposed
        return tensor.transpose(1, 2).contiguous().transpose(1, 2)
    if kind == "strided":
        wide = torch.zeros(*tensor.shape[:-1], 2 * tensor.shape[-1], dtype=tensor.dtype, device=tensor.device)
        wide[..., ::2] = tensor
        return wide[..., ::2]
    return tensor.clone()


def test_auto_dispatch_runs_triton_on_cuda():
    assert dispatch.backend() == "auto" and not dispatch.interpreted()
    assert dispatch.uses_triton(torch.zeros(1, device=CUDA))


@pytest.mark.parametrize(
    "batch, slots, positions, width, dtype, kind",
    [
        (8, 8, 196, 768, torch.bfloat16, "model"),
        (3, 5, 37, 1408, torch.float32, "strided"),
        (2, 8, 196, 384, torch.float16, "contiguous"),
        (1, 16, 49, 1280, torch.bfloat16, "model"),
    ],
)
def test_motion_score(batch, slots, positions, width, dtype, kind):
    tokens = layout(torch.randn(batch, slots * positions, width, device=CUDA).to(dtype), kind)
    emb = tokens.unflatten(1, (slots, positions))
    fast, twin = motion.motion_score_triton(emb), motion.motion_score_torch(emb)
    torch.testing.assert_close(fast, twin, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.cpu(), motion.motion_score_torch(emb.cpu()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "batch, tokens, num_kept, num_visible",
    [
        (8, 1568, 470, 156),
        (4, 1568, 940, 940),
        (2, 8192, 2457, 819),
        (3, 8197, 100, 1),
        (1, 16000, 4800, 1600),
    ],
)
@pytest.mark.parametrize("tied", [False, True])
def test_topk_select(batch, tokens, num_kept, num_visible, tied):
    scores = torch.rand(batch, tokens, device=CUDA)
    if tied:
        scores = (scores * 5).floor() - 2
        scores[:, ::7] = -0.0
    noise = torch.rand(batch, tokens, device=CUDA)
    noise[:, : tokens // 3] = 0.5
    got = topk.topk_select_triton(scores, num_kept, num_visible, noise)
    want = topk.topk_select_torch(scores, num_kept, num_visible, noise)
    want_cpu = topk.topk_select_torch(scores.cpu(), num_kept, num_visible, noise.cpu())
    for g, w, c in zip(got, want, want_cpu):
        assert (g is None) == (w is None) == (c is None)
        if g is not None:
            assert torch.equal(g, w) and torch.equal(g.cpu(), c)


@pytest.mark.parametrize(
    "batch, tokens, count, width, dtype, kind",
    [
        (8, 1568, 156, 768, torch.bfloat16, "model"),
        (2, 101, 33, 1408, torch.float32, "strided"),
        (3, 1568, 314, 1536, torch.bfloat16, "contiguous"),
        (4, 37, 37, 1280, torch.float16, "model"),
    ],
)
@pytest.mark.parametrize("with_pos", [False, True])
def test_gather_scatter_and_grads(batch, tokens, count, width, dtype, kind, with_pos):
    base = torch.randn(batch, tokens, width, device=CUDA).to(dtype)
    index = torch.stack([torch.randperm(tokens, device=CUDA)[:count] for _ in range(batch)])
    pos = torch.randn(tokens, width, device=CUDA) if with_pos else None
    upstream = torch.randn(batch, count, width, device=CUDA).to(dtype)
    results = []
    for name in ("triton", "torch"):
        kernels.set_backend(name)
        try:
            tokens_in = layout(base, kind).requires_grad_()
            pos_in = pos.clone().requires_grad_() if with_pos else None
            out = kernels.gather_tokens(tokens_in, index, pos_in)
            out.backward(upstream)
            back = kernels.scatter_tokens(out.detach(), index, tokens)
            results.append((out, tokens_in.grad, back, pos_in.grad if with_pos else None))
        finally:
            kernels.set_backend(None)
    (out, grad, back, grad_pos), (out_t, grad_t, back_t, grad_pos_t) = results
    assert torch.equal(out, out_t) and torch.equal(grad, grad_t) and torch.equal(back, back_t)
    if with_pos:
        torch.testing.assert_close(grad_pos, grad_pos_t, rtol=1e-5, atol=1e-5)


def test_selection_on_cuda_equals_selection_on_cpu():
    scores = torch.rand(4, 1568)
    on_cpu = sel.motion_centric(scores, 0.7, 0.9, torch.Generator().manual_seed(5))
    on_cuda = sel.motion_centric(scores.to(CUDA), 0.7, 0.9, torch.Generator().manual_seed(5))
    assert torch.equal(on_cuda.visible.cpu(), on_cpu.visible)
    assert torch.equal(on_cuda.target.cpu(), on_cpu.target)
    assert torch.equal(sel.mcm(scores.to(CUDA), 0.4).visible.cpu(), sel.mcm(scores, 0.4).visible)


def test_kernels_allocate_only_their_outputs():
    batch, slots, positions, width = 8, 8, 196, 768
    tokens = layout(torch.randn(batch, slots * positions, width, device=CUDA).bfloat16(), "model")
    emb = tokens.unflatten(1, (slots, positions))
    pos = torch.randn(slots * positions, width, device=CUDA)
    scores = motion.motion_score_triton(emb)
    noise = torch.rand_like(scores)
    visible, _ = topk.topk_select_triton(scores, 470, 156, noise)
    for op in (
        lambda: motion.motion_score_triton(emb),
        lambda: topk.topk_select_triton(scores, 470, 156, noise),
        lambda: gather.gather_triton(tokens, visible, pos),
        lambda: gather.scatter_triton(tokens[:, :156], visible, torch.zeros_like(tokens)),
    ):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = op()
        torch.cuda.synchronize()
        outputs = sum(
            t.untyped_storage().nbytes() for t in (out if isinstance(out, tuple) else (out,)) if t is not None
        )
        assert torch.cuda.max_memory_allocated() - base <= outputs + 4096
        del out
