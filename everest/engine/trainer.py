"""The training loop: one hand-written loop over a DeepSpeed engine for every task.

`fit` reads top to bottom: resolve the DeepSpeed JSON, build the optimizer, initialise
DeepSpeed, maybe resume (`_restore`), then `Loop.run`: for each micro-batch `micro_batch`
(task forward -> all-rank non-finite/stop check -> backward -> step), at accumulation
boundaries `after_optimizer_step` (schedules, logging, pictures), at each epoch end
`end_epoch` (metrics, validation) and `save` (checkpoint).
"""

from __future__ import annotations

import random
import resource
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import kernels
from everest.config import Config, resolve_path
from everest.engine import checkpoint as ckpt
from everest.engine.distributed import DistInfo, all_reduce_min, all_reduce_sum, barrier, broadcast_object
from everest.engine.ds_config import (
    compute_dtype,
    load_ds_json,
    offloads_optimizer,
    offloads_params,
    resolve_ds_config,
    zero_stage,
)
from everest.engine.interrupts import StopFlag
from everest.engine.logger import RunLogger, new_run_name
from everest.engine.optim import Schedules, build_optimizer
from everest.engine.task import StepContext, Task
from everest.metrics import reduce_sums


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
    signal: int | None = None  # the signal that stopped the run (SIGINT, SIGTERM), if one did
    skipped_steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    run_dir: Path | None = None
    peak_memory_bytes: int = 0


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


