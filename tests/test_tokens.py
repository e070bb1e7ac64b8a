"""Token selection gives exactly the sets of the published procedure, reproducibly."""

import pytest
import torch

from everest import tokens as sel
from everest.config import config_from_dict, token_counts
from everest.models import PretrainAutoencoder, spec_for


def published_importance(emb: torch.Tensor) -> torch.Tensor:
    """The published scoring, from DESIGN.md, in float64: distance of each slot to the next,
    the first distance repeated for slot 0."""
    x = emb.double()
    distance = torch.linalg.vector_norm(x[:, :-1] - x[:, 1:], dim=3)
    return torch.cat([distance[:, 0], distance.flatten(1)], dim=1)


def published_top(importance: torch.Tensor, count: int) -> list[set[int]]:
    """The published descending sort; ties ordered by token index (our documented rule)."""
    order = torch.sort(importance, dim=1, descending=True, stable=True).indices
    return [set(row[:count].tolist()) for row in order]


def moving_square_video(frames: int = 8, size: int = 64, seed: int = 0) -> torch.Tensor:
    """[1, 3, F, H, W]: a fixed random background and a bright square moving right."""
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(1, 3, 1, size, size, generator=g).repeat(1, 1, frames, 1, 1) * 0.2
    for f in range(frames):
        video[:, :, f, 20:36, 4 + 4 * f : 20 + 4 * f] = 1.0
    return video


def rows_as_sets(index: torch.Tensor) -> list[set[int]]:
    return [set(row.tolist()) for row in index]


def check_groups(selection: sel.Selection, num_tokens: int) -> None:
    """int64, in range, ascending within each group, and the groups disjoint."""
    groups = [selection.visible] + ([selection.target] if selection.target is not None else [])
    for group in groups:
        assert group.dtype == torch.int64
        assert int(group.min()) >= 0 and int(group.max()) < num_tokens
        assert bool((group[:, 1:] > group[:, :-1]).all())
    if selection.target is not None:
        for vis, tgt in zip(rows_as_sets(selection.visible), rows_as_sets(selection.target)):
            assert not vis & tgt


def test_counts_truncate_like_the_published_code():
    cfg = config_from_dict({})
    counts = token_counts(cfg)
    assert (counts["tokens"], counts["kept"], counts["visible"], counts["mcm_kept"]) == (1568, 470, 156, 940)
    scores = torch.rand(2, 1568)
    pre = sel.motion_centric(scores, 0.7, 0.9, torch.Generator().manual_seed(0))
    assert pre.visible.shape == (2, 156) and pre.target.shape == (2, 470 - 156)
    assert sel.mcm(scores, 0.4).visible.shape == (2, 940)


@pytest.mark.parametrize("slots, positions, width", [(8, 196, 24), (3, 12, 16), (5, 35, 8)])
def test_motion_scores_follow_the_formula_for_any_grid(slots, positions, width):
    emb = torch.randn(3, slots, positions, width)
    scores = sel.motion_scores(emb)
    assert scores.dtype == torch.float32 and scores.shape == (3, slots * positions)
    torch.testing.assert_close(scores.double(), published_importance(emb), rtol=2e-6, atol=1e-6)
    assert torch.equal(scores[:, :positions], scores[:, positions : 2 * positions])


def changed_tokens(video: torch.Tensor, spec) -> list[set[int]]:
    """Tokens whose pixel tubelet differs from the same position one slot earlier (slot 0
    counts as changed when slot 1 is): the tokens motion scoring must rank first."""
    slots, rows, cols = spec.grid
    tubes = video.unfold(2, spec.tubelet_size, spec.tubelet_size)
    tubes = tubes.unfold(3, spec.patch_size, spec.patch_size).unfold(4, spec.patch_size, spec.patch_size)
    tubes = tubes.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(video.shape[0], slots, rows * cols, -1)
    changed = (tubes[:, 1:] != tubes[:, :-1]).any(-1)
    changed = torch.cat([changed[:, :1], changed], dim=1).flatten(1)
    return [set(row.nonzero().flatten().tolist()) for row in changed]


def test_selected_sets_equal_the_published_procedure():
    spec = spec_for("vit-s", input_size=64, num_frames=8)
    model = PretrainAutoencoder(spec).eval()
    video = torch.cat([moving_square_video(seed=0), moving_square_video(seed=1).flip(-1)])
    with torch.no_grad():
        tokens = model.embed(video)
    grid = spec.grid
    importance = published_importance(tokens.unflatten(1, (grid[0], -1)))
    num_tokens = tokens.shape[1]
    kept, visible = int((1 - 0.7) * num_tokens), int((1 - 0.9) * num_tokens)

    fine = sel.select_for_finetuning(tokens, grid, mcm_ratio=0.4)
    assert fine.target is None
    assert rows_as_sets(fine.visible) == published_top(importance, int((1 - 0.4) * num_tokens))

    seed = 7
    pre = sel.select_for_pretraining(tokens, grid, "motion-centric", 0.9, 0.7, torch.Generator().manual_seed(seed))
    check_groups(pre, num_tokens)
    assert pre.scores is not None and pre.scores.shape == (2, num_tokens)
    union = [v | t for v, t in zip(rows_as_sets(pre.visible), rows_as_sets(pre.target))]
    assert union == published_top(importance, kept)
    # The split: the V kept tokens with the smallest per-token draw of the same generator.
    noise = torch.rand(tokens.shape[:2], generator=torch.Generator().manual_seed(seed))
    for row, kept_set in enumerate(union):
        ranked = sorted(kept_set, key=lambda i: (noise[row, i].item(), i))
        assert set(pre.visible[row].tolist()) == set(ranked[:visible])
    # Motion is what is kept: every token the moving square changed (static ones score 0).
    for moved, kept_set in zip(changed_tokens(video, spec), union):
        assert 0 < len(moved) <= kept and moved <= kept_set


