import pytest
import torch

from everest.models.attention import attention, pack_sequences, unpack_sequences, resolve_backend


def reference_attention(q, k, v):
    """Float64 softmax(QK^T / sqrt(d)) V on [B, N, H, Dh]."""
    q, k, v = (t.double().transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
    return (weights @ v).transpose(1, 2)


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("shape", [(1, 7, 1, 8), (2, 33, 4, 16), (3, 50, 6, 64)])
def test_dense_attention_matches_float64(backend, shape):
    g = torch.Generator().manual_seed(sum(shape))
    q, k, v = (torch.randn(*shape, generator=g) for _ in range(3))
    out = attention(q, k, v, backend=backend)
    torch.testing.assert_close(out.double(), reference_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_varlen_attention_attends_within_each_clip():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([5, 11, 2])
    padded = torch.randn(3, 11, 3 * 2 * 8, generator=g)
    packed, cu_seqlens, max_len = pack_sequences(padded, lengths)
    assert packed.shape[0] == int(lengths.sum()) and max_len == 11
    assert cu_seqlens.tolist() == [0, 5, 16, 18]
    qkv = packed.view(-1, 3, 2, 8)
    out = attention(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens=cu_seqlens)
    # Block-diagonal reference: every clip on its own, in float64.
    for b, n in enumerate(lengths.tolist()):
        clip = padded[b, :n].view(1, n, 3, 2, 8)
        expected = reference_attention(clip[:, :, 0], clip[:, :, 1], clip[:, :, 2])[0]
        start = cu_seqlens[b].item()
        torch.testing.assert_close(out[start:start + n].double(), expected, rtol=1e-5, atol=1e-5)
    restored = unpack_sequences(packed, cu_seqlens, 11)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(restored[b, :n], padded[b, :n])
        assert restored[b, n:].abs().sum() == 0


def test_flash_request_on_cpu_fails_clearly():
    q = torch.randn(1, 4, 2, 8)
    with pytest.raises(RuntimeError, match="'flash' was requested but cannot run"):
        attention(q, q, q, backend="flash")


def test_environment_forces_backend(monkeypatch):
    q = torch.randn(1, 4, 2, 8)
    assert resolve_backend("auto", q) == "sdpa"
    monkeypatch.setenv("EVEREST_ATTENTION", "math")
    assert resolve_backend("auto", q) == "math"
    monkeypatch.setenv("EVEREST_ATTENTION", "bogus")
    with pytest.raises(ValueError, match="unknown"):
        resolve_backend("auto", q)
