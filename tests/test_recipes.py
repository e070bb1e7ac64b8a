"""Every recipe that claims a published setting equals it, key by key, after the lr scaling.

The published values below were read from the scripts and the argument defaults of the scripts
they call: EVEREST (sunilhoho/EVEREST: scripts/ucf101/{pretrain,finetune}.sh, run_ms_pretraining.py,
run_class_finetuning.py) and VideoMAE (MCG-NJU/VideoMAE: scripts/kinetics/.../{pretrain,finetune}.sh,
run_mae_pretraining.py, run_class_finetuning.py). Both scale lr and min_lr by total batch / 256.
Resolved values are what our Schedules (the code that sets the optimizer's lr) computes on the
8 GPUs each recipe's comment command uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from everest.config import load_config

GPUS = 8  # every recipe's comment command: deepspeed --num_gpus 8
STEPS_PER_EPOCH = 1000  # long enough that the cosine's last step sits on min_lr

PRETRAIN = dict(
    weight_decay=0.05,
    betas=[0.9, 0.95],
    warmup_epochs=40,
    drop_path=0.0,
    clip=0.0,
    frames=16,
    stride=4,
    size=224,
    mask_ratio=0.9,
    decoder_depth=4,
    normalize_target=True,
    use_checkpoint=False,
)
FINETUNE = dict(
    weight_decay=0.05,
    betas=[0.9, 0.999],
    warmup_epochs=5,
    drop_path=0.1,
    layer_decay=0.75,
    mixup=0.8,
    cutmix=1.0,
    smoothing=0.1,
    reprob=0.25,
    aa="rand-m7-n4-mstd0.5-inc1",
    clip=0.0,
    frames=16,
    stride=4,
    size=224,
    short_side=224,
    segments=5,
    crops=3,
    head_drop=0.0,
    init_scale=0.001,
    ema=False,
    use_checkpoint=False,
)


def scaled(per_256: float, total: int) -> float:
    return per_256 * total / 256


PUBLISHED = {
    # EVEREST scripts/ucf101/pretrain.sh: 8 GPUs x --batch_size 24, --lr 1e-3, --epochs 3200, defaults min_lr 1e-5.
    "pretrain/vit_b_ucf101.yaml": {
        **PRETRAIN,
        "script": "scripts/ucf101/pretrain.sh",
        "total": 8 * 24,
        "lr": scaled(1e-3, 192),
        "min_lr": scaled(1e-5, 192),
        "epochs": 3200,
        "rho": 0.7,
        "save_every": 100,
    },
    # EVEREST scripts/ucf101/finetune.sh: 8 GPUs x 16, --lr 1e-3, 100 epochs, --mixup 0.0 --cutmix 0.0,
    # --use_checkpoint, --mcm --mcm_ratio 0.4; defaults drop_path 0.1, layer_decay 0.75, min_lr 1e-6.
    "finetune/ucf101_vit_b.yaml": {
        **FINETUNE,
        "script": "scripts/ucf101/finetune.sh",
        "total": 8 * 16,
        "lr": scaled(1e-3, 128),
        "min_lr": scaled(1e-6, 128),
        "epochs": 100,
        "mixup": 0.0,
        "cutmix": 0.0,
        "use_checkpoint": True,
        "mcm_ratio": 0.4,
        "classes": 101,
    },
    # VideoMAE scripts/kinetics/..._epoch_{1600,800,1600,1600}/pretrain.sh, default lr 1.5e-4, min_lr 1e-5.
    "pretrain/vit_s_k400.yaml": {
        **PRETRAIN,
        "script": "videomae_vit_small_patch16_224_tubemasking_ratio_0.9_epoch_1600",
        "total": 32 * 32,
        "lr": scaled(1.5e-4, 1024),
        "min_lr": scaled(1e-5, 1024),
        "epochs": 1600,
        "save_every": 20,
    },
    "pretrain/vit_b_k400.yaml": {
        **PRETRAIN,
        "script": "videomae_vit_base_patch16_224_tubemasking_ratio_0.9_epoch_800",
        "total": 64 * 32,
        "lr": scaled(1.5e-4, 2048),
        "min_lr": scaled(1e-5, 2048),
        "epochs": 800,
        "save_every": 20,
    },
    "pretrain/vit_l_k400.yaml": {
        **PRETRAIN,
        "script": "videomae_vit_large_patch16_224_tubemasking_ratio_0.9_epoch_1600",
        "total": 64 * 8,
        "lr": scaled(1.5e-4, 512),
        "min_lr": scaled(1e-5, 512),
        "epochs": 1600,
        "decoder_depth": 12,
        "save_every": 20,
    },
    "pretrain/vit_h_k400.yaml": {
        **PRETRAIN,
        "script": "videomae_vit_huge_patch16_224_tubemasking_ratio_0.9_epoch_1600",
        "total": 64 * 16,
        "lr": scaled(1.5e-4, 1024),
        "min_lr": scaled(1e-5, 1024),
        "epochs": 1600,
        "decoder_depth": 12,
        "use_checkpoint": True,
        "save_every": 20,
    },
    # VideoMAE K400 finetune.sh: ViT-B 64 GPUs x 8, --lr 1e-3, 100 epochs; ViT-L 64 x 2, --lr 2e-3, 35 epochs.
    "finetune/k400_vit_b.yaml": {
        **FINETUNE,
        "script": "videomae_vit_base_patch16_224_tubemasking_ratio_0.9_epoch_800",
        "total": 64 * 8,
        "lr": scaled(1e-3, 512),
        "min_lr": scaled(1e-6, 512),
        "epochs": 100,
        "mcm_ratio": 0.4,
        "classes": 400,
    },
    "finetune/k400_vit_l.yaml": {
        **FINETUNE,
        "script": "videomae_vit_large_patch16_224_tubemasking_ratio_0.9_epoch_1600",
        "total": 64 * 2,
        "lr": scaled(2e-3, 128),
        "min_lr": scaled(1e-6, 128),
        "epochs": 35,
        "mcm_ratio": 0.4,
        "classes": 400,
    },
}


def resolved(path: Path) -> dict:
    """The recipe's values as a run on GPUS ranks uses them (lr and min_lr from our Schedules)."""
    from everest.engine.optim import Schedules

    cfg = load_config(path)
    t, o, m, a = cfg.training, cfg.optimizer, cfg.model, cfg.augmentation
    total = t.batch_size * t.accumulate_grad_batches * GPUS
    schedule = Schedules(cfg, t.max_epochs * STEPS_PER_EPOCH, STEPS_PER_EPOCH, global_batch=total).lr
    warmup = int(round(o.warmup_epochs * STEPS_PER_EPOCH))
    values = {
        "total": total,
        "lr": float(schedule.max()),
        "min_lr": float(schedule[-1]),
        "epochs": t.max_epochs,
        "warmup_epochs": o.warmup_epochs if schedule[warmup - 1] == schedule.max() > schedule[warmup - 2] else None,
        "weight_decay": o.weight_decay,
        "betas": o.betas,
        "drop_path": m.drop_path_rate,
        "clip": t.gradient_clip_val,
        "frames": t.num_frames,
        "stride": t.temporal_stride,
        "size": m.input_size,
        "use_checkpoint": cfg.features.use_checkpoint,
    }
    if m.task_type == "classification" and cfg.data.val_optimized_dir:  # a fine-tuning recipe
        values.update(
            layer_decay=m.layer_decay,
            mixup=a.mixup,
            cutmix=a.cutmix,
            smoothing=a.label_smoothing,
            reprob=a.reprob,
            aa=a.rand_augment,
            short_side=a.short_side_size,
            segments=t.test_num_segment,
            crops=t.test_num_crop,
            head_drop=m.head_drop_rate,
            init_scale=m.init_scale,
            ema=cfg.features.model_ema,
            mcm_ratio=m.mcm_ratio if m.mcm else None,
            classes=m.num_classes,
        )
    else:
        values.update(
            mask_ratio=m.mask_ratio,
            decoder_depth=m.decoder_depth,
            normalize_target=m.normalize_target,
            save_every=cfg.checkpoint.save_ckpt_freq,
            rho=m.motion_centric_masking_ratio if m.mask_type == "motion-centric" else None,
        )
    return values


