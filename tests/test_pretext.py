"""Pretext-progress diagnostics: trivial-predictor losses, progress, collapse cosine, the warning."""

import itertools

import pytest
import torch

from everest import pretext
from everest.patches import patchify, pixel_targets

TUBELET, PATCH = 2, 4
GRID = (3, 2, 2)  # slots, rows, columns -> 12 tokens of 2x4x4 pixels x 3 channels
POSITIONS = GRID[1] * GRID[2]


def _video(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, GRID[0] * TUBELET, GRID[1] * PATCH, GRID[2] * PATCH, generator=g)


def _split(batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.randperm(12, generator=g) for _ in range(batch)])
    return order[:, :4].sort(dim=1).values, order[:, 4:10].sort(dim=1).values


def test_constant_predictor_scores_zero_and_perfect_scores_one_raw():
    video = _video()
    visible, target = _split()
    truth = pixel_targets(video, target, TUBELET, PATCH, normalize=False)
    base = pretext.trivial_losses(video, truth, visible, target, TUBELET, PATCH, POSITIONS, normalized=False)
    # Independently: the constant is each clip's per-channel mean over its visible pixels.
    patches = patchify(video, TUBELET, PATCH)  # [B, N, P, C]
    expected = []
    for b in range(video.shape[0]):
        colour = patches[b, visible[b]].reshape(-1, 3).mean(dim=0)
        constant_pred = colour.expand(len(target[b]), TUBELET * PATCH * PATCH, 3).reshape(len(target[b]), -1)
        expected.append(((constant_pred - truth[b]) ** 2).mean())
    torch.testing.assert_close(base["constant"], torch.stack(expected))
    constant_loss = base["constant"].mean().item()
    assert pretext.pretext_progress(constant_loss, constant_loss) == pytest.approx(0.0)
    assert pretext.pretext_progress(0.0, constant_loss) == pytest.approx(1.0)
    assert pretext.pretext_progress(constant_loss / 4, constant_loss) == pytest.approx(0.75)


def test_zeros_baseline_is_the_mean_square_of_normalised_targets():
    video = _video()
    visible, target = _split()
    truth = pixel_targets(video, target, TUBELET, PATCH, normalize=True)
    base = pretext.trivial_losses(video, truth, visible, target, TUBELET, PATCH, POSITIONS, normalized=True)
    p = TUBELET * PATCH * PATCH
    # unbiased per-patch std: the mean square of a normalised patch is (P - 1) / P (up to eps)
    torch.testing.assert_close(base["zeros"], torch.full((2,), (p - 1) / p), atol=1e-4, rtol=0)
    assert pretext.baseline_name(True) == "zeros" and pretext.baseline_name(False) == "constant"


def test_copy_takes_the_nearest_visible_slot_at_the_same_position():
    video = _video(batch=1, seed=3)
    # position 0 visible in slots 0 and 2; target at slot 1 ties -> the earlier slot (0);
    # position 1: target at slot 2, visible at slot 0 only; position 3: target, never visible.
    visible = torch.tensor([[0 * POSITIONS + 0, 2 * POSITIONS + 0, 0 * POSITIONS + 1]])
    target = torch.tensor([[1 * POSITIONS + 0, 2 * POSITIONS + 1, 1 * POSITIONS + 3]])
    truth = pixel_targets(video, target, TUBELET, PATCH, normalize=False)
    patches = patchify(video, TUBELET, PATCH).flatten(2)[0]  # [N, P*C]
    colour = patchify(video, TUBELET, PATCH)[0, visible[0]].reshape(-1, 3).mean(dim=0)
    constant = colour.repeat(TUBELET * PATCH * PATCH)
    expected_pred = torch.stack([patches[0], patches[1], constant])
    expected = ((expected_pred - truth[0]) ** 2).mean()
    base = pretext.trivial_losses(video, truth, visible, target, TUBELET, PATCH, POSITIONS, normalized=False)
    torch.testing.assert_close(base["copy"][0], expected)


def test_copy_is_exact_on_a_static_video():
    frame = torch.rand(1, 3, 1, GRID[1] * PATCH, GRID[2] * PATCH, generator=torch.Generator().manual_seed(5))
    video = frame.expand(-1, -1, GRID[0] * TUBELET, -1, -1).contiguous()
    visible = torch.arange(POSITIONS).unsqueeze(0)  # all of slot 0
    target = torch.arange(POSITIONS, 3 * POSITIONS).unsqueeze(0)
    truth = pixel_targets(video, target, TUBELET, PATCH, normalize=False)
    base = pretext.trivial_losses(video, truth, visible, target, TUBELET, PATCH, POSITIONS, normalized=False)
    assert base["copy"].item() == pytest.approx(0.0, abs=1e-12)
    assert base["constant"].item() > 0.01


def _pairwise_cosine(tokens):
    out = []
    for clip in tokens:
        values = [
            torch.nn.functional.cosine_similarity(clip[i], clip[j], dim=0)
            for i, j in itertools.permutations(range(len(clip)), 2)
        ]
        out.append(torch.stack(values).mean())
    return torch.stack(out)


def test_token_cosine_on_constructed_token_sets():
    g = torch.Generator().manual_seed(7)
    common = torch.randn(1, 1, 16, generator=g)
    collapsed = common * torch.rand(2, 9, 1, generator=g).add(0.5)  # one direction, several lengths
    torch.testing.assert_close(pretext.token_cosine(collapsed), torch.ones(2))
    orthogonal = torch.eye(8).unsqueeze(0) * 3.0
    torch.testing.assert_close(pretext.token_cosine(orthogonal), torch.zeros(1), atol=1e-6, rtol=0)
    random_tokens = torch.randn(3, 10, 16, generator=g)
    torch.testing.assert_close(pretext.token_cosine(random_tokens), _pairwise_cosine(random_tokens), atol=1e-5, rtol=0)
    assert pretext.token_cosine(collapsed + 0.05 * torch.randn(2, 9, 16, generator=g)).min() > 0.9


def test_progress_warning_fires_once_when_stuck_and_not_when_learning():
    messages = []
    watch = pretext.ProgressWatch(after_share=0.3, threshold=0.02, total_epochs=10, log=messages.append)
    assert not watch.update(epoch=1, progress=0.0)  # 2 of 10 epochs: too early to judge
    assert watch.update(epoch=2, progress=0.005)  # 3 of 10: still at the trivial predictor
    assert not watch.update(epoch=3, progress=0.0)  # once only
    assert len(messages) == 1 and "pretext_progress" in messages[0] and "optimizer.lr" in messages[0]
    assert "mask_ratio" in messages[0]
    quiet = []
    learning = pretext.ProgressWatch(after_share=0.3, threshold=0.02, total_epochs=10, log=quiet.append)
    assert not any(learning.update(epoch=e, progress=0.2) for e in range(10))
    off = pretext.ProgressWatch(after_share=0.0, threshold=0.02, total_epochs=10, log=quiet.append)
    assert not any(off.update(epoch=e, progress=0.0) for e in range(10))
    assert quiet == []
