"""Does pretraining pay off? `python -m everest.experiments.transfer [--quick] [--seeds 0 1 2] [--json PATH]`
(`python -m everest.bench.transfer` runs it too).

Runs the real entry points on the built-in "objects" collection (everest/data/builtin/objects.py: 8
classes, few labelled videos, a large unlabeled pool). For every seed:
1. `launch/pretrain.py` twice on the unlabeled pool, with the same model, data, masking ratio and
   epochs (the default config's: mask 0.5, raw-pixel targets): EVEREST (motion-centric selection,
   rho 0.3) and VideoMAE (tube masking, the decoder over every token). Their training FLOPs are
   counted (torch's FlopCounterMode over one step of the real objective, times the clips trained
   on) and their wall time and final pretext_progress (on the validation split) recorded.
2. `launch/finetune.py` three times with the same config and budget: from scratch, from the
   EVEREST encoder and from the VideoMAE encoder. Each keeps its best checkpoint on the validation
   split and reports the multi-view test of that checkpoint on the test split, which neither
   pretraining nor fine-tuning ever reads.
Prints a Markdown table and writes JSON: {"rows": [{"init", "seed", "test_acc1", "pretrain_gflops",
"pretrain_wall_s", "pretext_progress"}, ...], ...}. `--quick` runs seed 0 only.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRETRAIN_CONFIG = "configs/pretrain/default_cpu.yaml"
FINETUNE_CONFIG = "configs/finetune/default_cpu.yaml"
INITS = ("scratch", "everest", "videomae")
MASKING = {"everest": ["model.mask_type=motion-centric"], "videomae": ["model.mask_type=tube"]}


@dataclass
class Row:
    """One fine-tuning result and the pretraining it started from (zeros for scratch)."""

    init: str
    seed: int
    test_acc1: float
    pretrain_gflops: float = 0.0
    pretrain_wall_s: float = 0.0
    pretext_progress: float = 0.0
    finetune_wall_s: float = 0.0
    test_metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Pretraining:
    """What one pretraining run cost and reached."""

    checkpoint: str
    gflops: float
    wall_s: float
    pretext_progress: float
    steps: int


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m everest.experiments.transfer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (pretraining and fine-tuning)")
    parser.add_argument("--quick", action="store_true", help="seed 0 only (about 14 minutes on 2 CPU cores)")
    parser.add_argument("--pretrain-videos", type=int, default=1024, help="unlabeled videos in the pretraining pool")
    parser.add_argument("--pretrain-epochs", type=int, default=24)
    parser.add_argument("--pretrain-config", default=PRETRAIN_CONFIG)
    parser.add_argument("--finetune-config", default=FINETUNE_CONFIG)
    parser.add_argument(
        "--pretrain",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra override for both pretraining runs (repeatable)",
    )
    parser.add_argument(
        "--finetune",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra override for every fine-tuning run (repeatable)",
    )
    parser.add_argument(
        "--work-dir", default="output/transfer", help="run folders go here, one new subfolder per invocation"
    )
    parser.add_argument("--json", default=None, help="write the results here (default: the invocation's folder)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = [0]
    return args


def _run(script: str, config: str, overrides: list[str], log: Path) -> float:
    """Run one entry point to completion (output to `log`); returns its wall time."""
    command = [sys.executable, str(REPO / "launch" / script), "--config", config, *overrides]
    print("$ " + " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"{script} exited with {code}; its output is in {log}")
    return time.perf_counter() - start


def _test_metrics(log_dir: Path) -> dict[str, float]:
    summaries = sorted(log_dir.glob("*/test/summary.json"))
    if not summaries:
        raise SystemExit(f"no test summary under {log_dir}: did the fine-tuning config set a test split?")
    return json.loads(summaries[-1].read_text())["metrics"]


def last_logged(log_text: str, key: str) -> float | None:
    """The last `key=value` an epoch line printed (None when the run never printed it)."""
    values = re.findall(rf"\b{re.escape(key)}=([-+0-9.eE]+)", log_text)
    return float(values[-1]) if values else None


def steps_done(log_text: str) -> int:
    found = re.findall(r"done: (\d+) steps", log_text)
    if not found:
        raise SystemExit("the pretraining log has no 'done: N steps' line")
    return int(found[-1])


def training_gflops_per_clip(config: str, overrides: list[str]) -> float:
    """Counted forward + backward GFLOPs of one clip through the real pretraining objective."""
    import torch

    from everest.config import load_config
    from everest.estimate.flops import count_flops
    from everest.tasks.pretrain import PretrainTask

    cfg = load_config(REPO / config, overrides)
    task = PretrainTask(cfg)
    spec = task.model.spec
    video = torch.randn(1, 3, cfg.training.num_frames, spec.input_size, spec.input_size)
    noise = torch.rand(1, spec.num_patches)

    def step():
        loss, _, _ = task.module(video, noise)
        loss.backward()

    return count_flops(step) / 1e9


def pretrain(args: argparse.Namespace, work: Path, method: str, seed: int) -> Pretraining:
    out = work / f"pretrain_{method}_seed{seed}"
    overrides = [
        f"data.synthetic_dir=./data/shapes{args.pretrain_videos}",
        f"data.synthetic_videos={args.pretrain_videos}",
        f"training.max_epochs={args.pretrain_epochs}",
        f"training.seed={seed}",
        *MASKING[method],
        *args.pretrain,
        f"checkpoint.dir={out / 'ck'}",
        f"logging.log_dir={out / 'logs'}",
        "logging.image_freq=0",
    ]
    log = work / f"pretrain_{method}_seed{seed}.log"
    wall = _run("pretrain.py", args.pretrain_config, overrides, log)
    text = log.read_text()
    steps = steps_done(text)
    from everest.config import load_config

    batch = load_config(REPO / args.pretrain_config, overrides).training.batch_size
    gflops = training_gflops_per_clip(args.pretrain_config, overrides) * steps * batch
    progress = last_logged(text, "pretext_progress")
    if progress is None:
        raise SystemExit(f"{log}: no pretext_progress was logged (does the run validate?)")
    return Pretraining(str(out / "ck"), gflops, wall, progress, steps)


def finetune(args: argparse.Namespace, work: Path, init: str, seed: int, start: Pretraining | None) -> Row:
    name = f"finetune_{init}_seed{seed}"
    out = work / name
    overrides = [
        f"training.seed={seed}",
        *args.finetune,
        f"checkpoint.dir={out / 'ck'}",
        f"logging.log_dir={out / 'logs'}",
    ]
    if start is not None:
        overrides.append(f"model.pretrained_path={start.checkpoint}")
    wall = _run("finetune.py", args.finetune_config, overrides, work / f"{name}.log")
    metrics = _test_metrics(out / "logs")
    row = Row(init, seed, metrics["test_acc1"], finetune_wall_s=wall, test_metrics=metrics)
    if start is not None:
        row.pretrain_gflops, row.pretrain_wall_s, row.pretext_progress = (
            start.gflops,
            start.wall_s,
            start.pretext_progress,
        )
    print(f"  {name}: test_acc1={row.test_acc1:.1f}", flush=True)
    return row


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def markdown(rows: list[Row]) -> str:
    """Per init: test top-1 (mean ± std and per seed), pretraining GFLOPs, wall s, pretext progress."""
    lines = [
        "| init | test top-1 % (mean ± std) | per seed | pretraining GFLOPs | pretraining wall s | pretext_progress |",
        "|---|---|---|---|---|---|",
    ]
    for init in INITS:
        mine = sorted((r for r in rows if r.init == init), key=lambda r: r.seed)
        if not mine:
            continue
        per_seed = ", ".join(f"{r.test_acc1:.1f}" for r in mine)
        mean = {
            key: statistics.mean(getattr(r, key) for r in mine)
            for key in ("pretrain_gflops", "pretrain_wall_s", "pretext_progress")
        }
        lines.append(
            f"| {init} | {_mean_std([r.test_acc1 for r in mine])} | {per_seed} | "
            f"{mean['pretrain_gflops']:.0f} | {mean['pretrain_wall_s']:.0f} | "
            f"{mean['pretext_progress']:.3f} |"
        )
    return "\n".join(lines)


def margins(rows: list[Row]) -> dict[str, float]:
    """EVEREST minus scratch and minus VideoMAE (mean and worst seed), and the FLOPs ratio."""
    by = {(r.init, r.seed): r for r in rows}
    seeds = sorted({r.seed for r in rows if r.init == "everest"})
    out: dict[str, float] = {}
    for other in ("scratch", "videomae"):
        diffs = [by[("everest", s)].test_acc1 - by[(other, s)].test_acc1 for s in seeds if (other, s) in by]
        if diffs:
            out[f"everest_minus_{other}_mean"] = statistics.mean(diffs)
            out[f"everest_minus_{other}_min"] = min(diffs)
    flops = [
        by[("everest", s)].pretrain_gflops / by[("videomae", s)].pretrain_gflops
        for s in seeds
        if ("videomae", s) in by and by[("videomae", s)].pretrain_gflops
    ]
    if flops:
        out["everest_over_videomae_gflops"] = statistics.mean(flops)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from everest.bench.timing import environment, write_json

    work = (REPO / args.work_dir).resolve() / time.strftime("run-%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=False)
    started = time.perf_counter()
    rows: list[Row] = []
    for seed in args.seeds:
        starts = {method: pretrain(args, work, method, seed) for method in ("everest", "videomae")}
        rows.append(finetune(args, work, "scratch", seed, None))
        for method, start in starts.items():
            rows.append(finetune(args, work, method, seed, start))
    total = time.perf_counter() - started
    print(markdown(rows))
    found = margins(rows)
    print(", ".join(f"{k}={v:.3f}" for k, v in found.items()))
    env = environment("cpu")
    print(f"{env['device']}, torch {torch.__version__}; whole experiment {total:.0f} s")
    path = Path(args.json) if args.json else work / "transfer.json"
    record = {
        "rows": [asdict(r) for r in rows],
        "margins": found,
        "wall_s": total,
        **env,
        "seeds": args.seeds,
        "pretrain_config": args.pretrain_config,
        "finetune_config": args.finetune_config,
        "pretrain_overrides": args.pretrain,
        "finetune_overrides": args.finetune,
        "pretrain_videos": args.pretrain_videos,
        "pretrain_epochs": args.pretrain_epochs,
    }
    print(f"wrote {write_json(path, record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
