"""The training loop: one hand-written loop over a DeepSpeed engine for every task.

Reads top to bottom: resolve the DeepSpeed JSON, build the optimizer, initialise DeepSpeed,
maybe resume, then for each micro-batch: task forward -> all-rank non-finite/stop check ->
backward -> (at accumulation boundaries) schedules + step -> logging; at each epoch end:
metrics, validation, checkpoint.
"""

from __future__ import annotations

import random
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

import kernels

from everest.config import Config
from everest.engine import checkpoint as ckpt
from everest.engine.distributed import DistInfo, all_reduce_min, all_reduce_sum, barrier
from everest.engine.ds_config import (
    compute_dtype,
    load_ds_json,
    offloads_optimizer,
    offloads_params,
    resolve_ds_config,
    zero_stage,
)
from everest.engine.logger import RunLogger
from everest.engine.optim import Schedules, build_optimizer
from everest.engine.task import StepContext, Task
from everest.metrics import reduce_sums

REPO_ROOT = Path(__file__).resolve().parents[2]


class NonFiniteLossError(FloatingPointError):
    """Too many optimizer steps in a row had a NaN/inf loss."""


@dataclass
class FitResult:
    losses: list[float] = field(default_factory=list)  # mean train loss per optimizer step (all ranks)
    steps: int = 0
    epochs: int = 0
    last_tag: str | None = None
    best: dict[str, Any] | None = None
    interrupted: bool = False
    skipped_steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    run_dir: Path | None = None
    peak_memory_bytes: int = 0


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop stops at the next step boundary on every rank."""

    def __init__(self):
        self.raised = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def resolve_path(path: str | Path) -> Path:
    """A path as given, or relative to the repository (so ds_configs/... works from anywhere)."""
    path = Path(path)
    return path if path.exists() or path.is_absolute() else REPO_ROOT / path


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_everything(seed: int, rank: int) -> None:
    """Distinct, reproducible streams per rank (dropout, drop path, data order helpers)."""
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _universal_point(point: ckpt.ResumePoint, dist_info: DistInfo) -> ckpt.ResumePoint:
    """Convert a ZeRO checkpoint to DeepSpeed's universal format (world-size independent)."""
    out = point.load_dir / f"{point.tag}_universal"
    if dist_info.is_main and not (out / "zero").is_dir():
        from argparse import Namespace

        from deepspeed.checkpoint.ds_to_universal import main as to_universal

        to_universal(Namespace(input_folder=str(point.load_dir / point.tag), output_folder=str(out),
                               num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False,
                               strict=True, inject_missing_state=False))
    barrier()
    return ckpt.ResumePoint(point.load_dir, out.name)


