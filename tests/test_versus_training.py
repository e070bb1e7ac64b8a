"""The training-loop comparison against the published code, without the published files: our
side's lr/wd per group against the published formula written here, the tie check, the tables
and JSON, the CPU shims undone, and one clear line when --published lacks a file."""

import json
import math
from dataclasses import asdict, replace

import pytest
import torch

from everest.bench import versus_training as vt
from everest.bench.timing import write_json


def published_lr(step: int, base: float, final: float, total: int, warmup: int) -> float:
    """VideoMAE's cosine_scheduler, as its code defines it: a warmup of `warmup` values from 0
    to base inclusive, then a cosine from base towards final over the remaining steps."""
    if step < warmup:
        return base * step / (warmup - 1) if warmup > 1 else 0.0
    i, rest = step - warmup, total - warmup
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / rest))


@pytest.mark.parametrize("task", ["pretrain", "finetune"])
def test_our_lr_and_wd_per_group_follow_the_published_schedule(task, tmp_path):
    from everest.engine.optim import Schedules, build_optimizer
    from everest.models.vit import layer_id_for

    steps, batch = 40, 2
    recipe = vt.recipe_for(task, steps)
    cfg = vt.our_config(task, recipe, batch, steps, str(tmp_path))
    our_task = vt._our_task(task, cfg, _published_like_state(task, cfg))
    groups = our_task.param_groups(recipe.weight_decay)
    optimizer = build_optimizer(groups, cfg, cpu_offload=False)
    schedules = Schedules(cfg, steps, steps, global_batch=batch)
    base, final = recipe.lr * batch / 256, recipe.min_lr * batch / 256
    for step in range(steps):
        schedules.apply(optimizer, step)
        lr = published_lr(step, base, final, steps, recipe.warmup_steps)
        wd = published_lr(step, recipe.weight_decay, recipe.weight_decay_end, steps, 0)
        for group, names in zip(optimizer.param_groups, (g["names"] for g in groups)):
            layer = layer_id_for(names[0].removeprefix("model."), vt.DEPTH)
            scale = recipe.layer_decay ** (vt.DEPTH + 1 - layer) if task == "finetune" else 1.0
            assert group["lr"] == pytest.approx(lr * scale, rel=1e-12, abs=1e-15)
            assert group["weight_decay"] == (pytest.approx(wd, rel=1e-12) if group["apply_decay"] else 0.0)


def _published_like_state(task: str, cfg) -> dict[str, torch.Tensor]:
    """A state dict in the published model's names (our model's own, renamed back)."""
    from everest.tasks.finetune import build_classifier
    from everest.tasks.pretrain import PretrainTask

    if task == "pretrain":
        return PretrainTask(cfg).model.state_dict()
    state = build_classifier(cfg).state_dict()
    return {k.removeprefix("encoder."): v for k, v in state.items()}


def test_group_labels_follow_decay_and_layers():
    names = ["encoder.patch_embed.proj.weight", "encoder.blocks.1.norm1.bias", "head.weight"]
    decays = {names[0]: True, names[1]: False, names[2]: True}
    assert vt.group_labels(names, decays, 1.0) == {"decay": [names[0], names[2]], "no decay": [names[1]]}
    assert vt.group_labels(names, decays, 0.75) == {
        "layer 0 decay": [names[0]],
        "layer 2 no decay": [names[1]],
        f"layer {vt.DEPTH + 1} decay": [names[2]],
    }


def test_a_swap_of_tokens_with_equal_scores_is_a_tie():
    scores = torch.tensor([0.5, 0.9, 0.9, 0.1, 0.7])
    assert vt.agreement(torch.tensor([2, 1]), torch.tensor([1, 2]), scores) == "same"
    assert vt.agreement(torch.tensor([1, 4]), torch.tensor([2, 4]), scores) == "tie"
    assert vt.agreement(torch.tensor([1, 0]), torch.tensor([1, 4]), scores) == "different"


