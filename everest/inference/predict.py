"""Prediction with a fine-tuned model on raw video files (or prepared shards), multi-view
averaged exactly as evaluation averages: the same ClipMaker views (test_num_segment x
test_num_crop), the same FinetuneObjective forward (MCM when the config asks), the same
`predict_views`. Rows are keyed by the video path.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from everest.config import Config
from everest.data.loader import build_dataloader, clip_maker
from everest.inference.sources import VideoSource, open_video
from everest.models.weights import LoadedWeights


class _SourceViews(Dataset):
    """Evaluation's multi-view sample of each source file; a sample that cannot be made is
    {"index", "error"} instead."""

    def __init__(self, sources: Sequence[VideoSource], cfg: Config):
        self.sources = list(sources)
        self.maker = clip_maker(cfg, "test", multiview=True)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> dict[str, Any]:
        source = self.sources[i]
        try:
            video = open_video(source)
            record = {
                "video_id": source.order,
                "num_frames": video.num_frames,
                "label_kind": source.label_kind,
                "label": np.asarray(source.label, dtype=np.float64),
            }
            maker = dataclasses.replace(self.maker, read_frames=lambda _record, indices: video.read(indices))
            return maker(record)
        except Exception as err:  # noqa: BLE001 - one bad video must not stop the others
            return {"index": source.order, "error": getattr(err, "reason", None) or f"{type(err).__name__}: {err}"}


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    good = [s for s in samples if "error" not in s]
    batch = default_collate(good) if good else {}
    batch["failed"] = [(s["index"], s["error"]) for s in samples if "error" in s]
    return batch


def _batches(loader, failed: dict[int, str]) -> Iterator[dict[str, Any]]:
    for batch in loader:
        for index, reason in batch.pop("failed", []):
            failed[int(index)] = reason
        if "video" in batch:
            yield batch


def predict_sources(
    objective, sources: Sequence[VideoSource], cfg: Config, device: torch.device, batch_size: int = 4, workers: int = 0
) -> tuple[dict[int, dict], dict[int, str]]:
    """(order -> {"label", "output"}, order -> reason skipped) for this rank's `sources` (all
    files) or, for a prepared dataset, this rank's litdata shard of it."""
    from everest.tasks.multiview import predict_views

    failed: dict[int, str] = {}
    if sources and sources[0].shard is not None:
        cfg = copy.deepcopy(cfg)
        cfg.data.test_optimized_dir, cfg.data.synthetic = sources[0].shard[0], False
        cfg.training.val_batch_size, cfg.training.num_workers = batch_size, workers
        loader = build_dataloader(cfg, "test", shuffle=False, multiview=True)
    else:
        loader = DataLoader(_SourceViews(sources, cfg), batch_size=batch_size, num_workers=workers, collate_fn=_collate)
    return predict_views(objective, _batches(loader, failed), cfg, device), failed


def class_names(cfg: Config, loaded: LoadedWeights, names_file: str | None, count: int) -> list[str] | None:
    """Class names from `names_file` (one per line, or `index name` / `index,name` lines), a
    Hugging Face config's id2label, or the built-in data; None when nothing names them."""
    if names_file:
        lines = [ln.strip() for ln in Path(names_file).read_text().splitlines() if ln.strip()]
        pairs = [ln.replace(",", " ", 1).split(None, 1) for ln in lines]
        if all(len(p) == 2 and p[0].isdigit() for p in pairs):
            table = {int(i): name.strip() for i, name in pairs}
            names = [table.get(k, str(k)) for k in range(count)]
        else:
            names = lines
        if len(names) < count:
            raise ValueError(f"--class_names {names_file}: {len(names)} names for {count} classes")
        return names[:count]
    id2label = loaded.meta.get("hf_config", {}).get("id2label")
    if id2label and not all(str(v) == f"LABEL_{k}" for k, v in id2label.items()):
        return [str(id2label.get(str(k), k)) for k in range(count)]
    if cfg.data.synthetic and cfg.model.task_type == "classification":
        if cfg.data.synthetic_kind == "objects":
            from everest.data.builtin.objects import CLASSES
        elif cfg.data.synthetic_kind == "digits":
            from everest.data.builtin.digits import CLASSES
        else:
            from everest.data.builtin.synthetic import CLASSES
        if count == len(CLASSES):
            return list(CLASSES)
    return None


def prediction_rows(
    predictions: dict[int, dict], sources: dict[int, VideoSource], task_type: str, names: list[str] | None
) -> tuple[list[str], list[list[Any]]]:
    """CSV header and rows, one per video in input order."""
    rows: list[list[Any]] = []
    if task_type == "classification":
        header = ["path", "label", "prediction", "class", "confidence", "top5", "top5_probs", "top5_classes"]
        for order in sorted(predictions):
            probs = torch.tensor(predictions[order]["output"])
            top = probs.topk(min(5, probs.numel()))
            ids = [int(i) for i in top.indices]
            label = predictions[order]["label"]
            label = "" if label == -1 or label == [] else label
            named = [names[i] for i in ids] if names else [""] * len(ids)
            rows.append(
                [
                    sources[order].path,
                    label,
                    ids[0],
                    named[0],
                    f"{top.values[0]:.6f}",
                    " ".join(map(str, ids)),
                    " ".join(f"{v:.6f}" for v in top.values.tolist()),
                    " ".join(named) if names else "",
                ]
            )
        return header, rows
    dims = len(next(iter(predictions.values()))["output"]) if predictions else 0
    has_labels = any(np.size(p["label"]) for p in predictions.values())
    header = (
        ["path"] + ([f"label{j}" for j in range(dims)] if has_labels else []) + [f"prediction{j}" for j in range(dims)]
    )
    for order in sorted(predictions):
        label = np.atleast_1d(np.asarray(predictions[order]["label"], dtype=np.float64)).tolist()
        rows.append(
            [sources[order].path]
            + ([f"{x:.6g}" for x in label] if has_labels else [])
            + [f"{x:.6g}" for x in predictions[order]["output"]]
        )
    return header, rows


def csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