@dataclass
class _Position:
    """Where training stands; saved in every checkpoint, restored on resume."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    skip_batches: int = 0  # batches to fast-forward for loaders without a state_dict
    sums: dict[str, float] = field(default_factory=dict)
    skipped_steps: int = 0


def _restore(engine, task: Task, point: ckpt.ResumePoint, same_world: bool, train_loader, rank: int,
             batches_per_epoch: int) -> _Position:
    """Load the DeepSpeed state and, on the same world size, the exact per-rank position
    (RNG streams, epoch sums, data-loader position)."""
    _, client = engine.load_checkpoint(str(point.load_dir), tag=point.tag)
    task.load_extra_state(client.get("task", {}))
    state = client["everest"]
    skipped = state.get("skipped_steps", 0)
    if state["batch_in_epoch"] >= batches_per_epoch:  # saved at an epoch end: start the next one
        pos = _Position(state["epoch"] + 1, state["step"], skipped_steps=skipped)
    else:
        pos = _Position(state["epoch"], state["step"], state["batch_in_epoch"],
                        skip_batches=state["batch_in_epoch"], skipped_steps=skipped)
    rank_state = ckpt.load_rank_state(point, rank) if same_world else None
    if rank_state is not None:
        _set_rng_state(rank_state["rng"])
        if pos.batch_in_epoch:
            pos.sums = rank_state["epoch_sums"]
            if rank_state.get("loader") is not None and hasattr(train_loader, "load_state_dict"):
                train_loader.load_state_dict(rank_state["loader"])
                pos.skip_batches = 0
    return pos


def _resolved_ds(cfg: Config, dist_info: DistInfo, ds_config_path: str | None) -> dict[str, Any]:
    ds_path = resolve_path(ds_config_path or cfg.training.deepspeed_config)
    return resolve_ds_config(cfg, load_ds_json(ds_path), world_size=dist_info.world_size,
                             on_gpu=dist_info.device.type == "cuda", source=str(ds_path))


def build_task(cfg: Config, dist_info: DistInfo, factory: Callable[[], Task], ds_config_path: str | None = None) -> Task:
    """Build the task's model the same way on every rank (seeded). Under ZeRO-3 it is built inside
    deepspeed.zero.Init, so each rank only ever holds its own partition of the weights."""
    torch.manual_seed(cfg.training.seed)
    ds = _resolved_ds(cfg, dist_info, ds_config_path)
    if zero_stage(ds) < 3:
        return factory()
    import deepspeed

    remote = "cpu" if offloads_params(ds) else None
    with deepspeed.zero.Init(config_dict_or_path=ds, remote_device=remote, pin_memory=False):
        return factory()


def fit(cfg: Config, task: Task, *, train_loader, dist_info: DistInfo, val_loader: Iterable | None = None,
        ds_config_path: str | None = None, resume: str | None = None) -> FitResult:
    """Train `task` per `cfg`; every rank calls this with its own loader shard."""
    import deepspeed

    t = cfg.training
    ds = _resolved_ds(cfg, dist_info, ds_config_path)
    seed_everything(t.seed, dist_info.rank)
    kernels.set_backend(cfg.features.kernel_backend)

    point = ckpt.find_resume_point(resume, cfg.checkpoint.dir)
    if point is not None:
        saved_world = ckpt.read_meta(point).get("world_size", dist_info.world_size)
        if saved_world != dist_info.world_size and zero_stage(ds) >= 1:
            point = _universal_point(point, dist_info)
            ds.setdefault("checkpoint", {})["load_universal"] = True

    optimizer = build_optimizer(task.param_groups(cfg.optimizer.weight_decay), cfg, offloads_optimizer(ds))
    engine, optimizer, _, _ = deepspeed.initialize(model=task.module, optimizer=optimizer, config=ds)
    dtype = compute_dtype(ds)
    task.on_engine_ready(engine, zero_stage(ds), dist_info.device)
    accum = t.accumulate_grad_batches

    # Every rank must run the same number of micro-batches, or collectives would hang.
    steps_per_epoch = max(all_reduce_min(len(train_loader), dist_info.device) // accum, 1)
    batches_per_epoch = steps_per_epoch * accum
    total_steps = t.max_epochs * steps_per_epoch  # the schedule's horizon; max_steps only stops early
    stop_at = min(total_steps, t.max_steps or total_steps)
    schedules = Schedules(cfg, total_steps, steps_per_epoch, global_batch=ds["train_batch_size"])
    manager = ckpt.CheckpointManager(cfg.checkpoint, dist_info)

    result = FitResult()
    pos = _Position()
    if point is not None:
        pos = _restore(engine, task, point, saved_world == dist_info.world_size, train_loader, dist_info.rank,
                       batches_per_epoch)
        result.skipped_steps = pos.skipped_steps
    epoch, step, batch_in_epoch, sums = pos.epoch, pos.step, pos.batch_in_epoch, pos.sums
    consecutive_bad = 0

    logger = RunLogger(cfg, ds, dist_info.is_main, stop_at, start_step=step)
    result.run_dir = logger.run_dir
    logger.print(f"everest: {dist_info.world_size} rank(s) on {dist_info.device.type}, ZeRO stage {zero_stage(ds)}, "
                 f"{dtype}, {steps_per_epoch} steps/epoch, stopping at step {stop_at}; run folder {logger.run_dir}")

    def checkpoint_state(epoch_metrics: dict[str, float], final: bool) -> str | None:
        client_state = {"everest": {"epoch": epoch, "step": step, "batch_in_epoch": batch_in_epoch,
                                    "skipped_steps": result.skipped_steps}, "task": task.extra_state()}
        rank_state = {"rng": _rng_state(), "epoch_sums": sums,
                      "loader": train_loader.state_dict() if hasattr(train_loader, "state_dict") else None}
        meta = {**task.checkpoint_meta(), "world_size": dist_info.world_size, "zero_stage": zero_stage(ds)}
        return manager.save(engine, epoch=epoch, step=step, metrics=epoch_metrics, client_state=client_state,
                            rank_state=rank_state, meta=meta, final=final)

    window = {"loss": 0.0, "n": 0, "clips": 0, "tokens": 0, "data_s": 0.0, "start": time.perf_counter()}
    engine.train()
    with _StopFlag() as stop:
        while epoch < t.max_epochs and step < stop_at and not result.interrupted:
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            batches = iter(train_loader)
            for _ in range(pos.skip_batches):
                next(batches)
            pos.skip_batches = 0
            while batch_in_epoch < batches_per_epoch and step < stop_at:
                t0 = time.perf_counter()
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                window["data_s"] += time.perf_counter() - t0
                ctx = StepContext(epoch=epoch, step=step, seed=t.seed, device=dist_info.device, dtype=dtype)
                out = task.training_step(engine, batch, ctx)
                loss_value = out.loss.detach().float()
                bad = not bool(torch.isfinite(loss_value))
                flags = all_reduce_sum(torch.stack([
                    torch.nan_to_num(loss_value, nan=0.0, posinf=0.0, neginf=0.0),
                    torch.tensor(float(bad), device=loss_value.device),
                    torch.tensor(float(stop.raised), device=loss_value.device),
                ]))
                batch_in_epoch += 1
                if flags[1] > 0:  # skip on every rank together
                    result.skipped_steps += 1
                    consecutive_bad += 1
                    logger.print(f"non-finite loss at epoch {epoch} step {step}: skipped ({consecutive_bad} in a row)")
                    if consecutive_bad >= t.max_consecutive_nonfinite:
                        raise NonFiniteLossError(
                            f"{consecutive_bad} consecutive micro-batches had a non-finite loss (epoch {epoch}, "
                            f"step {step}); lower optimizer.lr, check the data, or raise "
                            "training.max_consecutive_nonfinite")
                    continue
                consecutive_bad = 0
                engine.backward(out.loss)
                boundary = engine.is_gradient_accumulation_boundary()
                if boundary:
                    lr = schedules.apply(engine.optimizer, step)
                engine.step()
                for key, value in out.sums.items():
                    sums[key] = sums.get(key, 0.0) + value
                sums["loss"] = sums.get("loss", 0.0) + loss_value.item() * out.clips
                sums["clips"] = sums.get("clips", 0.0) + out.clips
                window["loss"] += flags[0].item() / dist_info.world_size
                window["n"] += 1
                window["clips"] += out.clips * dist_info.world_size
                window["tokens"] += (out.encoder_tokens + out.decoder_tokens) * dist_info.world_size
                if flags[2] > 0:
                    result.interrupted = True
                if not boundary:
                    continue
                step += 1
                task.after_step(engine, step)
                step_loss = window["loss"] / max(window["n"], 1)
                result.losses.append(step_loss)
                if step % cfg.logging.log_freq == 0 or step == stop_at:
                    elapsed = max(time.perf_counter() - window["start"], 1e-9)
                    grad_norm = engine.get_global_grad_norm()
                    scalars = {
                        "train_loss": step_loss, "lr": lr,
                        "grad_norm": float(grad_norm) if grad_norm is not None else None,
                        "loss_scale": float(getattr(engine.optimizer, "cur_scale", 1.0) or 1.0),
                        "clips_per_s": window["clips"] / elapsed, "tokens_per_s": window["tokens"] / elapsed,
                        "data_wait_fraction": window["data_s"] / elapsed,
                        "peak_memory_gb": _peak_memory_bytes(dist_info.device) / 2**30,
                        "skipped_steps": result.skipped_steps,
                    }
                    logger.scalars(scalars, step)
                    logger.progress(step, {"loss": step_loss, "lr": lr, "clips/s": scalars["clips_per_s"]})
                    window.update(clips=0, tokens=0, data_s=0.0, start=time.perf_counter())
                if cfg.logging.image_freq and step % cfg.logging.image_freq == 0:
                    _log_picture(task, engine, batch, ctx, logger, step)
                window.update(loss=0.0, n=0)
                if result.interrupted:
                    break

            epoch_done = batch_in_epoch >= batches_per_epoch
            metrics: dict[str, float] = {}
            if epoch_done:
                metrics = _epoch_metrics(task, sums, dist_info)
                if val_loader is not None and (epoch + 1) % t.val_every_n_epochs == 0:
                    ctx = StepContext(epoch=epoch, step=step, seed=t.seed, device=dist_info.device, dtype=dtype)
                    metrics.update(task.evaluate(engine, val_loader, ctx))
                    engine.train()
                logger.scalars(metrics, step)
                logger.print(f"epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
                result.metrics = metrics
            final = result.interrupted or (step >= stop_at and not epoch_done)
            if epoch_done or final:
                if not result.interrupted or cfg.checkpoint.save_on_interrupt:
                    tag = checkpoint_state(metrics, final=final)
                    result.last_tag = tag or result.last_tag
            if epoch_done:
                epoch, batch_in_epoch, sums = epoch + 1, 0, {}

    if task.draws_pictures and not result.interrupted:  # leave a reconstruction picture behind
        ctx = StepContext(epoch=epoch, step=step, seed=t.seed, device=dist_info.device, dtype=dtype)
        _log_picture(task, engine, next(iter(train_loader)), ctx, logger, step)
    result.steps, result.epochs, result.best = step, epoch, manager.best()
    result.peak_memory_bytes = _peak_memory_bytes(dist_info.device)
    if result.interrupted:
        logger.print(f"interrupted at step {step}; checkpoint {result.last_tag}; continue with --resume auto")
    logger.close()
    return result


def _epoch_metrics(task: Task, sums: dict[str, float], dist_info: DistInfo) -> dict[str, float]:
    reduced = reduce_sums(sums)
    metrics = {"train_loss_epoch": reduced["loss"] / max(reduced["clips"], 1.0)}
    metrics.update(task.reduce_metrics(reduced, "train_"))
    return metrics


def _log_picture(task: Task, engine, batch, ctx: StepContext, logger: RunLogger, step: int) -> None:
    """Every rank runs the forward (ZeRO-3 gathers parameters collectively); rank 0 writes."""
    picture = task.picture(engine, batch, ctx)
    engine.train()
    if picture is None or not logger.is_main:
        return
    logger.image("reconstruction", picture, step)
    from PIL import Image

    Image.fromarray(picture).save(logger.run_dir / f"reconstruction_step{step:08d}.png")