def use_deterministic_kernels() -> None:
    """Ask torch for deterministic kernels (GPU scatter/index backward, cuBLAS workspaces, no
    cuDNN autotuning); ops without a deterministic version warn instead of failing."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


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

        to_universal(
            Namespace(
                input_folder=str(point.load_dir / point.tag),
                output_folder=str(out),
                num_extract_workers=1,
                num_merge_workers=1,
                keep_temp_folder=False,
                strict=True,
                inject_missing_state=False,
            )
        )
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
    run: str | None = None  # the run's name (its log folder and its checkpoints' owner)


def _restore(
    engine, task: Task, point: ckpt.ResumePoint, same_world: bool, train_loader, rank: int, batches_per_epoch: int
) -> _Position:
    """Load the DeepSpeed state and, on the same world size, the exact per-rank position
    (RNG streams, epoch sums, data-loader position)."""
    # Resuming reads the run's own engine state through DeepSpeed, which unpickles its own objects
    # (optimizer and loss-scaler state) with full loading: resume only runs whose folder you trust.
    # Weights from elsewhere go through everest.models.weights (weights-only), and the per-rank
    # RNG/loader state below through ckpt.load_rank_state (weights-only, numpy arrays allowed).
    _, client = engine.load_checkpoint(str(point.load_dir), tag=point.tag)
    task.load_extra_state(client.get("task", {}))
    state = client["everest"]
    skipped, run = state.get("skipped_steps", 0), state.get("run")
    if state["batch_in_epoch"] >= batches_per_epoch:  # saved at an epoch end: start the next one
        pos = _Position(state["epoch"] + 1, state["step"], skipped_steps=skipped, run=run)
    else:
        pos = _Position(
            state["epoch"],
            state["step"],
            state["batch_in_epoch"],
            skip_batches=state["batch_in_epoch"],
            skipped_steps=skipped,
            run=run,
        )
    rank_state = ckpt.load_rank_state(point, rank) if same_world else None
    if rank_state is not None:
        _set_rng_state(rank_state["rng"])
        if pos.batch_in_epoch:
            pos.sums = rank_state["epoch_sums"]
            if rank_state.get("loader") is not None and hasattr(train_loader, "load_state_dict"):
                train_loader.load_state_dict(rank_state["loader"])
                pos.skip_batches = 0
    return pos


def _settle_linear_backend(cfg: Config, task: Task, dist_info: DistInfo) -> None:
    """CPU only: the matrix-product backend of this run, measured (or read from the cache) on rank
    0 and shared, said in one line and recorded in the config the run logs."""
    import os

    from everest.config import token_counts
    from everest.models import linear, linear_backend

    if cfg.features.linear_backend != "auto":
        os.environ.setdefault("EVEREST_LINEAR", cfg.features.linear_backend)
    counts = token_counts(cfg)
    tokens = counts["mcm_kept"] if cfg.model.mcm else counts["visible"]
    line = None
    if dist_info.is_main:
        model = f"{cfg.model.backbone}-{type(task).__name__}"
        line = linear_backend.settle(task.module, model, cfg.training.batch_size * tokens)
    chosen = broadcast_object(linear.resolved(torch.float32))
    if linear.backend() == "auto":
        linear.set_choice(torch.float32, chosen)
    cfg.features.linear_backend = chosen
    if line is not None:
        print(f"everest: {line}", flush=True)


def _resolved_ds(cfg: Config, dist_info: DistInfo, ds_config_path: str | None) -> dict[str, Any]:
    ds_path = resolve_path(ds_config_path or cfg.training.deepspeed_config)
    return resolve_ds_config(
        cfg,
        load_ds_json(ds_path),
        world_size=dist_info.world_size,
        on_gpu=dist_info.device.type == "cuda",
        source=str(ds_path),
    )


def build_task(
    cfg: Config, dist_info: DistInfo, factory: Callable[[], Task], ds_config_path: str | None = None
) -> Task:
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


def fit(
    cfg: Config,
    task: Task,
    *,
    train_loader,
    dist_info: DistInfo,
    val_loader: Iterable | None = None,
    ds_config_path: str | None = None,
    resume: str | None = None,
) -> FitResult:
    """Train `task` per `cfg`; every rank calls this with its own loader shard.

    A fresh run (no `resume`) refuses a checkpoint.dir that already holds a run. SIGINT/SIGTERM
    from here on stop the loop at the next step, with a final checkpoint (FitResult.signal)."""
    import deepspeed

    with StopFlag() as stop:
        if cfg.checkpoint.enable:
            ckpt.ensure_fresh_dir(cfg.checkpoint.dir, resume)
        ds = _resolved_ds(cfg, dist_info, ds_config_path)
        seed_everything(cfg.training.seed, dist_info.rank)
        if cfg.training.deterministic:
            use_deterministic_kernels()
        kernels.set_backend(cfg.features.kernel_backend)
        if dist_info.device.type == "cpu":
            _settle_linear_backend(cfg, task, dist_info)

        point = ckpt.find_resume_point(resume, cfg.checkpoint.dir)
        same_world = True
        if point is not None:
            saved_world = ckpt.read_meta(point).get("world_size", dist_info.world_size)
            same_world = saved_world == dist_info.world_size
            if not same_world and zero_stage(ds) >= 1:
                point = _universal_point(point, dist_info)
                ds.setdefault("checkpoint", {})["load_universal"] = True

        optimizer = build_optimizer(task.param_groups(cfg.optimizer.weight_decay), cfg, offloads_optimizer(ds))
        engine, optimizer, _, _ = deepspeed.initialize(model=task.module, optimizer=optimizer, config=ds)
        task.on_engine_ready(engine, zero_stage(ds), dist_info.device)
        loop = Loop(cfg, task, engine, ds, dist_info, train_loader, val_loader, stop)
        if point is not None:
            loop.pos = _restore(engine, task, point, same_world, train_loader, dist_info.rank, loop.batches_per_epoch)
            loop.result.skipped_steps = loop.pos.skipped_steps
        try:
            return loop.run()
        finally:
            release_engine(engine)


def release_engine(engine) -> None:
    """Let a finished engine, its model and its process groups be freed before interpreter exit,
    where freeing a gloo group can abort a run that succeeded (see distributed.shutdown).

    DeepSpeed keeps them reachable after the run: its gradient hooks tie the engine to the model
    through autograd (invisible to the garbage collector), its forward hooks tie the model to the
    engine, ZeRO-3 keeps the model in a module-level stack and in a class-level cache."""
    engine.destroy()  # the gradient and ZeRO-3 module hooks
    for hook in ("module_forward_pre_hook", "module_forward_post_hook"):
        handle = getattr(engine, hook, None)
        if handle is not None:
            handle.remove()
    offload = sys.modules.get("deepspeed.runtime.zero.parameter_offload")
    stack = getattr(offload, "FWD_MODULE_STACK", None)
    if stack is not None:
        stack[:] = [m for m in stack if m is not engine.module]
    coordinator = sys.modules.get("deepspeed.runtime.zero.partitioned_param_coordinator")
    if coordinator is not None:
        for method in vars(coordinator.PartitionedParameterCoordinator).values():
            for cell in getattr(method, "__closure__", None) or ():  # lru_cache inside a decorator
                if hasattr(cell.cell_contents, "cache_clear"):
                    cell.cell_contents.cache_clear()


class Loop:
    """One run of the loop: the state its steps share (engine, position, logger, checkpoints)."""

    def __init__(
        self,
        cfg: Config,
        task: Task,
        engine,
        ds: dict[str, Any],
        dist_info: DistInfo,
        train_loader,
        val_loader: Iterable | None,
        stop: StopFlag,
    ):
        t = cfg.training
        self.cfg, self.task, self.engine, self.ds, self.dist = cfg, task, engine, ds, dist_info
        self.train_loader, self.val_loader, self.stop = train_loader, val_loader, stop
        self.dtype = compute_dtype(ds)
        # Every rank must run the same number of micro-batches, or collectives would hang.
        self.steps_per_epoch = max(all_reduce_min(len(train_loader), dist_info.device) // t.accumulate_grad_batches, 1)
        self.batches_per_epoch = self.steps_per_epoch * t.accumulate_grad_batches
        total_steps = t.max_epochs * self.steps_per_epoch  # the schedule's horizon; max_steps only stops early
        self.stop_at = min(total_steps, t.max_steps or total_steps)
        self.schedules = Schedules(cfg, total_steps, self.steps_per_epoch, global_batch=ds["train_batch_size"])
        self.pos = _Position()
        self.result = FitResult()
        self.consecutive_bad = 0
        self.lr = 0.0
        self.last_batch: dict[str, Any] | None = None  # for the final picture (no second pass over the loader)
        self.window = {"loss": 0.0, "n": 0, "clips": 0, "tokens": 0, "data_s": 0.0, "start": time.perf_counter()}

    def context(self) -> StepContext:
        return StepContext(
            epoch=self.pos.epoch,
            step=self.pos.step,
            seed=self.cfg.training.seed,
            device=self.dist.device,
            dtype=self.dtype,
        )

    def run(self) -> FitResult:
        """Epochs until max_epochs / max_steps or a stop signal; then the final picture and summary."""
        pos, result = self.pos, self.result
        # A resumed run keeps its name: TensorBoard appends to the same run folder.
        pos.run = broadcast_object(pos.run or self.cfg.logging.run_name or new_run_name())
        self.manager = ckpt.CheckpointManager(self.cfg.checkpoint, self.dist, run=pos.run)
        self.logger = RunLogger(
            self.cfg, self.ds, self.dist.is_main, self.stop_at, start_step=pos.step, run_name=pos.run
        )
        result.run_dir = self.logger.run_dir
        self.logger.print(
            f"everest: {self.dist.world_size} rank(s) on {self.dist.device.type}, ZeRO stage {zero_stage(self.ds)}, "
            f"{self.dtype}, {self.steps_per_epoch} steps/epoch, stopping at step {self.stop_at}; "
            f"run folder {self.logger.run_dir}"
        )
        if pos.step == 0:
            self.start()
        self.engine.train()
        if self._stop_requested():  # a signal during set-up: nothing trained, nothing to save
            self._stopped()
        elif pos.step >= self.stop_at or pos.epoch >= self.cfg.training.max_epochs:
            self.logger.print(
                f"nothing to train: the resumed run already reached step {pos.step} (epoch {pos.epoch}); "
                "raise training.max_epochs or training.max_steps to continue it"
            )
        while pos.epoch < self.cfg.training.max_epochs and pos.step < self.stop_at and not result.interrupted:
            self.train_epoch()
            epoch_done = pos.batch_in_epoch >= self.batches_per_epoch
            metrics = self.end_epoch() if epoch_done else {}
            final = result.interrupted or (pos.step >= self.stop_at and not epoch_done)
            if epoch_done or final:
                self.save(metrics, final)
            if epoch_done:
                pos.epoch, pos.batch_in_epoch, pos.sums = pos.epoch + 1, 0, {}
        return self.finish()

    def train_epoch(self) -> None:
        """Micro-batches of the current epoch until it ends, max_steps is reached or a signal stops it."""
        pos = self.pos
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(pos.epoch)
        batches = iter(self.train_loader)
        for _ in range(pos.skip_batches):
            next(batches)
        pos.skip_batches = 0
        while pos.batch_in_epoch < self.batches_per_epoch and pos.step < self.stop_at:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            self.window["data_s"] += time.perf_counter() - t0
            self.last_batch = batch
            if not self.micro_batch(batch):  # skipped, or inside a gradient accumulation
                continue
            self.after_optimizer_step(batch)
            if self.result.interrupted:
                break

    def micro_batch(self, batch: dict[str, Any]) -> bool:
        """Forward, the all-rank non-finite / stop check, backward and engine step. True when it
        completed an optimizer step (False inside an accumulation, or skipped on every rank for a
        non-finite loss)."""
        pos, result, engine, t = self.pos, self.result, self.engine, self.cfg.training
        out = self.task.training_step(engine, batch, self.context())
        loss_value = out.loss.detach().float()
        bad = not bool(torch.isfinite(loss_value))
        flags = all_reduce_sum(
            torch.stack(
                [
                    torch.nan_to_num(loss_value, nan=0.0, posinf=0.0, neginf=0.0),
                    torch.tensor(float(bad), device=loss_value.device),
                    torch.tensor(float(self.stop.raised), device=loss_value.device),
                ]
            )
        )
        pos.batch_in_epoch += 1
        if flags[1] > 0:  # skip on every rank together
            result.skipped_steps += 1
            self.consecutive_bad += 1
            self.logger.print(
                f"non-finite loss at epoch {pos.epoch} step {pos.step}: skipped ({self.consecutive_bad} in a row)"
            )
            if self.consecutive_bad >= t.max_consecutive_nonfinite:
                raise NonFiniteLossError(
                    f"{self.consecutive_bad} consecutive micro-batches had a non-finite loss (epoch {pos.epoch}, "
                    f"step {pos.step}); lower optimizer.lr, check the data, or raise "
                    "training.max_consecutive_nonfinite"
                )
            return False
        self.consecutive_bad = 0
        engine.backward(out.loss)
        boundary = engine.is_gradient_accumulation_boundary()
        if boundary:
            self.lr = self.schedules.apply(engine.optimizer, pos.step)
        engine.step()
        for key, value in out.sums.items():
            pos.sums[key] = pos.sums.get(key, 0.0) + value
        pos.sums["loss"] = pos.sums.get("loss", 0.0) + loss_value.item() * out.clips
        pos.sums["clips"] = pos.sums.get("clips", 0.0) + out.clips
        world = self.dist.world_size
        self.window["loss"] += flags[0].item() / world
        self.window["n"] += 1
        self.window["clips"] += out.clips * world
        self.window["tokens"] += (out.encoder_tokens + out.decoder_tokens) * world
        if flags[2] > 0:
            self._stopped()
        return boundary

    def after_optimizer_step(self, batch: dict[str, Any]) -> None:
        """Count the step; log scalars and progress every log_freq steps, a picture every image_freq."""
        pos, result, cfg = self.pos, self.result, self.cfg
        pos.step += 1
        self.task.after_step(self.engine, pos.step)
        step_loss = self.window["loss"] / max(self.window["n"], 1)
        result.losses.append(step_loss)
        if pos.step % cfg.logging.log_freq == 0 or pos.step == self.stop_at:
            self._log_scalars(step_loss)
        if cfg.logging.image_freq and pos.step % cfg.logging.image_freq == 0:
            _log_picture(self.task, self.engine, batch, self.context(), self.logger, pos.step)
        self.window.update(loss=0.0, n=0)

    def _log_scalars(self, step_loss: float) -> None:
        elapsed = max(time.perf_counter() - self.window["start"], 1e-9)
        grad_norm = self.engine.get_global_grad_norm()
        scalars = {
            "train_loss": step_loss,
            "lr": self.lr,
            "grad_norm": float(grad_norm) if grad_norm is not None else None,
            "loss_scale": float(getattr(self.engine.optimizer, "cur_scale", 1.0) or 1.0),
            "clips_per_s": self.window["clips"] / elapsed,
            "tokens_per_s": self.window["tokens"] / elapsed,
            "data_wait_fraction": self.window["data_s"] / elapsed,
            "peak_memory_gb": _peak_memory_bytes(self.dist.device) / 2**30,
            "skipped_steps": self.result.skipped_steps,
        }
        self.logger.scalars(scalars, self.pos.step)
        self.logger.progress(self.pos.step, {"loss": step_loss, "lr": self.lr, "clips/s": scalars["clips_per_s"]})
        self.window.update(clips=0, tokens=0, data_s=0.0, start=time.perf_counter())

    def start(self) -> None:
        """The task's step-0 measurements (e.g. the representation probe of the initial weights)."""
        metrics = self.task.start(self.engine, self.val_loader, self.context())
        if metrics:
            self.logger.scalars(metrics, 0)
            self.logger.print("step 0: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    def end_epoch(self) -> dict[str, float]:
        """Train metrics from the all-reduced sums, plus validation when due; logged and printed
        as the task returns them."""
        pos, t = self.pos, self.cfg.training
        metrics = _epoch_metrics(self.task, pos.sums)
        if self.val_loader is not None and (pos.epoch + 1) % t.val_every_n_epochs == 0:
            metrics.update(self.task.evaluate(self.engine, self.val_loader, self.context()))
            self.engine.train()
        self.logger.scalars(metrics, pos.step)
        self.logger.print(f"epoch {pos.epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        self.result.metrics = metrics
        return metrics

    def save(self, metrics: dict[str, float], final: bool) -> None:
        """A checkpoint if the retention policy wants one (always for the final one of a run that
        stops early or is interrupted, unless checkpoint.save_on_interrupt is off)."""
        if self.result.interrupted and not self.cfg.checkpoint.save_on_interrupt:
            return
        pos, task = self.pos, self.task
        client_state = {
            "everest": {
                "epoch": pos.epoch,
                "step": pos.step,
                "batch_in_epoch": pos.batch_in_epoch,
                "skipped_steps": self.result.skipped_steps,
                "run": pos.run,
            },
            "task": task.extra_state(),
        }
        rank_state = {
            "rng": _rng_state(),
            "epoch_sums": pos.sums,
            "loader": self.train_loader.state_dict() if hasattr(self.train_loader, "state_dict") else None,
        }
        meta = {**task.checkpoint_meta(), "world_size": self.dist.world_size, "zero_stage": zero_stage(self.ds)}
        tag = self.manager.save(
            self.engine,
            epoch=pos.epoch,
            step=pos.step,
            metrics=metrics,
            client_state=client_state,
            rank_state=rank_state,
            meta=meta,
            final=final,
        )
        self.result.last_tag = tag or self.result.last_tag

    def finish(self) -> FitResult:
        """A last reconstruction picture (pretraining), the result, the log closed."""
        pos, result = self.pos, self.result
        batch = self.last_batch if self.last_batch is not None else next(iter(self.train_loader), None)
        if self.task.draws_pictures and not result.interrupted and batch is not None:
            _log_picture(self.task, self.engine, batch, self.context(), self.logger, pos.step)
        result.steps, result.epochs, result.best = pos.step, pos.epoch, self.manager.best()
        result.peak_memory_bytes = _peak_memory_bytes(self.dist.device)
        if result.interrupted:
            saved = f"saved checkpoint {result.last_tag}" if result.last_tag else "no checkpoint saved"
            self.logger.print(
                f"interrupted at step {pos.step}; {saved}; continue with the same command plus --resume auto"
            )
        self.logger.close()
        return result

    def _stop_requested(self) -> bool:
        flag = torch.tensor([float(self.stop.raised)], device=self.dist.device)
        return bool(all_reduce_sum(flag).item() > 0)

    def _stopped(self) -> None:
        """Some rank got SIGINT/SIGTERM: every rank stops here and agrees on which signal it was."""
        self.result.interrupted = True
        self.result.signal = -all_reduce_min(-(self.stop.signum or 0), self.dist.device) or None


def _epoch_metrics(task: Task, sums: dict[str, float]) -> dict[str, float]:
    """Train metrics of the epoch from the per-rank sums (loss per clip plus the task's own)."""
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
