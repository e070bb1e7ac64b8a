"""The EVEREST-vs-VideoMAE benchmark runs end to end in a tiny configuration."""

import json

import pytest
import torch

from everest.bench.__main__ import main
from everest.bench.workloads import STAGES, _clip_batch, build_bench
from everest.config import config_from_dict
from everest.data import to_model_input
from everest.estimate.plans import finetune_plan, pretrain_plan
from everest.models import spec_for
from everest.tasks.finetune import FinetuneObjective
from everest.tasks.pretrain import PretrainObjective, sample_noise

TINY = [
    "--backbone",
    "vit-s",
    "--batch",
    "2",
    "--frames",
    "4",
    "--size",
    "32",
    "--patch",
    "8",
    "--spec",
    "embed_dim=48",
    "--spec",
    "depth=2",
    "--spec",
    "num_heads=2",
    "--spec",
    "decoder_embed_dim=32",
    "--spec",
    "decoder_num_heads=2",
    "--spec",
    "decoder_depth=1",
    "--repeats",
    "2",
    "--breakdown",
    "1",
    "--device",
    "cpu",
]
TINY_SPEC = spec_for(
    "vit-s",
    embed_dim=48,
    depth=2,
    num_heads=2,
    decoder_embed_dim=32,
    decoder_num_heads=2,
    decoder_depth=1,
    num_frames=4,
    input_size=32,
    patch_size=8,
)
KEYS = {"flops", "wall_s", "peak_mem_bytes", "encoder_tokens", "decoder_tokens"}


@pytest.mark.parametrize(
    "task, strategies", [("pretrain", ["everest", "videomae", "none"]), ("finetune", ["everest", "none"])]
)
def test_bench_runs_tiny(tmp_path, capsys, task, strategies):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    assert main([task, *TINY, "--json", str(out_json), "--plot", str(out_png)]) == 0
    table = capsys.readouterr().out
    assert "| strategy |" in table and "wall time" in table and "| stage |" in table
    results = json.loads(out_json.read_text())
    assert list(results) == strategies
    for name, r in results.items():
        assert KEYS <= set(r)
        assert r["flops"] == r["model_flops"] > r["recompute_flops"] > 0  # counted = the analytical model
        split = task == "pretrain" and name != "none"  # a decoder stage of its own
        assert set(r["stage_s"]) == (set(STAGES) if split else set(STAGES) - {"decoder"})
        assert all(seconds > 0 for seconds in r["stage_s"].values())
        assert r["wall_s"] > 0 and len(r["wall_s_all"]) == 2
        assert r["peak_mem_bytes"] is None or r["peak_mem_bytes"] > 0
        plan = pretrain_plan(name, TINY_SPEC) if task == "pretrain" else finetune_plan(name, TINY_SPEC)
        assert r["encoder_tokens"] == 2 * plan.encoder
        assert r["decoder_tokens"] == 2 * plan.decoder
    assert results["everest"]["flops"] < results[strategies[1]]["flops"]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _record_outputs(module: torch.nn.Module) -> list:
    """The losses `module` returns from now on."""
    losses = []
    module.register_forward_hook(lambda _, args, out: losses.append(out[0]))
    return losses


def test_step_benchmark_runs_the_training_objectives():
    """Its masked steps call PretrainObjective / FinetuneObjective, whose loss on the task's inputs
    (the config's normalisation, sample_noise keys) is the step's loss."""
    cpu = torch.device("cpu")
    clip = _clip_batch(TINY_SPEC, 2, torch.Generator().manual_seed(0))
    bench = build_bench("pretrain", TINY_SPEC, 2, cpu, torch.float32)
    for w in bench.workloads:
        if w.name == "none":  # no masking: no objective mode, an explicit forward
            assert w.objective is None
            continue
        assert type(w.objective) is PretrainObjective
        assert w.objective.mask_type == {"everest": "motion-centric", "videomae": "tube"}[w.name]
        outputs = _record_outputs(w.objective)
        loss, _ = w.forward()
        assert len(outputs) == 1 and outputs[0] is loss
        cfg = config_from_dict(
            {
                "model": {"mask_type": w.objective.mask_type, "input_size": 32, "patch_size": 8},
                "training": {"num_frames": 4},
            }
        )
        video = to_model_input(clip, cfg.data.normalize_mean, cfg.data.normalize_std, cpu)
        noise = sample_noise(torch.arange(2), 0, 0, TINY_SPEC.num_patches, cpu)
        expected, _, _ = PretrainObjective(bench.model, cfg)(video, noise)
        assert torch.equal(loss, expected)
    bench = build_bench("finetune", TINY_SPEC, 2, cpu, torch.float32)
    for w in bench.workloads:
        assert type(w.objective) is FinetuneObjective and w.objective.mcm == (w.name == "everest")
        outputs = _record_outputs(w.objective)
        loss, _ = w.forward()
        assert len(outputs) == 1 and outputs[0] is loss


def test_attention_bench_times_both_backends_at_the_step_shapes(tmp_path, capsys):
    from everest.bench import attention as bench

    shapes = bench.step_shapes("vit-s", 2, 4, 64)
    assert shapes["pretraining encoder"][0] == (2, 3, 6, 64) and shapes["pretraining decoder"][1] == 4
    out = tmp_path / "attention.json"
    assert (
        bench.main(["--backbone", "vit-s", "--frames", "4", "--size", "64", "--repeats", "1", "--json", str(out)]) == 0
    )
    assert "| pretraining encoder |" in capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    assert [r["stage"] for r in results] == list(shapes)
    assert all(r["sdpa_s"] > 0 and r["math_s"] > 0 for r in results)
