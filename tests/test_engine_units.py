"""Engine pieces that need no process group: DeepSpeed JSON reconciliation, optimizer groups,
schedules and the checkpoint keep/delete policy."""

import json
import math
from pathlib import Path

import pytest
import torch

from everest.config import CheckpointConfig, ConfigError, config_from_dict
from everest.engine import checkpoint as ckpt
from everest.engine.distributed import DistInfo
from everest.engine.ds_config import compute_dtype, load_ds_json, resolve_ds_config, zero_stage
from everest.engine.optim import Schedules, build_optimizer, cosine_schedule, param_groups
from everest.models import PretrainAutoencoder, VideoClassifier
from tests.test_models import tiny_spec


@pytest.mark.parametrize("name", ["zero0", "zero1", "zero2", "zero3", "zero3_offload"])
def test_shipped_json_fills_auto_from_yaml(root: Path, name: str):
    cfg = config_from_dict(
        {
            "training": {"batch_size": 6, "accumulate_grad_batches": 3, "gradient_clip_val": 1.5},
            "optimizer": {"lr": 2e-4},
        }
    )
    ds = resolve_ds_config(cfg, load_ds_json(root / "ds_configs" / f"{name}.json"), world_size=4, on_gpu=True)
    assert ds["train_micro_batch_size_per_gpu"] == 6
    assert ds["gradient_accumulation_steps"] == 3
    assert ds["gradient_clipping"] == 1.5
    assert ds["train_batch_size"] == 6 * 3 * 4
    assert "optimizer" not in ds  # we pass our own optimizer built from the YAML
    assert ds["bf16"]["enabled"] is True and compute_dtype(ds) == torch.bfloat16
    assert zero_stage(ds) == int(name[4])
    assert '"auto"' not in json.dumps(ds)


def test_precision_on_cpu_is_fp32_unless_asked():
    cfg = config_from_dict({})
    ds = resolve_ds_config(cfg, {"bf16": {"enabled": True}}, world_size=1, on_gpu=False)
    assert compute_dtype(ds) == torch.float32
    cfg = config_from_dict({"training": {"precision": "bf16"}})
    assert compute_dtype(resolve_ds_config(cfg, {}, world_size=1, on_gpu=False)) == torch.bfloat16


def test_explicit_json_value_wins_over_yaml_default_and_conflicts_are_named():
    cfg = config_from_dict({})
    resolve_ds_config(
        cfg, {"train_micro_batch_size_per_gpu": 5, "optimizer": {"params": {"lr": 3e-4}}}, world_size=1, on_gpu=False
    )
    assert cfg.training.batch_size == 5 and cfg.optimizer.lr == 3e-4
    cfg = config_from_dict({"training": {"batch_size": 8}})
    with pytest.raises(
        ConfigError, match=r"'train_micro_batch_size_per_gpu' is 5 but the YAML sets training.batch_size=8"
    ):
        resolve_ds_config(cfg, {"train_micro_batch_size_per_gpu": 5}, world_size=1, on_gpu=False)
    cfg = config_from_dict({}, ["optimizer.type=radam"])
    with pytest.raises(ConfigError, match="optimizer.type='radam'"):
        resolve_ds_config(cfg, {"optimizer": {"type": "AdamW"}}, world_size=1, on_gpu=False)
    with pytest.raises(ConfigError, match="train_batch_size=7"):
        resolve_ds_config(config_from_dict({}), {"train_batch_size": 7}, world_size=2, on_gpu=False)
    with pytest.raises(ConfigError, match="remove the 'scheduler' section"):
        resolve_ds_config(config_from_dict({}), {"scheduler": {"type": "WarmupLR"}}, world_size=1, on_gpu=False)


def test_missing_or_broken_json_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="file not found"):
        load_ds_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{stage: 2")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        load_ds_json(tmp_path / "bad.json")


def test_param_groups_skip_decay_on_biases_norms_and_tokens():
    model = PretrainAutoencoder(tiny_spec())
    groups = param_groups(model, weight_decay=0.05)
    no_decay = {n for g in groups if not g["apply_decay"] for n in g["names"]}
    decay = {n for g in groups if g["apply_decay"] for n in g["names"]}
    assert "mask_token" in no_decay
    assert "encoder.blocks.0.attn.q_bias" in no_decay and "encoder.blocks.0.norm1.weight" in no_decay
    assert "encoder.blocks.0.attn.qkv.weight" in decay and "decoder.head.weight" in decay
    assert len(no_decay | decay) == len(list(model.parameters()))


def test_layer_decay_scales_follow_depth():
    model = VideoClassifier(tiny_spec(depth=3), num_outputs=4)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5, num_layers=3)
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    assert scale["encoder.patch_embed.proj.weight"] == pytest.approx(0.5**4)
    assert scale["encoder.blocks.0.mlp.fc1.weight"] == pytest.approx(0.5**3)
    assert scale["encoder.blocks.2.mlp.fc1.weight"] == pytest.approx(0.5**1)
    assert scale["head.weight"] == pytest.approx(1.0)


