"""The estimator: analytical FLOPs against torch's counter, activations against autograd's
saved tensors, model states from DeepSpeed's estimators, and the launch/estimate.py report."""

import pytest
import torch
import torch.nn.functional as F

from everest.estimate.flops import count_flops, finetune_flops, pretrain_flops
from everest.estimate.memory import (
    ModelStates,
    activation_memory,
    largest_micro_batch,
    model_states,
    parameter_counts,
    saved_tensor_bytes,
)
from everest.estimate.plans import finetune_plan, pretrain_plan
from everest.models import PretrainAutoencoder, VideoClassifier
from everest.patches import pixel_targets
from tests.test_models import random_indices, tiny_spec

SPECS = {
    "tiny": tiny_spec(),
    "odd": tiny_spec(
        embed_dim=40,
        num_heads=2,
        depth=3,
        mlp_ratio=48 / 11,
        decoder_embed_dim=24,
        decoder_num_heads=3,
        decoder_depth=1,
        input_size=40,
        num_frames=6,
    ),
}


def _pretrain_step(model, video, visible, target):
    """What PretrainObjective runs: every token scored without gradient, the model on the chosen ones."""
    with torch.no_grad():
        model.embed(video)
    model(video, visible, target).square().mean().backward()


def _indices(spec, plan, batch):
    if plan.encoder == spec.num_patches:
        return None, None
    return random_indices(batch, spec.num_patches, plan.encoder, plan.targets)


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("strategy", ["everest", "videomae"])
def test_pretrain_flops_match_counted(spec_name, strategy):
    spec = SPECS[spec_name]
    model = PretrainAutoencoder(spec)
    plan = pretrain_plan(strategy, spec)
    batch = 2
    visible, target = _indices(spec, plan, batch)
    video = torch.randn(batch, 3, spec.num_frames, spec.input_size, spec.input_size)

    counted = count_flops(lambda: _pretrain_step(model, video, visible, target))
    predicted = pretrain_flops(spec, plan).scaled(batch).total
    assert counted > 0
    assert abs(predicted - counted) <= 0.05 * counted


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("strategy", ["everest", "none"])
def test_finetune_flops_match_counted(spec_name, strategy):
    spec = SPECS[spec_name]
    model = VideoClassifier(spec, num_outputs=7)
    plan = finetune_plan(strategy, spec)
    batch = 2
    keep = None if strategy == "none" else random_indices(batch, spec.num_patches, plan.encoder, 0)[0]
    video = torch.randn(batch, 3, spec.num_frames, spec.input_size, spec.input_size)

    def step():  # as FinetuneObjective: with MCM every token is scored without gradient first
        if keep is not None:
            with torch.no_grad():
                model.embed(video)
        F.cross_entropy(model(video, keep), torch.tensor([1, 2])).backward()

    counted = count_flops(step)
    predicted = finetune_flops(spec, plan, 7).scaled(batch).total
    assert abs(predicted - counted) <= 0.05 * counted


def test_attention_counts_on_cpu():
    q = torch.randn(1, 2, 16, 8, requires_grad=True)
    flops = count_flops(lambda: F.scaled_dot_product_attention(q, q, q).sum().backward())
    assert flops == 4 * 2 * 16 * 16 * 8 + 10 * 2 * 16 * 16 * 8  # forward + backward, torch's formulas


