"""What pretraining buys, at every budget: `python -m everest.experiments.transfer [--quick]
[--budget B] [--seeds 0 1 2] [--jobs 2] [--json PATH] [--plot PATH]`.

On the built-in "digits" collection (Moving MNIST from real digits, everest/data/builtin/digits.py:
a pool of 4,000 videos, 500 validation and 500 test videos, split by image) it runs the real
entry points and draws a budget curve, EVEREST against VideoMAE against no pretraining:
1. `launch/pretrain.py` for EVEREST (motion-centric selection) and VideoMAE (tube masking, the
   decoder over every token) for B/4, B/2 and B optimizer steps (seed 0), and B for every other
   seed; each run has its own learning-rate schedule over its own budget. Training FLOPs are
   counted (torch's FlopCounterMode over one step of the real objective, times the clips
   trained on); wall time and the final pretext_progress (validation split) are recorded.
2. The representation probe of every encoder, random initial weights included (budget 0): frozen,
   mean-pooled features of the first 10 and 30 pool videos per class, scored on the test split
   (kNN and the ridge probe of everest.probe).
3. `launch/finetune.py` from every encoder and from scratch on the first 10 pool videos per class:
   the checkpoint chosen on the validation split, its multi-view test on the test split.
Every setting (masking ratios, learning rates, the fine-tuning protocol) comes from the two
configs and PRETRAINED_FINETUNE and was chosen on the validation split
(docs/pretraining-benefit.md); nothing here reads the test split except the final scores. Up to
`--jobs` runs go at once, each on one thread. `--reuse-pretraining RUN_DIR` takes the encoders an
earlier invocation pretrained, with their recorded cost, and pretrains only what it lacks (e.g. a
larger `--budget` for `--methods everest`).

Prints the table, writes JSON (`rows`: one per init, budget and seed, with `init`, `seed`,
`pretrain_steps`, `pretrain_gflops`, `pretrain_wall_s`, `pretext_progress`, `probe_knn_acc1`,
`probe_linear_acc1` (10 labels per class), `probe_linear_acc1_30`, `test_acc1`) and a PNG of
accuracy against pretraining GFLOPs. `--quick`: seed 0, budgets 0 and B/2 only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRETRAIN_CONFIG = "configs/pretrain/default_cpu.yaml"
FINETUNE_CONFIG = "configs/finetune/default_cpu.yaml"
# Each method's masking (the rest from the pretraining config); chosen on the validation split's probe
# (docs/pretraining-benefit.md): EVEREST the config's rho 0.6 / mask 0.85, VideoMAE tube masking at 0.75.
METHODS = {
    "everest": ["model.mask_type=motion-centric"],
    "videomae": ["model.mask_type=tube", "model.mask_ratio=0.75"],
}
INITS = ("scratch", *METHODS)
# Fine-tuning a pretrained encoder keeps 15 % of the tokens (MCM 0.85), fine-tuning from scratch
# half (the config's 0.5): each chosen on the validation split (docs/pretraining-benefit.md).
PRETRAINED_FINETUNE = ["model.mcm_ratio=0.85"]
POOL, HELD_OUT, CLASSES = 4000, 500, 10
POOL_DIR = f"./data/digits{POOL}"
PROBE_LABELS = (10, 30)  # labelled pool videos per class the probe trains on
VALIDATIONS = 5  # per pretraining run (each with the in-run probe on the validation split)


@dataclass
class Row:
    """One encoder (an init at a pretraining budget and seed) and what it scored."""

    init: str
    seed: int
    pretrain_steps: int = 0
    test_acc1: float = 0.0
    pretrain_gflops: float = 0.0
    pretrain_wall_s: float = 0.0
    pretext_progress: float = 0.0
    probe_knn_acc1: float = 0.0
    probe_linear_acc1: float = 0.0
    probe_linear_acc1_30: float = 0.0
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
    parser.add_argument("--budget", type=int, default=5000, help="B: the largest pretraining budget, in steps")
    parser.add_argument("--quick", action="store_true", help="seed 0, budgets 0 and B/2 only")
    parser.add_argument(
        "--methods", nargs="+", choices=list(METHODS), default=list(METHODS), help="pretraining methods to compare"
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    parser.add_argument("--pretrain-config", default=PRETRAIN_CONFIG)
    parser.add_argument("--finetune-config", default=FINETUNE_CONFIG)
    parser.add_argument(
        "--pretrain", action="append", default=[], metavar="KEY=VALUE", help="extra override for every pretraining run"
    )
    parser.add_argument(
        "--finetune", action="append", default=[], metavar="KEY=VALUE", help="extra override for every fine-tuning run"
    )
    parser.add_argument(
        "--work-dir", default="output/transfer", help="run folders go here, one new subfolder per invocation"
    )
    parser.add_argument(
        "--reuse-pretraining",
        default=None,
        metavar="RUN_DIR",
        help="take the pretrained encoders an earlier invocation's folder holds (with their recorded cost and "
        "pretext_progress) instead of pretraining them again; the others are pretrained",
    )
    parser.add_argument("--json", default=None, help="write the results here (default: the invocation's folder)")
    parser.add_argument("--plot", default=None, help="write the curve here (default: the invocation's folder)")
    parser.add_argument("--probe-checkpoint", default=None, help=argparse.SUPPRESS)  # internal: one probe job
    parser.add_argument("--probe-seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--probe-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds[:1]
    if args.budget < 4 or args.jobs < 1:
        parser.error("--budget must be >= 4 and --jobs >= 1")
    return args


def budgets(args: argparse.Namespace, seed: int) -> list[int]:
    """Pretraining budgets (steps) of `seed`: the curve on the first seed, B on the others."""
    if args.quick:
        return [args.budget // 2]
    return [args.budget // 4, args.budget // 2, args.budget] if seed == args.seeds[0] else [args.budget]


def pretrain_overrides(args: argparse.Namespace, seed: int) -> list[str]:
    """The benchmark's pool (the first 30 videos per class also prepared as the probe's split)."""
    return [
        f"data.synthetic_dir={POOL_DIR}",
        f"data.synthetic_videos={POOL}",
        f"data.synthetic_heldout={HELD_OUT}",
        f"data.synthetic_probe_videos={max(PROBE_LABELS) * CLASSES}",
        f"training.seed={seed}",
        *args.pretrain,
    ]


def _run(command: list[str], log: Path) -> float:
    """Run one command to completion on one thread (output to `log`); returns its wall time."""
    print("$ " + " ".join(command[1:]), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise SystemExit(f"{' '.join(command[1:3])} exited with {code}; its output is in {log}")
    return time.perf_counter() - start


def _script(name: str) -> list[str]:
    return [sys.executable, str(REPO / "launch" / name)]


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


def reused_pretraining(run_dir: str, method: str, seed: int, steps: int) -> Pretraining | None:
    """The encoder an earlier invocation pretrained for (method, seed, steps), as its JSON recorded
    it; None when it has none."""
    folder = Path(run_dir)
    record = folder / "transfer.json"
    if not record.is_file():
        raise SystemExit(f"--reuse-pretraining {run_dir}: no transfer.json there")
    rows = json.loads(record.read_text())["rows"]
    found = [r for r in rows if (r["init"], r["seed"], r["pretrain_steps"]) == (method, seed, steps)]
    checkpoint = folder / f"pretrain_{method}_{steps}_seed{seed}" / "ck"
    if not found or not checkpoint.is_dir():
        return None
    row = found[0]
    return Pretraining(str(checkpoint), row["pretrain_gflops"], row["pretrain_wall_s"], row["pretext_progress"], steps)


def pretrain(args: argparse.Namespace, work: Path, method: str, seed: int, steps: int) -> Pretraining:
    """One pretraining run of `steps` optimizer steps (whole epochs of the pool)."""
    from everest.config import load_config

    earlier = reused_pretraining(args.reuse_pretraining, method, seed, steps) if args.reuse_pretraining else None
    if earlier is not None:
        return earlier
    name = f"pretrain_{method}_{steps}_seed{seed}"
    out = work / name
    base = [*pretrain_overrides(args, seed), *METHODS[method]]
    batch = load_config(REPO / args.pretrain_config, base).training.batch_size
    epochs = max(1, round(steps * batch / POOL))
    every = max(1, epochs // VALIDATIONS) if epochs % VALIDATIONS == 0 else epochs
    overrides = [
        *base,
        f"training.max_epochs={epochs}",
        f"training.val_every_n_epochs={every}",
        f"logging.probe_every_n_epochs={every}",
        f"checkpoint.dir={out / 'ck'}",
        f"logging.log_dir={out / 'logs'}",
        "logging.image_freq=0",
        "checkpoint.save_top_k=0",
    ]
    log = work / f"{name}.log"
    wall = _run([*_script("pretrain.py"), "--config", args.pretrain_config, *overrides], log)
    text = log.read_text()
    done = steps_done(text)
    progress = last_logged(text, "pretext_progress")
    if progress is None:
        raise SystemExit(f"{log}: no pretext_progress was logged (does the run validate?)")
    gflops = training_gflops_per_clip(args.pretrain_config, overrides) * done * batch
    return Pretraining(str(out / "ck"), gflops, wall, progress, done)


def probe_scores(config: str, overrides: list[str], checkpoint: str | None, seed: int) -> dict[str, float]:
    """kNN and ridge probe accuracy (%) on the test split, trained on the first 10 and 30 pool
    videos per class, of the encoder in `checkpoint` (None: the initial weights of `seed`)."""
    import torch

    from everest.config import load_config
    from everest.data import build_dataloader, to_model_input
    from everest.models import PretrainAutoencoder, load_pretrain_model
    from everest.models.spec import spec_from_config
    from everest.probe import score_probe
    from everest.tasks.pretrain import PretrainObjective

    cfg = load_config(REPO / config, overrides)
    if checkpoint is None:
        torch.manual_seed(seed)
        model = PretrainAutoencoder(spec_from_config(cfg))
    else:
        model = load_pretrain_model(checkpoint, num_frames=cfg.training.num_frames, input_size=cfg.model.input_size)
    objective = PretrainObjective(model, cfg).eval()

    def features(split: str) -> list:
        out = []
        for batch in build_dataloader(cfg, split, shuffle=False, multiview=False):
            video = to_model_input(
                batch["video"], cfg.data.normalize_mean, cfg.data.normalize_std, torch.device("cpu"), torch.float32
            )
            with torch.no_grad():
                out.append(
                    (objective.features(video), torch.as_tensor(batch["label"]), torch.as_tensor(batch["index"]))
                )
        return out

    labelled, test = features("probe"), features("test")
    scores = {}
    for per_class in PROBE_LABELS:
        subset = [
            (f[i < per_class * CLASSES], y[i < per_class * CLASSES], i[i < per_class * CLASSES]) for f, y, i in labelled
        ]
        found = score_probe([subset], [test], cfg.logging.probe_knn_k, cfg.logging.probe_knn_temperature)
        suffix = "" if per_class == PROBE_LABELS[0] else f"_{per_class}"
        scores.update({f"{key}{suffix}": value for key, value in found.items()})
    return scores


def probe(args: argparse.Namespace, work: Path, name: str, checkpoint: str | None, seed: int) -> dict[str, float]:
    """The probe of one encoder, run as its own process (one thread, like every job)."""
    out = work / f"probe_{name}.json"
    command = [sys.executable, "-m", "everest.experiments.transfer", "--probe-seed", str(seed), "--probe-out", str(out)]
    command += ["--pretrain-config", args.pretrain_config, *(f"--pretrain={o}" for o in args.pretrain)]
    if checkpoint is not None:
        command += ["--probe-checkpoint", checkpoint]
    _run(command, work / f"probe_{name}.log")
    return json.loads(out.read_text())


def finetune_overrides(args: argparse.Namespace, out: Path, seed: int, start: Pretraining | None) -> list[str]:
    """The fine-tuning run's overrides: a pretrained start adds PRETRAINED_FINETUNE (the user's
    --finetune overrides, after it, still win) and its checkpoint."""
    protocol = PRETRAINED_FINETUNE if start is not None else []
    overrides = [f"training.seed={seed}", *protocol, *args.finetune]
    overrides += [f"checkpoint.dir={out / 'ck'}", f"logging.log_dir={out / 'logs'}"]
    if start is not None:
        overrides.append(f"model.pretrained_path={start.checkpoint}")
    return overrides


def finetune(args: argparse.Namespace, work: Path, name: str, seed: int, start: Pretraining | None) -> dict:
    """Fine-tuning from `start` (None: from scratch): the multi-view test of the checkpoint
    chosen on the validation split."""
    out = work / f"finetune_{name}"
    overrides = finetune_overrides(args, out, seed, start)
    wall = _run([*_script("finetune.py"), "--config", args.finetune_config, *overrides], work / f"finetune_{name}.log")
    return {"wall_s": wall, "metrics": _test_metrics(out / "logs")}


def _score(args: argparse.Namespace, work: Path, row: Row, start: Pretraining | None) -> Row:
    name = f"{row.init}_{row.pretrain_steps}_seed{row.seed}"
    scores = probe(args, work, name, start.checkpoint if start else None, row.seed)
    tuned = finetune(args, work, name, row.seed, start)
    row.probe_knn_acc1 = scores.get("probe_knn_acc1", 0.0)
    row.probe_linear_acc1 = scores.get("probe_linear_acc1", 0.0)
    row.probe_linear_acc1_30 = scores.get("probe_linear_acc1_30", 0.0)
    row.test_metrics, row.test_acc1, row.finetune_wall_s = (
        tuned["metrics"],
        tuned["metrics"]["test_acc1"],
        tuned["wall_s"],
    )
    if start is not None:
        row.pretrain_gflops, row.pretrain_wall_s, row.pretext_progress = (
            start.gflops,
            start.wall_s,
            start.pretext_progress,
        )
    print(f"  {name}: probe_linear_acc1={row.probe_linear_acc1:.1f} test_acc1={row.test_acc1:.1f}", flush=True)
    return row


def run_all(args: argparse.Namespace, work: Path) -> list[Row]:
    """Every pretraining run (the longest first), then every probe and fine-tuning, `--jobs` at once."""
    runs = sorted(
        ((method, seed, steps) for seed in args.seeds for steps in budgets(args, seed) for method in args.methods),
        key=lambda r: (-r[2], r[0] != "videomae"),
    )
    with ThreadPoolExecutor(args.jobs) as pool:
        started = {run: pool.submit(pretrain, args, work, *run) for run in runs}
        done = {run: future.result() for run, future in started.items()}
        jobs = [(Row("scratch", seed), None) for seed in args.seeds]
        jobs += [(Row(method, seed, steps), start) for (method, seed, steps), start in done.items()]
        return [f.result() for f in [pool.submit(_score, args, work, row, start) for row, start in jobs]]


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _mean(rows: list[Row], key: str) -> float:
    return statistics.mean(getattr(r, key) for r in rows)


def _groups(rows: list[Row]) -> dict[tuple[str, int], list[Row]]:
    groups: dict[tuple[str, int], list[Row]] = {}
    for row in sorted(rows, key=lambda r: (INITS.index(r.init), r.pretrain_steps, r.seed)):
        groups.setdefault((row.init, row.pretrain_steps), []).append(row)
    return groups


def markdown(rows: list[Row]) -> str:
    """One line per init and budget: test top-1 and probe (mean ± std over seeds, per seed),
    pretraining GFLOPs, wall time and pretext progress."""
    lines = [
        "| init | pretraining steps | fine-tuned test top-1 % | per seed | probe linear 10/class % | "
        "probe linear 30/class % | probe kNN 10/class % | pretraining GFLOPs | pretraining wall s | pretext_progress |",
        "|---|---:|---|---|---|---|---|---:|---:|---:|",
    ]
    for (init, steps), group in _groups(rows).items():
        lines.append(
            f"| {init} | {steps} | {_mean_std([r.test_acc1 for r in group])} | "
            f"{', '.join(f'{r.test_acc1:.1f}' for r in group)} | {_mean_std([r.probe_linear_acc1 for r in group])} | "
            f"{_mean_std([r.probe_linear_acc1_30 for r in group])} | {_mean_std([r.probe_knn_acc1 for r in group])} | "
            f"{_mean(group, 'pretrain_gflops'):.0f} | {_mean(group, 'pretrain_wall_s'):.0f} | "
            f"{_mean(group, 'pretext_progress'):.3f} |"
        )
    return "\n".join(lines)


def margins(rows: list[Row]) -> dict[str, float]:
    """At the largest budget: EVEREST minus scratch and minus VideoMAE (test top-1, mean over
    seeds and the worst seed; probe), the FLOPs ratio; and where EVEREST's gain over scratch,
    extrapolated linearly in log(steps) from the curve, would reach +10 points."""
    largest = max((r.pretrain_steps for r in rows if r.init == "everest"), default=0)
    by = {(r.init, r.pretrain_steps if r.init != "scratch" else largest, r.seed): r for r in rows}
    seeds = sorted(s for (init, steps, s) in by if init == "everest" and steps == largest)
    out: dict[str, float] = {}
    for other in ("scratch", "videomae"):
        pairs = [(by[("everest", largest, s)], by[(other, largest, s)]) for s in seeds if (other, largest, s) in by]
        if pairs:
            diffs = [a.test_acc1 - b.test_acc1 for a, b in pairs]
            out[f"everest_minus_{other}_mean"] = statistics.mean(diffs)
            out[f"everest_minus_{other}_min"] = min(diffs)
            out[f"everest_minus_{other}_probe_mean"] = statistics.mean(
                a.probe_linear_acc1 - b.probe_linear_acc1 for a, b in pairs
            )
    ratios = [
        by[("everest", largest, s)].pretrain_gflops / by[("videomae", largest, s)].pretrain_gflops
        for s in seeds
        if ("videomae", largest, s) in by and by[("videomae", largest, s)].pretrain_gflops
    ]
    if ratios:
        out["everest_over_videomae_gflops"] = statistics.mean(ratios)
    scratch = statistics.mean(r.test_acc1 for r in rows if r.init == "scratch") if rows else 0.0
    curve = [
        (math.log(steps), statistics.mean(r.test_acc1 for r in group) - scratch)
        for (init, steps), group in _groups(rows).items()
        if init == "everest"
    ]
    if len(curve) >= 2:
        xs, ys = zip(*curve)
        slope = statistics.linear_regression(xs, ys).slope
        intercept = statistics.mean(ys) - slope * statistics.mean(xs)
        out["everest_gain_per_budget_doubling"] = slope * math.log(2)
        if slope > 0:
            out["everest_steps_for_plus_10"] = math.exp((10.0 - intercept) / slope)
    return out


def plot(rows: list[Row], path: Path) -> None:
    """Fine-tuned test top-1 and the 10-per-class linear probe against pretraining GFLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    scratch = [r for r in rows if r.init == "scratch"]
    for ax, key, title in zip(
        axes, ("test_acc1", "probe_linear_acc1"), ("fine-tuned, test top-1 %", "linear probe (10/class), test top-1 %")
    ):
        for method, colour in (("everest", "tab:green"), ("videomae", "tab:blue")):
            if not any(r.init == method for r in rows):
                continue  # not compared in this run (--methods)
            points = [(0.0, statistics.mean(getattr(r, key) for r in scratch))] if scratch else []
            points += [
                (statistics.mean(r.pretrain_gflops for r in g), statistics.mean(getattr(r, key) for r in g))
                for (init, _), g in _groups(rows).items()
                if init == method
            ]
            ax.plot(*zip(*points), "o-", color=colour, label="EVEREST" if method == "everest" else "VideoMAE (tube)")
            for (init, _), g in _groups(rows).items():
                if init == method:
                    ax.scatter(
                        [r.pretrain_gflops for r in g], [getattr(r, key) for r in g], color=colour, s=10, alpha=0.5
                    )
        ax.set_xlabel("pretraining GFLOPs (0: no pretraining)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe_out:  # one probe job, started by run_all
        scores = probe_scores(
            args.pretrain_config, pretrain_overrides(args, args.probe_seed), args.probe_checkpoint, args.probe_seed
        )
        Path(args.probe_out).write_text(json.dumps(scores))
        return 0
    from everest.bench.timing import describe_device, environment, write_json

    work = (REPO / args.work_dir).resolve() / time.strftime("run-%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=False)
    started = time.perf_counter()
    rows = run_all(args, work)
    total = time.perf_counter() - started
    print(markdown(rows))
    found = margins(rows)
    print(", ".join(f"{k}={v:.3f}" for k, v in found.items()))
    print(f"{describe_device('cpu')}; {args.jobs} runs at once, one thread each; whole benchmark {total:.0f} s")
    picture = Path(args.plot) if args.plot else work / "transfer.png"
    plot(rows, picture)
    record = {
        "rows": [asdict(r) for r in rows],
        "margins": found,
        "wall_s": total,
        **environment("cpu"),
        "jobs": args.jobs,
        "seeds": args.seeds,
        "methods": args.methods,
        "budget": args.budget,
        "quick": args.quick,
        "pretrain_config": args.pretrain_config,
        "finetune_config": args.finetune_config,
        "pretrain_overrides": args.pretrain,
        "finetune_overrides": args.finetune,
        "pretrained_finetune_overrides": PRETRAINED_FINETUNE,
        "reused_pretraining": args.reuse_pretraining,
    }
    path = write_json(Path(args.json) if args.json else work / "transfer.json", record)
    print(f"wrote {path} and {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
