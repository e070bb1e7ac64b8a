"""Metrics as sums, so that all-reducing them gives the exact metric over the whole dataset
(never a mean of per-rank means over unequal shards).

Classification: acc1, acc5 (top-k with k capped at the number of classes).
Regression: mse, mae, r2 (averaged over outputs; a constant target gives 1.0 when predicted
exactly and 0.0 otherwise, scikit-learn's convention, never NaN).
"""

from __future__ import annotations

from torch import Tensor


def classification_sums(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """Correct counts for top-1 / top-5 and the sample count. labels [B] int (or soft [B, C])."""
    if labels.ndim > 1:
        labels = labels.argmax(dim=-1)
    k = min(5, logits.shape[-1])
    top = logits.float().topk(k, dim=-1).indices
    hits = top == labels[:, None]
    return {"correct1": float(hits[:, 0].sum()), "correct5": float(hits.any(dim=1).sum()), "n": float(labels.numel())}


def regression_sums(outputs: Tensor, targets: Tensor) -> dict[str, float]:
    """Per-output sums of squared/absolute error and of y, y^2 (for R^2), plus the count."""
    outputs = outputs.float().reshape(targets.shape[0], -1)
    targets = targets.float().reshape(targets.shape[0], -1)
    err = outputs - targets
    sums = {"n": float(targets.shape[0])}
    for j in range(targets.shape[1]):
        sums[f"sse{j}"] = float(err[:, j].square().sum())
        sums[f"sae{j}"] = float(err[:, j].abs().sum())
        sums[f"sy{j}"] = float(targets[:, j].sum())
        sums[f"syy{j}"] = float(targets[:, j].square().sum())
    return sums


def classification_metrics(sums: dict[str, float], prefix: str) -> dict[str, float]:
    n = max(sums.get("n", 0.0), 1.0)
    return {
        f"{prefix}acc1": 100.0 * sums.get("correct1", 0.0) / n,
        f"{prefix}acc5": 100.0 * sums.get("correct5", 0.0) / n,
    }


def regression_metrics(sums: dict[str, float], prefix: str) -> dict[str, float]:
    n = max(sums.get("n", 0.0), 1.0)
    outputs = sorted(int(k[3:]) for k in sums if k.startswith("sse"))
    mse, mae, r2 = [], [], []
    for j in outputs:
        sse = sums[f"sse{j}"]
        sst = sums[f"syy{j}"] - sums[f"sy{j}"] ** 2 / n
        mse.append(sse / n)
        mae.append(sums[f"sae{j}"] / n)
        if sst <= 1e-12 * max(1.0, sums[f"syy{j}"]):
            r2.append(1.0 if sse <= 1e-12 else 0.0)
        else:
            r2.append(1.0 - sse / sst)
    mean = lambda xs: float(sum(xs) / max(len(xs), 1))  # noqa: E731
    return {f"{prefix}mse": mean(mse), f"{prefix}mae": mean(mae), f"{prefix}r2": mean(r2)}


def add_sums(total: dict[str, float], part: dict[str, float]) -> dict[str, float]:
    for key, value in part.items():
        total[key] = total.get(key, 0.0) + value
    return total


def reduce_sums(sums: dict[str, float]) -> dict[str, float]:
    """Add up per-rank dicts of sums. Ranks may hold different keys (a rank whose shard of a
    small validation set is empty has none), so the dicts are gathered, not all-reduced."""
    from everest.engine.distributed import gather_objects

    total: dict[str, float] = {}
    for part in gather_objects(sums):
        add_sums(total, part)
    return total
