"""The EVEREST-vs-VideoMAE benchmark runs end to end in a tiny configuration."""

import json

import pytest

from everest.bench.__main__ import main
from everest.bench.workloads import STAGES
from everest.estimate.plans import finetune_plan, pretrain_plan
from everest.models import spec_for

TINY = ["--backbone", "vit-s", "--batch", "2", "--frames", "4", "--size", "32", "--patch", "8",
        "--spec", "embed_dim=48", "--spec", "depth=2", "--spec", "num_heads=2",
        "--spec", "decoder_embed_dim=32", "--spec", "decoder_num_heads=2", "--spec", "decoder_depth=1",
        "--repeats", "2", "--breakdown", "1", "--device", "cpu"]
TINY_SPEC = spec_for("vit-s", embed_dim=48, depth=2, num_heads=2, decoder_embed_dim=32, decoder_num_heads=2,
                     decoder_depth=1, num_frames=4, input_size=32, patch_size=8)
KEYS = {"flops", "wall_s", "peak_mem_bytes", "encoder_tokens", "decoder_tokens"}


@pytest.mark.parametrize("task, strategies", [("pretrain", ["everest", "videomae", "none"]),
                                              ("finetune", ["everest", "none"])])
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