def test_shuffle_is_uniform_over_the_kept_tokens():
    scores = torch.linspace(0, 1, 50).repeat(4000, 1)
    pre = sel.motion_centric(scores, rho=0.6, mask_ratio=0.9, generator=torch.Generator().manual_seed(1))
    kept = torch.arange(30, 50)
    counts = torch.zeros(50).index_add_(0, pre.visible.flatten(), torch.ones(pre.visible.numel()))
    assert counts[:30].sum() == 0
    frequency = counts[kept] / 4000
    visible = int((1 - 0.9) * 50)  # 4: (1 - 0.9) * 50 is 4.999... in float arithmetic
    assert pre.visible.shape[1] == visible
    assert torch.allclose(frequency, torch.full_like(frequency, visible / 20), atol=0.03)


def test_seeded_generators_reproduce_every_strategy():
    tokens = torch.randn(2, 4 * 9, 8)
    grid = (4, 3, 3)
    for mask_type in ("motion-centric", "random", "tube"):
        runs = [
            sel.select_for_pretraining(tokens, grid, mask_type, 0.75, 0.5, torch.Generator().manual_seed(s))
            for s in (3, 3, 4)
        ]
        assert torch.equal(runs[0].visible, runs[1].visible) and torch.equal(runs[0].target, runs[1].target)
        assert not torch.equal(runs[0].visible, runs[2].visible)


def test_random_and_tube_count_like_videomae():
    grid = (8, 14, 14)
    tokens = torch.zeros(3, 1568, 4)
    random = sel.select_for_pretraining(tokens, grid, "random", 0.9, 0.7, torch.Generator().manual_seed(0))
    check_groups(random, 1568)
    assert random.visible.shape == (3, 1568 - int(0.9 * 1568)) and random.target.shape == (3, int(0.9 * 1568))
    tube = sel.select_for_pretraining(tokens, grid, "tube", 0.9, 0.7, torch.Generator().manual_seed(0))
    check_groups(tube, 1568)
    per_slot = 196 - int(0.9 * 196)
    assert tube.visible.shape == (3, 8 * per_slot) and tube.target.shape == (3, 8 * (196 - per_slot))
    spatial = tube.visible.view(3, 8, per_slot) % 196
    assert torch.equal(spatial, spatial[:, :1].expand_as(spatial))
    assert tube.scores is None and random.scores is None


def test_selection_counts_equal_the_configs_and_feed_the_model():
    cfg = config_from_dict({"model": {"backbone": "vit-s", "input_size": 64}, "training": {"num_frames": 4}})
    spec = spec_for("vit-s", input_size=64, num_frames=4, depth=1, decoder_depth=1)
    model = PretrainAutoencoder(spec)
    video = torch.randn(2, 3, 4, 64, 64)
    tokens = model.embed(video)
    m = cfg.model
    chosen = sel.select_for_pretraining(
        tokens.detach(),
        spec.grid,
        m.mask_type,
        m.mask_ratio,
        m.motion_centric_masking_ratio,
        torch.Generator().manual_seed(0),
    )
    counts = token_counts(cfg)
    assert chosen.visible.shape == (2, counts["visible"]) and chosen.target.shape == (2, counts["targets"])
    pixels = model.forward_embedded(tokens, chosen.visible, chosen.target)
    assert pixels.shape == (2, counts["targets"], spec.patch_pixels)
    pixels.mean().backward()
    assert model.encoder.patch_embed.proj.weight.grad is not None


def test_impossible_ratios_are_refused():
    with pytest.raises(ValueError):
        sel.motion_centric(torch.rand(1, 100), rho=0.95, mask_ratio=0.9)
    with pytest.raises(ValueError):
        sel.select_for_pretraining(torch.zeros(1, 10, 2), (2, 1, 5), "blocks", 0.9, 0.7)
    with pytest.raises(ValueError):
        sel.select_for_finetuning(torch.zeros(1, 10, 2), (3, 1, 5), 0.4)


def test_given_noise_keys_replace_the_generator():
    tokens = torch.randn(2, 4 * 9, 8)
    keys = torch.rand(2, 36, generator=torch.Generator().manual_seed(9))
    for mask_type in ("motion-centric", "random", "tube"):
        drawn = sel.select_for_pretraining(tokens, (4, 3, 3), mask_type, 0.75, 0.5, torch.Generator().manual_seed(9))
        given = sel.select_for_pretraining(tokens, (4, 3, 3), mask_type, 0.75, 0.5, noise=keys)
        if mask_type != "tube":  # tube draws [B, L] from the generator but reads the first L keys
            assert torch.equal(drawn.visible, given.visible) and torch.equal(drawn.target, given.target)
        check_groups(given, 36)
