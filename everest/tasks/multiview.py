"""Multi-view testing: every video is seen as test_num_segment x test_num_crop clips; the
softmax (classification) or the outputs (regression) are averaged over its views. Per-video
predictions go to a CSV and the metrics, computed from those saved predictions, to a JSON.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

from everest.config import Config
from everest.data import build_dataloader, to_model_input
from everest.data.prepare import source_paths
from everest.engine.distributed import DistInfo, gather_objects
from everest.metrics import classification_metrics, classification_sums, regression_metrics, regression_sums
from everest.models import load_classifier
from everest.tasks.finetune import FinetuneObjective


@torch.no_grad()
def predict_views(objective: FinetuneObjective, loader, cfg: Config, device: torch.device) -> dict[int, dict[str, Any]]:
    """index -> {"label": ..., "output": averaged softmax / regression output} for this rank."""
    objective.eval()
    classification = cfg.model.task_type == "classification"
    results: dict[int, dict[str, Any]] = {}
    for batch in loader:
        video = batch["video"]  # [B, V, F, S, S, 3] uint8
        b, v = video.shape[:2]
        clips = to_model_input(
            video.flatten(0, 1), cfg.data.normalize_mean, cfg.data.normalize_std, device, torch.float32
        )
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = objective.outputs(clips).float().view(b, v, -1)
        out = out.softmax(dim=-1).mean(dim=1) if classification else out.mean(dim=1)
        for i, index in enumerate(batch["index"].tolist()):
            results[int(index)] = {"label": batch["label"][i].tolist(), "output": out[i].cpu().tolist()}
    return results


def metrics_from_predictions(predictions: dict[int, dict[str, Any]], task_type: str) -> dict[str, float]:
    """The test metrics, computed directly from the per-video predictions."""
    outputs = torch.tensor([p["output"] for p in predictions.values()])
    labels = torch.tensor([p["label"] for p in predictions.values()])
    if task_type == "classification":
        return classification_metrics(classification_sums(outputs, labels.long()), "test_")
    return regression_metrics(regression_sums(outputs, labels.float()), "test_")


def write_predictions(
    predictions: dict[int, dict[str, Any]], task_type: str, out_dir: Path, paths: dict[int, str] | None = None
) -> dict[str, Any]:
    """predictions.csv (one row per video: its index, source path when known, label and
    prediction) and summary.json (the metrics) in `out_dir`; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = paths or {}
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        if task_type == "classification":
            writer.writerow(["index", "path", "label", "prediction", "confidence", "top5"])
            for index in sorted(predictions):
                probs = torch.tensor(predictions[index]["output"])
                top = probs.topk(min(5, probs.numel()))
                writer.writerow(
                    [
                        index,
                        paths.get(index, ""),
                        predictions[index]["label"],
                        int(top.indices[0]),
                        f"{top.values[0]:.6f}",
                        " ".join(str(int(i)) for i in top.indices),
                    ]
                )
        else:
            dims = len(predictions[next(iter(predictions))]["output"]) if predictions else 0
            writer.writerow(
                ["index", "path"] + [f"label{j}" for j in range(dims)] + [f"prediction{j}" for j in range(dims)]
            )
            for index in sorted(predictions):
                label = predictions[index]["label"]
                label = label if isinstance(label, list) else [label]
                writer.writerow(
                    [index, paths.get(index, "")]
                    + [f"{x:.6g}" for x in label]
                    + [f"{x:.6g}" for x in predictions[index]["output"]]
                )
    summary = {"videos": len(predictions), "metrics": metrics_from_predictions(predictions, task_type)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def evaluate_checkpoint(
    cfg: Config, checkpoint: str | Path, split: str, dist_info: DistInfo, out_dir: Path
) -> dict[str, Any] | None:
    """Multi-view test of a fine-tuned checkpoint; every rank takes part, rank 0 writes and
    returns the summary."""
    model = load_classifier(checkpoint, attention_backend=cfg.model.attention_backend).to(dist_info.device)
    objective = FinetuneObjective(model, cfg).to(dist_info.device)
    loader = build_dataloader(cfg, split, shuffle=False, multiview=True)
    parts = gather_objects(predict_views(objective, loader, cfg, dist_info.device))
    predictions = {index: p for part in parts for index, p in part.items()}
    if not dist_info.is_main:
        return None
    paths = source_paths(loader.dataset.input_dir.path) if loader.dataset.input_dir.path else {}
    summary = {"checkpoint": str(checkpoint), **write_predictions(predictions, cfg.model.task_type, out_dir, paths)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))  # says which checkpoint was scored
    return summary
