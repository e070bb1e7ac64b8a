"""Each fast path of a training step equals its plain reference, forward and gradients, on
fresh random inputs: oneDNN linears vs F.linear, the linear patch embedding vs its Conv3d,
target pixels of the target tubelets only vs the whole clip patchified."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from everest.models import PretrainAutoencoder, VideoClassifier, spec_for
from everest.models.linear import Linear, linear, onednn_available, uses_onednn
from everest.models.vit import PatchEmbed3d, make_blocks, run_blocks
from everest.patches import denormalize_video, gather_patches, patchify, pixel_targets

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def _grads(fn, *tensors):
    out = fn(*tensors)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out.float() * weights).sum().backward()
    return out.detach(), [t.grad.clone() for t in tensors if t.grad is not None]


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "shape,fan_in,fan_out,bias", [((3, 37), 19, 53, True), ((2, 5, 33), 70, 9, False), ((1, 7, 3, 16), 16, 48, True)]
)
def test_onednn_linear_equals_f_linear(dtype, shape, fan_in, fan_out, bias):
    g = torch.Generator().manual_seed(sum(shape) + fan_in)
    x = torch.randn(*shape[:-1], fan_in, generator=g).to(dtype)
    w = (torch.randn(fan_out, fan_in, generator=g) / fan_in**0.5).to(dtype)
    b = torch.randn(fan_out, generator=g).to(dtype) if bias else None
    if not onednn_available(dtype):
        pytest.skip(f"oneDNN has no {dtype} products on this CPU")
    assert uses_onednn(x, w)
    leaves = [t.clone().requires_grad_() for t in (x, w, b) if t is not None]
    ours, our_grads = _grads(lambda *t: linear(*t), *leaves)
    refs = [t.detach().clone().requires_grad_() for t in leaves]  # F.linear in the same dtype
    ref, ref_grads = _grads(lambda *t: F.linear(*t), *refs)
    for a, r in zip([ours, *our_grads], [ref, *ref_grads], strict=True):
        assert a.dtype == r.dtype
        scale = r.float().abs().max().item()
        torch.testing.assert_close(a.float(), r.float(), rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale)


def test_bf16_linear_runs_on_every_cpu():
    """bf16 takes oneDNN only where the CPU has its bf16 products (AVX-512 / AMX), F.linear on
    an AVX2-only one, and equals a float64 product either way."""
    g = torch.Generator().manual_seed(7)
    x, w, b = torch.randn(5, 24, generator=g), torch.randn(12, 24, generator=g) / 5, torch.randn(12, generator=g)
    xb, wb, bb = (t.to(torch.bfloat16) for t in (x, w, b))
    assert uses_onednn(xb, wb) == (onednn_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    out = linear(xb, wb, bb)
    ref = F.linear(xb.double(), wb.double(), bb.double())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())


def test_linear_falls_back_outside_its_domain(monkeypatch):
    layer = Linear(8, 4)
    x = torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not uses_onednn(x, layer.weight)
        assert layer(x).dtype == torch.bfloat16  # autocast applies as to any nn.Linear
    monkeypatch.setenv("EVEREST_LINEAR", "torch")
    assert not uses_onednn(x, layer.weight)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    monkeypatch.setenv("EVEREST_LINEAR", "fastest")
    with pytest.raises(ValueError, match="EVEREST_LINEAR='fastest'"):
        layer(x)


def test_linear_patch_embedding_equals_conv3d():
    spec = spec_for("vit-s", num_frames=6, input_size=48, embed_dim=40)
    embed = PatchEmbed3d(spec)
    torch.nn.init.normal_(embed.proj.bias)
    video = torch.randn(2, 3, 6, 48, 48)
    ours = embed(video)
    (ours * torch.linspace(-1, 1, ours.numel()).view_as(ours)).sum().backward()
    grads = [p.grad.clone() for p in embed.parameters()]
    embed.zero_grad()
    ref = embed.conv_reference(video)
    (ref * torch.linspace(-1, 1, ref.numel()).view_as(ref)).sum().backward()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for a, p in zip(grads, embed.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("task", ["pretrain", "finetune"])
def test_embedding_the_chosen_tokens_alone_equals_choosing_after_embedding_all(task):
    """A step embeds only the tokens it keeps (with gradient); the same step embedding every
    token and then choosing must give the same loss and gradients (float64)."""
    spec = spec_for("vit-s", depth=1, decoder_depth=1, embed_dim=32, num_heads=2, decoder_embed_dim=16,
                    decoder_num_heads=2, num_frames=4, input_size=32, patch_size=8)  # fmt: skip
    g = torch.Generator().manual_seed(11)
    video = torch.randn(2, 3, 4, 32, 32, generator=g, dtype=torch.float64)
    keep = torch.stack([torch.randperm(32, generator=g)[:9] for _ in range(2)])
    if task == "pretrain":
        model = PretrainAutoencoder(spec).double()
        target = torch.stack([torch.randperm(32, generator=g)[:5] for _ in range(2)])
        pixels = torch.randn(2, 5, spec.patch_pixels, generator=g, dtype=torch.float64)
        chosen = lambda: F.mse_loss(model(video, keep, target), pixels)  # noqa: E731
        after_all = lambda: F.mse_loss(model.forward_embedded(model.embed(video), keep, target), pixels)  # noqa: E731
    else:
        model = VideoClassifier(spec, 5, init_scale=1.0).double()
        labels = torch.tensor([1, 4])
        chosen = lambda: F.cross_entropy(model(video, keep), labels)  # noqa: E731

        def after_all():  # every token embedded, then the kept ones gathered with their positions
            x = model.encoder.encode(model.embed(video), keep, prefix=model.cls_token)
            return F.cross_entropy(model.head(model.fc_norm(x.mean(dim=1))), labels)

    torch.nn.init.normal_(model.encoder.patch_embed.proj.bias)
    loss, grads = _step_grads(model, chosen)
    ref_loss, ref_grads = _step_grads(model, after_all)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-9, atol=0)
    assert grads.keys() == ref_grads.keys() and "encoder.patch_embed.proj.weight" in grads
    for name in grads:  # equal up to float64 rounding (the products sum in another order)
        scale = ref_grads[name].abs().max().item()
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-6, atol=1e-7 * scale, msg=name)


def test_target_tubelets_equal_the_whole_clip_patchified():
    g = torch.Generator().manual_seed(3)
    video = torch.randn(3, 3, 6, 32, 48, generator=g)  # 3 slots x 2 x 3 positions
    index = torch.stack([torch.randperm(18, generator=g)[:7] for _ in range(3)])
    whole = patchify(video, 2, 16)
    assert torch.equal(gather_patches(video, index, 2, 16), whole[torch.arange(3)[:, None], index])
    assert torch.equal(
        gather_patches(video.transpose(3, 4).contiguous().transpose(3, 4), index, 2, 16),
        gather_patches(video, index, 2, 16),
    )  # any strides
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.3, 0.25])
    for normalize in (True, False):
        ref = pixel_targets(denormalize_video(video, mean, std), index, 2, 16, normalize)
        assert torch.equal(pixel_targets(video, index, 2, 16, normalize, mean=mean, std=std), ref)


def _step_grads(model, loss_fn) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@needs_onednn
@pytest.mark.parametrize("task", ["pretrain", "finetune"])
def test_whole_step_equals_the_torch_linear_step(task, monkeypatch):
    spec = spec_for(
        "vit-s",
        depth=2,
        decoder_depth=1,
        embed_dim=64,
        num_heads=4,
        decoder_embed_dim=32,
        decoder_num_heads=2,
        num_frames=4,
        input_size=32,
        attention_backend="sdpa",
    )
    torch.manual_seed(5)
    video = torch.randn(2, 3, 4, 32, 32)
    if task == "pretrain":
        model = PretrainAutoencoder(spec)
        visible, target = torch.tensor([[0, 5, 6], [2, 3, 7]]), torch.tensor([[1, 7], [4, 5]])
        pixels = torch.randn(2, 2, spec.patch_pixels)
        loss_fn = lambda: F.mse_loss(model(video, visible, target), pixels)  # noqa: E731
    else:
        model = VideoClassifier(spec, 5, init_scale=1.0)
        keep, labels = torch.tensor([[0, 3, 4, 6, 7], [1, 2, 3, 5, 6]]), torch.tensor([1, 4])
        loss_fn = lambda: F.cross_entropy(model(video, keep), labels)  # noqa: E731
    loss, grads = _step_grads(model, loss_fn)
    monkeypatch.setenv("EVEREST_LINEAR", "torch")
    ref_loss, ref_grads = _step_grads(model, loss_fn)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_compiled_blocks_equal_eager_blocks():
    """features.compile (VideoViTSpec.compile): torch.compile of every block, names unchanged."""
    spec = spec_for("vit-s", embed_dim=32, num_heads=2, attention_backend="sdpa")
    eager = make_blocks(32, 2, 2, 4.0, spec, 0.0)
    compiled = make_blocks(32, 2, 2, 4.0, spec.with_(compile=True), 0.0)
    compiled.load_state_dict(eager.state_dict())
    assert list(compiled.state_dict()) == list(eager.state_dict())
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(2))
    outs, grads = [], []
    for blocks in (eager, compiled):
        leaf = x.clone().requires_grad_()
        out = run_blocks(blocks, leaf, use_checkpoint=False)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append([leaf.grad, *(p.grad for p in blocks.parameters())])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("slow", ["onednn", "torch"])
def test_auto_picks_the_faster_backend_and_reuses_the_cached_choice(tmp_path, monkeypatch, slow):
    import time

    from everest.models import linear_backend

    monkeypatch.setenv("EVEREST_CACHE_DIR", str(tmp_path))
    real = linear_backend._products

    def products(shapes, dtype, onednn):
        run = real(shapes, dtype, onednn)
        if onednn == (slow == "onednn"):  # this backend made artificially slow
            return lambda: (time.sleep(0.05), run())
        return run

    monkeypatch.setattr(linear_backend, "_products", products)
    shapes = [(64, 48, 96), (64, 96, 48)]
    chosen, record = linear_backend.choose("tiny", shapes, measure_fn=lambda s, d: linear_backend.measure(s, d, 3))
    assert chosen != slow and record["source"] == "measured"
    assert record["seconds"][slow] >= 0.05  # the measurement saw the slow-down (a busy machine only adds)

    def never(*_):
        raise AssertionError("measured again instead of using the cache")

    again, cached = linear_backend.choose("tiny", shapes, measure_fn=never)
    assert again == chosen and cached["source"] == "cached"
    assert (
        linear_backend.choose("tiny", shapes[:1], measure_fn=lambda s, d: {"onednn": 2.0, "torch": 1.0})[0] == "torch"
    )


def test_isa_level_follows_the_instruction_caps(monkeypatch):
    from everest.models.linear_backend import isa_level

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS", raising=False)
    assert isa_level({"avx2", "avx512f"}) == "AVX-512" and isa_level({"avx2"}) == "AVX2"
    assert isa_level({"avx2", "avx512f", "amx_tile"}) == "AMX" and isa_level(set()) == "older"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert isa_level({"avx2", "avx512f"}) == "AVX2"


def test_a_forced_backend_is_used_without_measuring(monkeypatch):
    from everest.models import linear, linear_backend
    from everest.models.linear import Linear

    monkeypatch.setenv("EVEREST_LINEAR", "torch")
    monkeypatch.setattr(linear_backend, "measure", lambda *a: (_ for _ in ()).throw(AssertionError("measured")))
    assert "torch (EVEREST_LINEAR)" in linear_backend.settle(torch.nn.Sequential(Linear(8, 8)), "m", 4)
    x, w = torch.randn(4, 8), torch.randn(8, 8)
    assert not linear.uses_onednn(x, w)
    monkeypatch.setenv("EVEREST_LINEAR", "auto")
    monkeypatch.setattr(linear, "_CHOSEN", {torch.float32: "torch"})
    assert not linear.uses_onednn(x, w) and linear.resolved(torch.float32) == "torch"