def test_everest_plan_counts_match_the_design():
    spec = tiny_spec(input_size=224, patch_size=16, num_frames=16)
    ev, tube = pretrain_plan("everest", spec), pretrain_plan("videomae", spec)
    assert (ev.encoder, ev.decoder, ev.targets) == (156, 470, 314)
    assert (tube.encoder, tube.decoder, tube.targets) == (8 * 20, 1568, 1568 - 160)
    assert finetune_plan("everest", spec).encoder == 940


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("strategy", ["everest", "videomae"])
def test_activation_estimate_matches_saved_tensors(dtype, strategy):
    spec = tiny_spec(
        embed_dim=128, num_heads=2, depth=3, decoder_embed_dim=64, decoder_num_heads=1, input_size=64, num_frames=8
    )
    model = PretrainAutoencoder(spec).to(dtype)
    plan = pretrain_plan(strategy, spec)
    batch = 2
    visible, target = _indices(spec, plan, batch)
    video01 = torch.rand(batch, 3, spec.num_frames, spec.input_size, spec.input_size)

    def forward():
        pred = model(video01.to(dtype), visible, target)
        pixels = pixel_targets(video01, target, spec.tubelet_size, spec.patch_size, normalize=True)
        return F.mse_loss(pred.float(), pixels)

    measured = saved_tensor_bytes(forward, exclude=model.parameters()) / batch
    estimate = activation_memory(spec, plan, dtype)
    assert abs(estimate.plain - measured) <= 0.1 * measured
    assert estimate.checkpointed < estimate.plain


def test_model_states_follow_deepspeed():
    params, largest = 100_000_000, 2_000_000
    zero0 = model_states(params, largest, 0, 8, 1)
    zero2 = model_states(params, largest, 2, 8, 1)
    zero3 = model_states(params, largest, 3, 8, 1)
    offload = model_states(params, largest, 3, 8, 1, offload_optimizer=True, offload_param=True)
    assert zero0.gpu_bytes == 20 * params
    assert zero2.gpu_bytes == 2 * params + 18 * params // 8
    assert zero3.gpu_bytes == 4 * largest + 18 * params // 8
    assert offload.gpu_bytes == 4 * largest and offload.cpu_bytes > 0
    assert largest_micro_batch(10 * 2**30, ModelStates(2**30, 0), 2**28, 2**30) == 32


def test_parameter_counts_on_meta_model():
    with torch.device("meta"):
        model = PretrainAutoencoder(tiny_spec())
    total, largest = parameter_counts(model)
    assert total == sum(p.numel() for p in model.parameters())
    assert largest == 3 * 2 * 8 * 8 * 48 + 48  # the tubelet embedding, the biggest single module here


@pytest.mark.parametrize("ds_config", ["ds_configs/zero2.json", "ds_configs/zero3_offload.json"])
def test_estimate_cli_prints_the_report(root, capsys, ds_config):
    from everest.cli.estimate import main

    code = main(
        [
            "--config",
            str(root / "configs/pretrain/vit_b_k400.yaml"),
            "--deepspeed_config",
            str(root / ds_config),
            "--gpus",
            "8",
            "--nodes",
            "1",
            "--gpu-memory",
            "80",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "model states (DeepSpeed's estimator)" in out
    stage = "ZeRO-3" if "zero3" in ds_config else "ZeRO-2"
    assert stage in out
    total_row = next(line for line in out.splitlines() if line.startswith("| total GFLOPs"))
    assert float(total_row.rstrip(" |").split("|")[-1]) < 0.6  # EVEREST / VideoMAE
    batch_row = next(line for line in out.splitlines() if line.startswith("| largest micro-batch per GPU |"))
    assert int(batch_row.split("|")[2]) > int(batch_row.split("|")[3]) > 0


@pytest.mark.parametrize("strategy", ["everest", "videomae"])
def test_model_flops_match_the_math_attention_count(strategy):
    """Without SDPA's recompute the analytical count is what code keeping the scores does."""
    spec = SPECS["odd"].with_(attention_backend="math")
    model = PretrainAutoencoder(spec)
    plan = pretrain_plan(strategy, spec)
    visible, target = _indices(spec, plan, 2)
    video = torch.randn(2, 3, spec.num_frames, spec.input_size, spec.input_size)
    counted = count_flops(lambda: _pretrain_step(model, video, visible, target))
    flops = pretrain_flops(spec, plan).scaled(2)
    assert flops.recompute > 0
    assert flops.model == counted == flops.total - flops.recompute