def test_cosine_schedule_formula():
    values = cosine_schedule(1.0, 0.1, total_steps=10, warmup_steps=4)
    assert len(values) == 10
    assert values[:4].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])  # the published warmup ends on base
    for i in range(6):
        expected = 0.1 + 0.45 * (1 + math.cos(math.pi * i / 6))
        assert values[4 + i] == pytest.approx(expected)


def test_schedules_apply_lr_scale_and_weight_decay():
    cfg = config_from_dict(
        {"optimizer": {"lr": 1e-3, "min_lr": 0.0, "warmup_steps": 0, "weight_decay": 0.05, "weight_decay_end": 0.1}}
    )
    model = VideoClassifier(tiny_spec(), num_outputs=2)
    optimizer = build_optimizer(param_groups(model, 0.05, layer_decay=0.5, num_layers=2), cfg, cpu_offload=False)
    schedules = Schedules(cfg, total_steps=4, steps_per_epoch=2)
    base = schedules.apply(optimizer, 2)
    assert base == pytest.approx(0.5e-3)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(base * group["lr_scale"])
        assert group["weight_decay"] == (pytest.approx(0.075) if group["apply_decay"] else 0.0)


CPU = DistInfo(0, 1, 0, torch.device("cpu"))


class FakeEngine:
    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        assert save_latest is False
        (Path(save_dir) / tag).mkdir(parents=True)
        (Path(save_dir) / tag / "mp_rank_00_model_states.pt").write_bytes(b"x")


def _save(manager, epoch, loss, final=False):
    return manager.save(
        FakeEngine(),
        epoch=epoch,
        step=epoch * 10,
        metrics={"train_loss_epoch": loss},
        client_state={},
        rank_state={},
        meta={},
        final=final,
    )


@pytest.mark.parametrize(
    "save_last, strict, expected",
    [
        (False, False, {1, 3}),
        (True, False, {1, 3, 4}),
        (True, True, {1, 3}),
    ],
)
def test_checkpoint_keeps_top_k_and_last(tmp_path: Path, save_last, strict, expected):
    cfg = CheckpointConfig(dir=str(tmp_path), prefix="e", save_top_k=2, save_last=save_last, strict_top_k=strict)
    manager = ckpt.CheckpointManager(cfg, CPU, run="r1")
    for epoch, loss in enumerate([0.9, 0.5, 0.7, 0.3, 0.8]):
        _save(manager, epoch, loss)
    kept = {int(p.name.split("epoch")[1][:4]) for p in tmp_path.iterdir() if p.is_dir()}
    assert kept == expected
    latest = (tmp_path / "latest").read_text()
    assert (tmp_path / latest).is_dir()
    assert manager.best()["metric"] == 0.3
    # The index survives a restart of the manager.
    again = ckpt.CheckpointManager(cfg, CPU, run="r1")
    assert again.best()["tag"] == manager.best()["tag"]


def test_periodic_checkpoints_are_kept(tmp_path: Path):
    cfg = CheckpointConfig(dir=str(tmp_path), prefix="p", save_top_k=1, save_ckpt_freq=2, monitor="val_acc1")
    manager = ckpt.CheckpointManager(cfg, CPU, run="r1")
    assert manager.mode == "max"
    for epoch in range(4):
        manager.save(
            FakeEngine(),
            epoch=epoch,
            step=epoch,
            metrics={"val_acc1": float(epoch)},
            client_state={},
            rank_state={},
            meta={},
        )
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert names == ["pepoch0001_step00000001", "pepoch0003_step00000003"]


def test_resume_point_resolution(tmp_path: Path):
    assert ckpt.find_resume_point("auto", tmp_path) is None
    with pytest.raises(FileNotFoundError):
        ckpt.find_resume_point(str(tmp_path / "nope"), tmp_path)
    cfg = CheckpointConfig(dir=str(tmp_path), prefix="r", save_top_k=1)
    tag = _save(ckpt.CheckpointManager(cfg, CPU, run="r1"), 0, 1.0)
    assert ckpt.find_resume_point("auto", tmp_path) == ckpt.ResumePoint(tmp_path, tag)
    assert ckpt.find_resume_point(str(tmp_path / tag), tmp_path) == ckpt.ResumePoint(tmp_path, tag)