def test_batches_are_the_same_for_a_seed_and_have_no_static_tokens():
    a, b = vt.make_batches(3, 2), vt.make_batches(3, 2)
    assert all(torch.equal(x["video"], y["video"]) and torch.equal(x["label"], y["label"]) for x, y in zip(a, b))
    video = a[0]["video"]
    assert video.shape == (2, vt.FRAMES, vt.SIZE, vt.SIZE, 3) and video.dtype == torch.uint8
    assert (video[:, 1:] != video[:, :-1]).any(dim=(2, 3, 4)).all()  # every frame differs from the last


def _comparison(task: str, steps: int = 5) -> vt.TrainingComparison:
    groups = {"decay": ["a.weight"], "no decay": ["a.bias"]}
    series = {label: [[1e-3 * (s + 1), 0.05 if label == "decay" else 0.0] for s in range(steps)] for label in groups}
    return vt.TrainingComparison(
        task=task,
        steps=steps,
        batch=2,
        recipe=asdict(vt.recipe_for(task, steps)),
        losses={"ours": [1.0 + 1e-7] * steps, "published": [1.0] * steps},
        grad_norms={"ours": [0.5] * steps, "published": [0.5] * steps},
        groups=groups,
        group_lr_wd={"ours": series, "published": series},
        max_loss_rel_diff=1e-7,
        max_loss_step=3,
        final_param_rel_diff=2e-7,
        max_tensor_rel_diff=5e-7,
        max_lr_rel_diff=0.0,
        max_wd_abs_diff=0.0,
        max_grad_norm_rel_diff=1e-7,
        own_tokens={"same": 4, "tie": 1, "different": 0},
        shims=["torch.cuda.synchronize -> no-op"],
    )


def test_tables_and_json(tmp_path):
    results = [_comparison("pretrain"), _comparison("finetune")]
    text = vt.render(results, "CPU test")
    row = "| pretrain | 5 | 1.00e-07 (step 3) | 2.00e-07 | 5.00e-07 | 1.00e-07 | 0.0e+00 | 0.0e+00 | 4 / 1 / 0 |"
    assert row in text
    warmup = results[0].recipe["warmup_steps"]
    assert vt.report_steps(5, warmup) == [0, 2, 4]
    assert "| finetune | 4 | decay | 0.005 | 0.005 | 0.05 | 0.05 |" in text
    assert text.count("- torch.cuda.synchronize -> no-op") == 1  # each shim named once
    path = write_json(tmp_path / "out.json", {"training_comparisons": [asdict(c) for c in results]})
    record = json.loads(path.read_text())["training_comparisons"][1]
    assert record["task"] == "finetune" and record["losses"]["published"] == [1.0] * 5


def test_cpu_shims_are_undone():
    utils = type("utils", (), {"is_dist_avail_and_initialized": staticmethod(lambda: True)})
    before = (torch.cuda.amp.autocast, torch.cuda.amp.GradScaler, torch.cuda.synchronize)
    with vt.cpu_shims(utils) as shims:
        assert len(shims) == 4 and utils.is_dist_avail_and_initialized() is False
        torch.cuda.synchronize()  # no CUDA needed
        with torch.cuda.amp.autocast():
            assert not torch.is_autocast_enabled("cpu")
    assert (torch.cuda.amp.autocast, torch.cuda.amp.GradScaler, torch.cuda.synchronize) == before
    assert utils.is_dist_avail_and_initialized() is True


def test_missing_published_training_files_are_named_in_one_line(tmp_path):
    from everest.bench.versus import main

    for name in ("modeling_pretrain.py", "modeling_finetune.py", "utils.py"):
        (tmp_path / name).write_text("")
    expected = (
        f"--published {tmp_path}: missing engine_for_pretraining.py (sunilhoho/EVEREST), "
        "engine_for_finetuning.py (MCG-NJU/VideoMAE), optim_factory.py (MCG-NJU/VideoMAE)"
    )
    with pytest.raises(SystemExit) as err:
        main(["--published", str(tmp_path), "--train-steps", "5"])
    assert str(err.value) == expected


def test_short_runs_shorten_the_warmup():
    assert vt.recipe_for("pretrain", 200) == vt.RECIPES["pretrain"]
    assert vt.recipe_for("finetune", 30) == replace(vt.RECIPES["finetune"], warmup_steps=3)
