"""EVEREST pretraining.

    python launch/pretrain.py                       # built-in default: small model, synthetic data, CPU
    python launch/pretrain.py --config configs/pretrain/vit_b_k400.yaml [key=value ...]
    deepspeed [--num_gpus N | --hostfile H --num_nodes M] launch/pretrain.py --config X.yaml \
        [--deepspeed_config ds_configs/zero2.json] [--resume auto|PATH]
"""

from __future__ import annotations

import sys

from everest.cli.common import exit_on_user_error, load_run_config, parse_args, run_status

DEFAULT_CONFIG = "configs/pretrain/default_cpu.yaml"


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(
        argv,
        DEFAULT_CONFIG,
        "EVEREST masked video pretraining on DeepSpeed.",
        example="model.mask_ratio=0.85 training.max_epochs=10",
        outputs="checkpoints in checkpoint.dir, TensorBoard logs, config.yaml and reconstruction "
        "pictures in logging.log_dir/<run> (default config: output/default/)",
    )
    cfg = load_run_config(args)  # validated before anything heavy is imported

    from everest.engine import distributed  # first of the heavy imports: selects DeepSpeed's accelerator

    # isort: split
    from everest.data import build_dataloader
    from everest.engine.trainer import FitResult, build_task, fit
    from everest.tasks.pretrain import PretrainTask

    def train() -> FitResult:  # its engine is gone when it returns, before the process group goes
        train_loader = build_dataloader(cfg, "train")
        val_loader = build_dataloader(cfg, "val") if cfg.has_split("val") else None
        probe = cfg.logging.probe_every_n_epochs > 0 and val_loader is not None and cfg.has_split("probe")
        probe_loader = build_dataloader(cfg, "probe") if probe else None
        task = build_task(cfg, dist_info, lambda: PretrainTask(cfg, probe_loader=probe_loader))
        return fit(cfg, task, train_loader=train_loader, val_loader=val_loader, dist_info=dist_info, resume=args.resume)

    dist_info = distributed.init_distributed(cfg.training.device)
    try:
        result = train()
    finally:
        distributed.shutdown()
    print(
        f"rank {dist_info.rank}: peak memory {result.peak_memory_bytes / 2**30:.2f} GiB "
        f"({'CUDA allocated' if dist_info.device.type == 'cuda' else 'resident set'})",
        flush=True,
    )
    if dist_info.is_main and result.losses and not result.interrupted:
        first, last = result.losses[0], result.losses[-1]
        print(
            f"done: {result.steps} steps, {result.epochs} epochs, train loss {first:.4f} -> {last:.4f}; "
            f"checkpoints in {cfg.checkpoint.dir} (latest {result.last_tag}); logs and pictures in {result.run_dir}"
        )
    return run_status(result)


if __name__ == "__main__":
    sys.exit(main())
