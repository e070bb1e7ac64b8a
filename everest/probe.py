"""How good is a frozen encoder? Scoring its features with a kNN vote and a linear probe.

Both take features of a labelled train subset and of held-out clips (one row per clip, e.g. the
mean of the encoder's output tokens) and return the held-out top-1 accuracy in percent:

- `knn_accuracy`: cosine similarity to every train clip; the k most similar vote for their
  class with weight exp(similarity / T) (the weighted kNN of the self-supervised literature:
  Wu et al. 2018, DINO; k = 20, T = 0.07 there).
- `linear_probe_accuracy`: ridge regression of {-1, +1} class indicators on the standardised
  features (with an intercept), the class of the largest output predicted. The ridge penalty is
  chosen on the train subset alone, by its exact leave-one-out error over a grid of penalties
  (one eigendecomposition serves them all), so the held-out clips never choose a setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

RIDGE_ALPHAS = tuple(10.0**e for e in range(-3, 6))  # relative to the number of features


def _check(train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor) -> None:
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise ValueError(f"features must be [clips, D] alike; got {tuple(train.shape)} and {tuple(test.shape)}")
    if len(train_labels) != len(train) or len(test_labels) != len(test):
        raise ValueError("one label per clip is needed")
    if len(train) == 0 or len(test) == 0:
        raise ValueError("the probe needs at least one train and one held-out clip")


def knn_predict(
    train: Tensor, train_labels: Tensor, test: Tensor, num_classes: int, k: int = 20, temperature: float = 0.07
) -> Tensor:
    """Class predictions [M] of the temperature-weighted cosine kNN vote."""
    train_unit = torch.nn.functional.normalize(train.double(), dim=1)
    test_unit = torch.nn.functional.normalize(test.double(), dim=1)
    similarity = test_unit @ train_unit.T  # [M, N]
    top, index = similarity.topk(min(k, len(train)), dim=1)
    votes = torch.zeros(len(test), num_classes, dtype=torch.float64)
    votes.scatter_add_(1, train_labels.long()[index], (top / temperature).exp())
    return votes.argmax(dim=1)


def knn_accuracy(
    train: Tensor,
    train_labels: Tensor,
    test: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy (%) of the weighted kNN vote on the held-out clips."""
    _check(train, train_labels, test, test_labels)
    predicted = knn_predict(train, train_labels, test, num_classes, k, temperature)
    return 100.0 * (predicted == test_labels.long()).double().mean().item()


@dataclass
class RidgeProbe:
    """A fitted ridge classifier on standardised features."""

    mean: Tensor
    scale: Tensor
    weight: Tensor  # [D, C]
    bias: Tensor  # [C]
    alpha: float

    def predict(self, features: Tensor) -> Tensor:
        z = (features.double() - self.mean) / self.scale
        return (z @ self.weight + self.bias).argmax(dim=1)


def _indicators(labels: Tensor, num_classes: int) -> Tensor:
    """{-1, +1} class indicators [N, C] (+1 at the clip's class)."""
    y = -torch.ones(len(labels), num_classes, dtype=torch.float64)
    y[torch.arange(len(labels)), labels.long()] = 1.0
    return y


def fit_ridge(
    train: Tensor,
    train_labels: Tensor,
    num_classes: int,
    alpha: float | None = None,
    alphas: tuple[float, ...] = RIDGE_ALPHAS,
) -> RidgeProbe:
    """Ridge on standardised features; `alpha` None chooses it from `alphas` (times the feature
    count) by the exact leave-one-out error on the train clips (ties to the larger penalty)."""
    x = train.double()
    mean, scale = x.mean(dim=0), x.std(dim=0, unbiased=False).clamp_min(1e-12)
    z = (x - mean) / scale
    y = _indicators(train_labels, num_classes)
    y_mean = y.mean(dim=0)
    zc, yc = z - z.mean(dim=0), y - y_mean
    # zc = U S V^T: the hat matrix of penalty a is U diag(s^2 / (s^2 + a)) U^T, plus 1/N for the intercept.
    u, s, vh = torch.linalg.svd(zc, full_matrices=False)
    uty = u.T @ yc
    if alpha is None:
        best = None
        for a in sorted((a * z.shape[1] for a in alphas), reverse=True):
            shrink = s**2 / (s**2 + a)
            fitted = u @ (shrink[:, None] * uty) + y_mean
            leverage = (u**2 * shrink).sum(dim=1) + 1.0 / len(z)
            residual = (y - fitted) / (1.0 - leverage).clamp_min(1e-12)[:, None]
            loo_predicted = (y - residual).argmax(dim=1)
            errors = (loo_predicted != train_labels.long()).sum().item()
            if best is None or errors < best[0]:
                best = (errors, a)
        alpha = best[1]
    else:
        alpha = alpha * z.shape[1]
    weight = vh.T @ ((s / (s**2 + alpha))[:, None] * uty)
    bias = y_mean - z.mean(dim=0) @ weight
    return RidgeProbe(mean, scale, weight, bias, alpha / z.shape[1])


def linear_probe_accuracy(
    train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor, num_classes: int
) -> float:
    """Top-1 accuracy (%) of the ridge probe (penalty chosen on the train clips) on the held-out clips."""
    _check(train, train_labels, test, test_labels)
    probe = fit_ridge(train, train_labels, num_classes)
    return 100.0 * (probe.predict(test) == test_labels.long()).double().mean().item()


def _stack(parts: list[list[tuple[Tensor, Tensor, Tensor]]]) -> tuple[Tensor, Tensor]:
    """Every rank's (features, labels, clip indices) batches -> features and labels in clip order
    (so that the scores do not depend on how the clips were spread over ranks)."""
    batches = [b for part in parts for b in part]
    if not batches:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    features = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    order = torch.cat([b[2] for b in batches]).argsort(stable=True)
    return features[order], labels[order]


def score_probe(train_parts: list, val_parts: list, k: int = 20, temperature: float = 0.07) -> dict[str, float]:
    """`probe_knn_acc1` and `probe_linear_acc1` from the gathered (features, labels, indices) of
    the probe's train clips and of the val clips; {} when either holds no class label (unlabeled
    clips, label -1, are left out; regression targets are not classes)."""
    train, train_labels = _stack(train_parts)
    val, val_labels = _stack(val_parts)
    if train_labels.is_floating_point() or val_labels.is_floating_point() or train_labels.ndim != 1:
        return {}
    train, train_labels = train[train_labels >= 0], train_labels[train_labels >= 0]
    val, val_labels = val[val_labels >= 0], val_labels[val_labels >= 0]
    if len(train) == 0 or len(val) == 0:
        return {}
    classes = int(max(train_labels.max(), val_labels.max())) + 1
    return {
        "probe_knn_acc1": knn_accuracy(train, train_labels, val, val_labels, classes, k, temperature),
        "probe_linear_acc1": linear_probe_accuracy(train, train_labels, val, val_labels, classes),
    }
