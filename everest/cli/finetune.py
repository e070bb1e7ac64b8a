"""Fine-tune a pretrained EVEREST/VideoMAE encoder for classification or regression.

    python launch/finetune.py                       # built-in default: synthetic data, CPU
    python launch/finetune.py --config configs/finetune/ucf101_vit_b.yaml model.pretrained_path=CKPT
    deepspeed [--num_gpus N | --hostfile H] launch/finetune.py --config X.yaml [--resume auto|PATH]

`model.pretrained_path` takes our checkpoints (DeepSpeed folders or exported files), official
VideoMAE/EVEREST .pth and Hugging Face VideoMAE folders. With a test set (data.test_optimized_dir)
the run ends with the multi-view test of launch/evaluate.py on the best checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

from everest.cli.common import exit_on_user_error, load_run_config, parse_args, run_status
from everest.config import resolve_path

DEFAULT_CONFIG = "configs/finetune/default_cpu.yaml"


def pretrained_model(cfg):
    """The classifier with model.pretrained_path loaded (and the load report), built and seeded as
    build_task would; (None, None) without a pretrained path or under ZeRO-3, where the model is
    built partitioned inside the engine set-up instead."""
    from everest.engine.ds_config import load_ds_json, zero_stage

    if not cfg.model.pretrained_path or zero_stage(load_ds_json(resolve_path(cfg.training.deepspeed_config))) >= 3:
        return None, None
    import torch

    from everest.tasks.finetune import build_classifier, load_pretrained_encoder

    torch.manual_seed(cfg.training.seed)
    model = build_classifier(cfg)
    return model, load_pretrained_encoder(model, cfg.model.pretrained_path)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(
        argv,
        DEFAULT_CONFIG,
        "EVEREST fine-tuning (classification / regression) on DeepSpeed.",
        example="model.pretrained_path=output/default/checkpoints training.max_epochs=20",
        outputs="checkpoints in checkpoint.dir, TensorBoard logs and config.yaml in "
        "logging.log_dir/<run>, the multi-view test of the best checkpoint in "
        "logging.log_dir/<run>/test/ (default config: output/finetune_default/)",
    )
    cfg = load_run_config(args)  # validated before anything heavy is imported

    from everest.engine import distributed  # first of the heavy imports: selects DeepSpeed's accelerator

    # isort: split
    from everest.data import build_dataloader
    from everest.engine.trainer import FitResult, build_task, fit
    from everest.tasks.finetune import FinetuneTask
    from everest.tasks.multiview import evaluate_checkpoint

    def train(model) -> FitResult:  # its engine is gone when it returns, before the process group goes
        log = print if dist_info.is_main else (lambda *_: None)
        if report:
            log(report)
        task = build_task(cfg, dist_info, lambda: FinetuneTask(cfg, model=model, log=log))
        train_loader = build_dataloader(cfg, "train")
        val_loader = build_dataloader(cfg, "val") if cfg.has_split("val") else None
        return fit(cfg, task, train_loader=train_loader, val_loader=val_loader, dist_info=dist_info, resume=args.resume)

    model, report = pretrained_model(cfg)  # a wrong checkpoint fails here, before DeepSpeed starts
    dist_info = distributed.init_distributed(cfg.training.device)
    try:
        result = train(model)
        model = None  # the engine's hooks on it hold the process groups
        summary = None
        if cfg.has_split("test") and result.last_tag and not result.interrupted:
            best = result.best["tag"] if result.best else result.last_tag
            summary = evaluate_checkpoint(
                cfg, Path(cfg.checkpoint.dir) / best, "test", dist_info, result.run_dir / "test"
            )
    finally:
        distributed.shutdown()
    if dist_info.is_main and not result.interrupted:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
        print(
            f"done: {result.steps} steps, {result.epochs} epochs; last epoch: {metrics}; "
            f"checkpoints in {cfg.checkpoint.dir}; logs in {result.run_dir}"
        )
        if summary:
            print("test: " + ", ".join(f"{k}={v:.4g}" for k, v in summary["metrics"].items()))
    return run_status(result)


if __name__ == "__main__":
    sys.exit(main())
