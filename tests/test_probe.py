"""The representation probe equals independent implementations (scikit-learn, brute force) on
random features."""

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeClassifier
from sklearn.neighbors import KNeighborsClassifier

from everest.probe import RIDGE_ALPHAS, fit_ridge, knn_accuracy, knn_predict, linear_probe_accuracy
from tests.conftest import ROOT, SUBPROCESS_TIMEOUT_S, launcher


def clustered(counts: tuple[int, ...], classes: int, dim: int, spread: float, seed: int):
    """(features, labels) per count: random features around the same random class centres
    (overlapping, so that nothing is perfect)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g)
    parts = []
    for count in counts:
        labels = torch.randint(classes, (count,), generator=g)
        parts.append((centres[labels] + spread * torch.randn(count, dim, generator=g), labels))
    return parts


@pytest.mark.parametrize("k, temperature", [(20, 0.07), (5, 0.5), (1, 1.0)])
def test_knn_equals_scikit_learn(k, temperature):
    (train, train_labels), (test, test_labels) = clustered((300, 200), 10, 32, 2.0, seed=k)
    ours = knn_predict(train, train_labels, test, 10, k, temperature)
    theirs = KNeighborsClassifier(
        n_neighbors=k, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1 - d) / temperature)
    ).fit(train.numpy(), train_labels.numpy())
    expected = theirs.predict(test.numpy())
    assert np.array_equal(ours.numpy(), expected)
    accuracy = knn_accuracy(train, train_labels, test, test_labels, 10, k, temperature)
    assert accuracy == pytest.approx(100 * np.mean(expected == test_labels.numpy()))
    assert 10 < accuracy < 100  # neither chance nor trivially separable


@pytest.mark.parametrize("alpha", [0.01, 1.0, 30.0])
def test_ridge_with_a_fixed_penalty_equals_scikit_learn(alpha):
    (train, train_labels), (test, _) = clustered((150, 100), 6, 40, 2.5, seed=3)
    probe = fit_ridge(train, train_labels, 6, alpha=alpha)
    mean, std = train.double().mean(0), train.double().std(0, unbiased=False)
    z_train, z_test = ((train.double() - mean) / std).numpy(), ((test.double() - mean) / std).numpy()
    reference = RidgeClassifier(alpha=alpha * 40, fit_intercept=True).fit(z_train, train_labels.numpy())
    np.testing.assert_allclose(probe.weight.numpy(), reference.coef_.T, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(probe.bias.numpy(), reference.intercept_, rtol=1e-6, atol=1e-9)
    assert np.array_equal(probe.predict(test).numpy(), reference.predict(z_test))


def test_ridge_penalty_is_the_brute_force_leave_one_out_choice():
    ((train, train_labels),) = clustered((60,), 4, 24, 3.0, seed=7)
    dim = train.shape[1]
    # standardised with all train clips, as the probe does: only the fit leaves clip i out
    z = ((train.double() - train.double().mean(0)) / train.double().std(0, unbiased=False)).numpy()
    errors = {}
    for alpha in RIDGE_ALPHAS:
        wrong = 0
        for i in range(len(train)):
            keep = np.arange(len(train)) != i
            model = RidgeClassifier(alpha=alpha * dim).fit(z[keep], train_labels.numpy()[keep])
            wrong += int(model.predict(z[i : i + 1])[0] != train_labels[i].item())
        errors[alpha] = wrong
    fewest = min(errors.values())
    expected = max(a for a, e in errors.items() if e == fewest)  # ties go to the larger penalty
    assert len(set(errors.values())) > 1  # the grid matters on this data
    assert fit_ridge(train, train_labels, 4).alpha == pytest.approx(expected)


def test_linear_probe_beats_chance_and_refuses_bad_shapes():
    (train, train_labels), (test, test_labels) = clustered((200, 200), 5, 16, 1.0, seed=11)
    assert linear_probe_accuracy(train, train_labels, test, test_labels, 5) > 60
    with pytest.raises(ValueError, match="features must be"):
        linear_probe_accuracy(train, train_labels, test[:, :8], test_labels, 5)
    with pytest.raises(ValueError, match="one label per clip"):
        knn_accuracy(train, train_labels[:-1], test, test_labels, 5)


def _probe_run(tmp: Path, data: Path, name: str, ranks: int, *extra: str) -> dict[str, list[float]]:
    """A short real pretraining run on the built-in digits whose weights hardly move (lr 1e-9):
    the probe figures it printed at step 0 and after its epoch."""
    out = tmp / name
    args = [
        str(ROOT / "launch" / "pretrain.py"),
        "data.synthetic_kind=digits",
        f"data.synthetic_dir={data}",
        "data.synthetic_videos=40",
        "data.synthetic_heldout=30",
        "data.synthetic_probe_videos=20",
        "model.embed_dim=32",
        "model.depth=1",
        "model.num_heads=2",
        "model.decoder_embed_dim=32",
        "model.decoder_depth=1",
        "model.decoder_num_heads=2",
        "model.input_size=64",
        "model.patch_size=16",
        "model.mask_ratio=0.75",
        "model.motion_centric_masking_ratio=0.5",
        "training.num_frames=4",
        "training.frames_to_sample=4",
        "training.temporal_stride=2",
        "training.batch_size=4",
        f"training.val_batch_size={8 // ranks}",
        "training.max_epochs=1",
        "training.num_workers=0",
        "optimizer.lr=1e-9",
        "optimizer.min_lr=0",
        "logging.probe_knn_k=5",
        "training.val_every_n_epochs=1",
        "logging.probe_every_n_epochs=1",
        f"checkpoint.dir={out / 'ck'}",
        f"logging.log_dir={out / 'logs'}",
        *extra,
    ]
    proc = subprocess.run(
        launcher(ranks) + args,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = {}
    for key in ("probe_knn_acc1", "probe_linear_acc1", "probe_knn_gain"):
        found[key] = [float(v) for v in re.findall(rf"\b{key}=([-0-9.e]+)", proc.stdout)]
    return found


@pytest.mark.slow
def test_two_ranks_give_the_probe_figures_of_one(tmp_path: Path):
    one = _probe_run(tmp_path, tmp_path / "data", "one", ranks=1)
    two = _probe_run(tmp_path, tmp_path / "data", "two", ranks=2)
    assert len(one["probe_knn_acc1"]) == 2 and len(one["probe_knn_gain"]) == 1  # step 0, then the epoch
    assert one == two
    # ZeRO-3: the probe's forwards run outside the engine's, so the weights must be gathered there
    sharded = _probe_run(tmp_path, tmp_path / "data", "two_zero3", 2, "training.deepspeed_config=ds_configs/zero3.json")
    assert sharded == one


def test_scores_do_not_depend_on_how_clips_were_spread_over_ranks():
    from everest.probe import score_probe

    (train, train_labels), (val, val_labels) = clustered((60, 40), 3, 8, 1.5, seed=2)
    index_train, index_val = torch.arange(60), torch.arange(40)
    one = score_probe([[(train, train_labels, index_train)]], [[(val, val_labels, index_val)]], k=5)
    split = score_probe(
        [[(train[1::2], train_labels[1::2], index_train[1::2])], [(train[::2], train_labels[::2], index_train[::2])]],
        [[(val[20:], val_labels[20:], index_val[20:])], [(val[:20], val_labels[:20], index_val[:20])]],
        k=5,
    )
    assert one == split and set(one) == {"probe_knn_acc1", "probe_linear_acc1"}
    unlabeled = val_labels.clone()
    unlabeled[:10] = -1  # left out, as if those clips had no label
    left_out = score_probe([[(train, train_labels, index_train)]], [[(val[10:], val_labels[10:], index_val[10:])]], k=5)
    assert score_probe([[(train, train_labels, index_train)]], [[(val, unlabeled, index_val)]], k=5) == left_out
    regression = [[(val, val_labels.float(), index_val)]]
    assert score_probe([[(train, train_labels, index_train)]], regression) == {}
