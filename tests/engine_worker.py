"""A tiny EVEREST pretraining run over in-memory clips, for the engine tests.

Started as one plain process or by the `deepspeed` launcher; every rank takes an interleaved
shard (rank r gets samples r, r+W, ...) so that the global batch is the same for any W.
Writes {"losses": [...], "steps": n, ...} to --out on rank 0.

    python tests/engine_worker.py --out OUT.json --ds ds_configs/zero0.json [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from everest.engine.interrupts import exit_on_signal  # first, as in launch/*.py

exit_on_signal()

from everest.engine import distributed  # noqa: E402  (before anything imports deepspeed)

# isort: split
import torch  # noqa: E402

from everest.cli.common import exit_on_user_error, run_status  # noqa: E402
from everest.config import load_config  # noqa: E402

TINY = [
    "model.embed_dim=32",
    "model.depth=2",
    "model.num_heads=2",
    "model.decoder_embed_dim=16",
    "model.decoder_depth=1",
    "model.decoder_num_heads=2",
    "model.input_size=32",
    "model.patch_size=8",
    "training.num_frames=4",
    "training.frames_to_sample=4",
    "model.mask_ratio=0.75",
    "model.motion_centric_masking_ratio=0.5",
    "training.max_epochs=3",
    "optimizer.lr=1e-3",
    "optimizer.warmup_steps=2",
    "logging.log_freq=1",
    "logging.image_freq=0",
]


def make_clips(count: int, frames: int, size: int, seed: int = 0) -> torch.Tensor:
    """Deterministic moving-square clips over a textured background, uint8 [count, F, S, S, 3]."""
    g = torch.Generator().manual_seed(seed)
    clips = (torch.rand(count, 1, size, size, 3, generator=g) * 120).expand(-1, frames, -1, -1, -1).clone()
    for i in range(count):
        x0, y0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        for f in range(frames):
            x = (x0 + 3 * f) % (size - 8)
            clips[i, f, y0 : y0 + 8, x : x + 8] = 255
    return clips.to(torch.uint8)


class InterleavedLoader:
    """Rank r of W gets positions r, r+W, ... of an epoch-seeded permutation, in batches."""

    def __init__(self, clips: torch.Tensor, batch: int, rank: int, world: int, seed: int = 0):
        self.clips, self.batch, self.rank, self.world, self.seed = clips, batch, rank, world, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips) // (self.batch * self.world)

    def __iter__(self):
        order = torch.randperm(len(self.clips), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        mine = order[self.rank :: self.world]
        for i in range(len(self)):
            index = mine[i * self.batch : (i + 1) * self.batch]
            yield {"video": self.clips[index], "index": index}


def _kill_after_save(nth: int) -> None:
    """Simulate a crash mid-save: the shards are on disk, 'latest' and the index not yet."""
    import os
    import signal

    from deepspeed.runtime.engine import DeepSpeedEngine

    original = DeepSpeedEngine.save_checkpoint
    calls = []

    def save_then_die(self, *a, **kw):
        result = original(self, *a, **kw)
        calls.append(1)
        if len(calls) == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    DeepSpeedEngine.save_checkpoint = save_then_die


def _disk_full_at_save(nth: int) -> None:
    """Simulate a full disk: the N-th save writes part of its files, then fails with ENOSPC."""
    import errno

    from deepspeed.runtime.engine import DeepSpeedEngine

    original = DeepSpeedEngine.save_checkpoint
    calls = []

    def save_on_full_disk(self, save_dir, tag=None, **kw):
        calls.append(1)
        if len(calls) == nth:
            (Path(save_dir) / tag).mkdir(parents=True, exist_ok=True)
            (Path(save_dir) / tag / "mp_rank_00_model_states.pt").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, save_dir, tag=tag, **kw)

    DeepSpeedEngine.save_checkpoint = save_on_full_disk


def _crash_at_step(task, step: int) -> None:
    """This rank dies abruptly (as on a hardware fault) when it reaches optimizer step `step`."""
    import os

    original = task.training_step

    def step_or_die(engine, batch, ctx):
        if ctx.step >= step:
            os._exit(3)
        return original(engine, batch, ctx)

    task.training_step = step_or_die


@exit_on_user_error
def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--ds", default="ds_configs/zero0.json")
    parser.add_argument("--resume", default=None)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--kill-at-save",
        type=int,
        default=0,
        help="SIGKILL this process right after DeepSpeed writes its N-th checkpoint",
    )
    parser.add_argument(
        "--fail-save", type=int, default=0, help="make the N-th checkpoint save hit 'No space left on device' half-way"
    )
    parser.add_argument("--crash-rank", type=int, default=None, help="this rank dies at --crash-step")
    parser.add_argument("--crash-step", type=int, default=2)
    parser.add_argument("--local_rank", type=int, default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config(None, TINY + [f"training.deepspeed_config={args.ds}"] + args.overrides)

    from everest.engine.trainer import build_task, fit
    from everest.tasks.pretrain import PretrainTask

    if args.kill_at_save:
        _kill_after_save(args.kill_at_save)
    if args.fail_save:
        _disk_full_at_save(args.fail_save)
    info = distributed.init_distributed(args.device)
    task = build_task(cfg, info, lambda: PretrainTask(cfg))  # seeded: same weights on every rank
    if args.crash_rank == info.rank:
        _crash_at_step(task, args.crash_step)
    clips = make_clips(args.clips, cfg.training.num_frames, cfg.model.input_size)
    loader = InterleavedLoader(clips, cfg.training.batch_size, info.rank, info.world_size, cfg.training.seed)
    result = fit(cfg, task, train_loader=loader, dist_info=info, resume=args.resume)
    del task  # its model's ZeRO-3 parameters hold the process group
    distributed.shutdown()
    if info.is_main:
        Path(args.out).write_text(
            json.dumps(
                {
                    "losses": result.losses,
                    "steps": result.steps,
                    "epochs": result.epochs,
                    "last_tag": result.last_tag,
                    "metrics": result.metrics,
                    "world_size": info.world_size,
                    "run_dir": str(result.run_dir),
                    "interrupted": result.interrupted,
                    "signal": result.signal,
                    "threads_after_shutdown": native_thread_names(),
                }
            )
        )
    return run_status(result)


def native_thread_names() -> list[str] | None:
    """This process's threads as the OS names them (Linux), None where /proc does not list them."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    return sorted((t / "comm").read_text().strip() for t in tasks.iterdir())


if __name__ == "__main__":
    sys.exit(main())