def _same(ours, want) -> bool:
    if isinstance(want, float) or (isinstance(want, list) and all(isinstance(v, float) for v in want)):
        return ours is not None and ours == pytest.approx(want, rel=1e-4)
    return ours == want


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_recipe_equals_its_published_script(root: Path, name: str):
    path = root / "configs" / name
    published = {k: v for k, v in PUBLISHED[name].items() if k != "script"}
    ours = resolved(path)
    mismatches = {key: (ours.get(key), want) for key, want in published.items() if not _same(ours.get(key), want)}
    assert not mismatches, f"{name}: ours vs published {mismatches}"
    assert PUBLISHED[name]["script"] in path.read_text(), f"{name}: its comment must name the script it follows"


def test_the_ucf101_recipes_have_the_published_values_of_the_issue_table(root: Path):
    pre = load_config(root / "configs/pretrain/vit_b_ucf101.yaml")
    fine = load_config(root / "configs/finetune/ucf101_vit_b.yaml")
    assert (pre.optimizer.lr, pre.optimizer.scale_lr_by_batch) == (1e-3, True)
    assert fine.training.batch_size == 16 and fine.model.drop_path_rate == 0.1 and fine.model.layer_decay == 0.75
    assert (fine.augmentation.mixup, fine.augmentation.cutmix) == (0.0, 0.0)


def test_every_recipe_claiming_a_published_setting_is_in_the_table(root: Path):
    claims = {
        str(p.relative_to(root / "configs"))
        for p in (root / "configs").rglob("*.yaml")
        if "scripts/" in p.read_text().split("\ndata:", 1)[0]
    }
    assert claims == set(PUBLISHED)
