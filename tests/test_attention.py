import pytest
import torch

from everest.models.attention import attention, resolve_backend


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