def test_retention_never_prunes_another_runs_checkpoints(tmp_path: Path):
    cfg = CheckpointConfig(dir=str(tmp_path), prefix="e", save_top_k=1, save_last=True)
    first = [_save(ckpt.CheckpointManager(cfg, CPU, run="first"), epoch, loss) for epoch, loss in [(0, 0.9), (1, 0.5)]]
    assert not (tmp_path / first[0]).exists() and (tmp_path / first[1]).is_dir()  # pruned within its own run
    second = ckpt.CheckpointManager(cfg, CPU, run="second")
    for epoch, loss in [(2, 0.4), (3, 0.3), (4, 0.2)]:
        _save(second, epoch, loss)
    assert (tmp_path / first[1]).is_dir()  # the other run's checkpoint is kept
    index = json.loads((tmp_path / ckpt.INDEX_FILE).read_text())["checkpoints"]
    assert [e["tag"] for e in index if e["run"] == "first"] == [first[1]]
    assert second.best()["metric"] == 0.2 and {e["run"] for e in index} == {"first", "second"}


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(tmp_path: Path):
    ckpt.ensure_fresh_dir(tmp_path / "missing", None)  # nothing there: fine
    ckpt.ensure_fresh_dir(tmp_path, None)  # empty: fine
    cfg = CheckpointConfig(dir=str(tmp_path), prefix="e", save_top_k=1)
    tag = _save(ckpt.CheckpointManager(cfg, CPU, run="r1"), 0, 1.0)
    with pytest.raises(ckpt.CheckpointDirInUse, match=f"already holds a run .*{tag}.*--resume auto"):
        ckpt.ensure_fresh_dir(tmp_path, None)
    ckpt.ensure_fresh_dir(tmp_path, "auto")  # resuming it is the point


@pytest.mark.parametrize(
    "monitor, metrics, best",
    [
        ("val_acc1", [10.0, 40.0, 30.0], 1),  # max mode
        ("val_mse", [0.5, 0.2, 0.3], 1),  # min mode
        ("train_loss_epoch", [0.9, 0.8, 0.1], 2),
    ],
)
def test_evaluation_picks_the_best_checkpoint_of_a_run_folder(tmp_path: Path, monitor, metrics, best):
    cfg = CheckpointConfig(dir=str(tmp_path), prefix="e", save_top_k=3, save_last=True, monitor=monitor)
    manager = ckpt.CheckpointManager(cfg, CPU, run="r1")
    tags = [
        manager.save(FakeEngine(), epoch=i, step=i, metrics={monitor: m}, client_state={}, rank_state={}, meta={})
        for i, m in enumerate(metrics)
    ]
    path, why = ckpt.choose_checkpoint(tmp_path)
    assert path == tmp_path / tags[best] and f"best by {monitor} = {metrics[best]:.4g}" == why
    assert ckpt.choose_checkpoint(tmp_path / tags[0]) == (tmp_path / tags[0], "as given")


def test_evaluation_falls_back_to_latest_without_a_ranked_checkpoint(tmp_path: Path):
    cfg = CheckpointConfig(dir=str(tmp_path), prefix="e", save_top_k=0, save_last=True, monitor="val_acc1")
    manager = ckpt.CheckpointManager(cfg, CPU, run="r1")
    for i in range(2):
        tag = manager.save(FakeEngine(), epoch=i, step=i, metrics={}, client_state={}, rank_state={}, meta={})
    path, why = ckpt.choose_checkpoint(tmp_path)
    assert path == tmp_path / tag and why.startswith("latest")


def test_even_batches_pads_to_the_length_and_marks_padding():
    from everest.engine.distributed import even_batches

    class Loader(list):
        pass

    assert list(even_batches(Loader([1, 2]), torch.device("cpu"), dummy=lambda: 0)) == [(1, True), (2, True)]

    class Short(list):  # claims three batches, yields two
        def __len__(self):
            return 3

    assert list(even_batches(Short([1, 2]), torch.device("cpu"), dummy=lambda: 0))[-1] == (2, False)
    assert list(even_batches(Short([]), torch.device("cpu"), dummy=lambda: 0)) == [(0, False)] * 3


def test_deterministic_kernels_are_asked_for():
    from everest.engine.trainer import use_deterministic_kernels

    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        use_deterministic_kernels()
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]
