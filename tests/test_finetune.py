"""Fine-tuning: metrics, EMA, and classification/regression runs end to end (1 and 2 ranks)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from everest.config import ConfigError, config_from_dict
from everest.engine.task import StepContext
from everest.metrics import classification_metrics, classification_sums, regression_metrics, regression_sums
from everest.tasks.finetune import FinetuneTask
from tests.conftest import SUBPROCESS_TIMEOUT_S, launcher

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

TINY = {
    "model": {
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "input_size": 32,
        "patch_size": 8,
        "num_classes": 4,
        "mcm": True,
        "mcm_ratio": 0.4,
    },
    "training": {"batch_size": 4, "num_frames": 4, "frames_to_sample": 4, "temporal_stride": 2, "max_epochs": 2},
    "optimizer": {"warmup_steps": 1, "lr": 1e-3},
}


# ------------------------------------------------------------------------------------ metrics


def test_classification_metrics_match_direct_counts():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(37, 10, generator=g), torch.randint(0, 10, (37,), generator=g)
    got = classification_metrics(classification_sums(logits, labels), "val_")
    top5 = logits.topk(5, dim=1).indices
    assert got["val_acc1"] == pytest.approx(100 * (logits.argmax(1) == labels).float().mean().item())
    assert got["val_acc5"] == pytest.approx(100 * (top5 == labels[:, None]).any(1).float().mean().item())


def test_top5_with_fewer_than_five_classes_counts_every_class():
    logits = torch.randn(6, 3)
    sums = classification_sums(logits, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert classification_metrics(sums, "")["acc5"] == 100.0


def test_regression_metrics_match_direct_formulas():
    g = torch.Generator().manual_seed(1)
    y, p = torch.randn(50, 2, generator=g), torch.randn(50, 2, generator=g)
    got = regression_metrics(regression_sums(p, y), "val_")
    y64, p64 = y.double(), p.double()
    r2 = 1 - ((p64 - y64) ** 2).sum(0) / ((y64 - y64.mean(0)) ** 2).sum(0)
    assert got["val_mse"] == pytest.approx(((p64 - y64) ** 2).mean().item(), rel=1e-6)
    assert got["val_mae"] == pytest.approx((p64 - y64).abs().mean().item(), rel=1e-6)
    assert got["val_r2"] == pytest.approx(r2.mean().item(), rel=1e-6)


def test_r2_on_a_constant_target_is_defined():
    y = torch.full((8, 1), 2.5)
    assert regression_metrics(regression_sums(y.clone(), y), "")["r2"] == 1.0
    assert regression_metrics(regression_sums(y + 0.1, y), "")["r2"] == 0.0


def test_sums_over_unequal_shards_equal_the_global_metric():
    g = torch.Generator().manual_seed(2)
    y, p = torch.randn(11, 1, generator=g), torch.randn(11, 1, generator=g)
    shards = [regression_sums(p[:3], y[:3]), regression_sums(p[3:], y[3:])]
    total = {k: shards[0][k] + shards[1][k] for k in shards[0]}
    assert regression_metrics(total, "") == pytest.approx(regression_metrics(regression_sums(p, y), ""))


# ---------------------------------------------------------------------------------------- EMA


def test_ema_weights_differ_and_are_what_gets_evaluated():
    cfg = config_from_dict(TINY, ["features.model_ema=true", "features.model_ema_decay=0.9"])
    torch.manual_seed(0)
    task = FinetuneTask(cfg)
    engine = SimpleNamespace(module=task.module)  # what the hooks read of a DeepSpeed engine
    task.on_engine_ready(engine, zero_stage=1, device=torch.device("cpu"))
    optimizer = torch.optim.SGD(task.module.parameters(), lr=0.5)
    batch = {
        "video": torch.randint(0, 255, (4, 4, 32, 32, 3), dtype=torch.uint8),
        "label": torch.tensor([0, 1, 2, 3]),
        "index": torch.arange(4),
    }
    ctx = StepContext(epoch=0, step=0, seed=0, device=torch.device("cpu"), dtype=torch.float32)
    for step in range(3):
        task.module.train()
        out = task.training_step(task.module, batch, ctx)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        task.after_step(engine, step + 1)
    live = dict(task.module.named_parameters())
    ema = dict(task.ema.module.named_parameters())
    assert any(not torch.allclose(live[n], ema[n]) for n in live)

    def outputs_of(module):
        return torch.cat([out for _, out in task.predict(module, [batch], ctx)])

    metrics = task.evaluate(task.module, [batch], ctx)
    assert metrics == classification_metrics(classification_sums(outputs_of(task.ema.module), batch["label"]), "val_")
    assert not torch.allclose(outputs_of(task.ema.module), outputs_of(task.module))
    assert task.extra_state()["ema"].keys() == task.ema.module.state_dict().keys()


def test_ema_with_zero3_is_refused():
    cfg = config_from_dict(TINY, ["features.model_ema=true"])
    task = FinetuneTask(cfg)
    with pytest.raises(ConfigError, match="ZeRO stage 0-2"):
        task.on_engine_ready(task.module, zero_stage=3, device=torch.device("cpu"))


# ---------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("finetune")


def finetune(work: Path, name: str, *overrides: str, ranks: int = 1) -> Path:
    """Run launch/finetune.py on the built-in data; returns the run's test folder."""
    args = [
        str(ROOT / "launch" / "finetune.py"),
        f"data.synthetic_dir={work / 'synthetic'}",
        "data.synthetic_videos=16",
        "data.synthetic_kind=motion",
        "data.synthetic_heldout=16",
        "model.num_classes=4",
        "training.val_every_n_epochs=1",
        f"checkpoint.dir={work / name / 'ck'}",
        f"logging.log_dir={work / name / 'logs'}",
        "logging.run_name=run",
        "model.embed_dim=32",
        "model.depth=2",
        "model.num_heads=2",
        "model.input_size=32",
        "training.num_frames=4",
        "training.frames_to_sample=4",
        "training.batch_size=4",
        "training.max_epochs=2",
        "training.test_num_segment=2",
        "training.test_num_crop=2",
        "logging.log_freq=1",
        *overrides,
    ]
    cmd = launcher(ranks) + args
    proc = subprocess.run(
        cmd,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work / name / "logs" / "run" / "test"


def read_predictions(folder: Path) -> list[dict]:
    with open(folder / "predictions.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_classification_end_to_end_one_rank(work: Path):
    folder = finetune(work, "cls1")
    rows = read_predictions(folder)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["videos"] == len(rows) == 16
    acc1 = 100 * sum(r["label"] == r["prediction"] for r in rows) / len(rows)
    acc5 = 100 * sum(r["label"] in r["top5"].split() for r in rows) / len(rows)
    assert summary["metrics"] == pytest.approx({"test_acc1": acc1, "test_acc5": acc5})
    assert acc5 == 100.0  # 4 classes: top-5 covers them all


@pytest.mark.slow
def test_evaluate_on_a_run_folder_scores_the_best_checkpoint_and_says_so(work: Path):
    folder = work / "cls1" / "logs" / "run" / "test"
    if not folder.is_dir():
        folder = finetune(work, "cls1")
    ck = work / "cls1" / "ck"
    index = json.loads((ck / "everest_checkpoints.json").read_text())
    ranked = [e for e in index["checkpoints"] if "top_k" in e["roles"]]
    best = max(ranked, key=lambda e: e["metric"])["tag"]  # monitor val_acc1: higher is better
    out = work / "cls1" / "eval"
    proc = subprocess.run(
        [
            PYTHON,
            str(ROOT / "launch" / "evaluate.py"),
            "--config",
            "configs/finetune/default_cpu.yaml",
            "--checkpoint",
            str(ck),
            "--output_dir",
            str(out),
            f"data.synthetic_dir={work / 'synthetic'}",
            "data.synthetic_videos=16",
            "data.synthetic_kind=motion",
            "data.synthetic_heldout=16",
            "model.num_classes=4",
            "training.num_frames=4",
            "training.frames_to_sample=4",
            "model.input_size=32",
            "training.test_num_segment=2",
            "training.test_num_crop=2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0].startswith(f"checkpoint: {ck / best} (best by val_acc1 = ")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["checkpoint"] == str(ck / best)
    trained = json.loads((folder / "summary.json").read_text())  # what fine-tuning tested at its end
    assert trained["checkpoint"] == summary["checkpoint"]
    assert summary["metrics"] == pytest.approx(trained["metrics"])


@pytest.mark.slow
def test_regression_end_to_end_two_ranks_zero3(work: Path):
    # ZeRO-3: every forward is collective, so the uneven validation shards must be padded.
    folder = finetune(
        work,
        "reg2",
        "model.task_type=regression",
        "model.output_dim=1",
        "model.regression_loss=l1",
        "checkpoint.monitor=val_mse",
        "training.deepspeed_config=ds_configs/zero3.json",
        ranks=2,
    )
    rows = read_predictions(folder)
    summary = json.loads((folder / "summary.json").read_text())
    assert len(rows) == summary["videos"] == 16  # every test video once, whatever the ranks
    y = torch.tensor([float(r["label0"]) for r in rows], dtype=torch.float64)
    p = torch.tensor([float(r["prediction0"]) for r in rows], dtype=torch.float64)
    assert summary["metrics"]["test_mse"] == pytest.approx(((p - y) ** 2).mean().item(), rel=1e-4)
    assert summary["metrics"]["test_mae"] == pytest.approx((p - y).abs().mean().item(), rel=1e-4)
    r2 = 1 - ((p - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert summary["metrics"]["test_r2"] == pytest.approx(r2.item(), rel=1e-3, abs=1e-4)


@pytest.mark.slow
def test_classification_two_ranks_with_ema_and_mixup(work: Path):
    folder = finetune(
        work,
        "cls2",
        "features.model_ema=true",
        "augmentation.mixup=0.8",
        "augmentation.cutmix=1.0",
        "augmentation.label_smoothing=0.1",
        ranks=2,
    )
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["videos"] == 16 and set(summary["metrics"]) == {"test_acc1", "test_acc5"}


def test_cutmix_cuts_the_same_box_out_of_every_frame():
    from timm.data import Mixup

    from everest.tasks.finetune import mix_clips

    g = torch.Generator().manual_seed(3)
    video = torch.rand(4, 3, 6, 20, 24, generator=g)
    labels = torch.tensor([0, 1, 2, 3])
    mixup = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0, label_smoothing=0.0, num_classes=4)
    mixed, target = mix_clips(mixup, video.clone(), labels)
    assert mixed.shape == video.shape
    from_partner = (mixed != video).any(dim=1)  # [B, T, H, W]: pixels taken from the flipped batch
    assert torch.equal(
        mixed[from_partner.unsqueeze(1).expand_as(video)], video.flip(0)[from_partner.unsqueeze(1).expand_as(video)]
    )
    box = from_partner[0, 0]
    assert box.any(), "cutmix with prob 1 changed nothing"
    assert all(torch.equal(from_partner[i, f], box) for i in range(4) for f in range(6))  # one box, all frames
    rows, cols = box.any(dim=1).nonzero(), box.any(dim=0).nonzero()
    assert box.sum() == len(rows) * len(cols)  # a rectangle in (H, W)
    lam = 1 - box.float().mean().item()  # the label weight is the area kept
    assert target[0, 0].item() == pytest.approx(lam, abs=1e-6)
    assert target[0, 3].item() == pytest.approx(1 - lam, abs=1e-6)
