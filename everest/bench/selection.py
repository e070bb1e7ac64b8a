"""python -m everest.bench.selection [--backbone vit-s] [--batch 2] [--frames 16] [--size 224]
    [--repeats 3] [--json FILE]

The token selection's share of a CPU pretraining step (formerly `python -m kernels.bench step`).
The step is the training objective (`PretrainObjective`, motion-centric, the default mask ratio
and rho) forward and backward; the selection is the objective's own `select` (motion scores,
top-K, visible/target split) on the same embeddings. The two take turns after one warm-up each
(everest.bench.timing); the table gives their medians and the selection's share of the step.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from everest.bench.timing import describe_device, environment, interleaved, markdown_table, write_json
from everest.config import ConfigError, config_from_dict
from everest.data import to_model_input
from everest.models import PRESETS
from everest.tasks.pretrain import PretrainTask, sample_noise


def selection_share(
    backbone: str = "vit-s", batch: int = 2, frames: int = 16, size: int = 224, repeats: int = 3
) -> dict[str, Any]:
    """Median milliseconds of a pretraining step and of the selection inside it, on the CPU."""
    cfg = config_from_dict({"model": {"backbone": backbone, "input_size": size}, "training": {"num_frames": frames}})
    objective = PretrainTask(cfg).module
    clip = torch.randint(
        0, 256, (batch, frames, size, size, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    video = to_model_input(clip, cfg.data.normalize_mean, cfg.data.normalize_std, "cpu")
    noise = sample_noise(torch.arange(batch), 0, 0, objective.model.spec.num_patches, torch.device("cpu"))
    with torch.no_grad():
        embedded = objective.model.embed(video)

    def step() -> None:
        objective(video, noise)[0].backward()
        objective.zero_grad(set_to_none=True)

    ms = {
        k: 1e3 * v
        for k, v in interleaved({"step": step, "selection": lambda: objective.select(embedded, noise)}, repeats, 1)
        .medians()
        .items()
    }
    return {
        "model": backbone,
        "batch": batch,
        "frames": frames,
        "size": size,
        "threads": torch.get_num_threads(),
        "step_ms": ms["step"],
        "selection_ms": ms["selection"],
        "selection_share_pct": 100 * ms["selection"] / ms["step"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m everest.bench.selection",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backbone", default="vit-s", choices=list(PRESETS))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        r = selection_share(args.backbone, args.batch, args.frames, args.size, args.repeats)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{describe_device('cpu')}, torch {torch.__version__}; {r['model']} pretraining step (forward + backward), "
        f"batch {r['batch']}, {r['frames']}x{r['size']}x{r['size']}; medians of {args.repeats} interleaved runs"
    )
    print(
        markdown_table(
            ["step ms", "selection ms", "selection share %"],
            [[f"{r['step_ms']:.1f}", f"{r['selection_ms']:.2f}", f"{r['selection_share_pct']:.1f}"]],
            "rrr",
        )
    )
    if args.json:
        write_json(args.json, {**environment("cpu"), **r})
    return 0


if __name__ == "__main__":
    sys.exit(main())
