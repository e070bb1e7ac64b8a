"""The engine end to end on CPU (gloo): ZeRO stages and world sizes give the same trajectory,
accumulation, two simulated nodes, exact resume, crash-safe saves, resume on another world size,
export. Each run is a real process started like a user would (plain python or `deepspeed`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import SUBPROCESS_TIMEOUT_S, free_port

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "engine_worker.py"
PYTHON = sys.executable
DEEPSPEED = str(Path(PYTHON).with_name("deepspeed"))


def run(
    tmp: Path,
    name: str,
    *args: str,
    ranks: int = 1,
    ds: str = "ds_configs/zero0.json",
    launcher: list[str] | None = None,
    expect_ok: bool = True,
) -> dict:
    out = tmp / f"{name}.json"
    common = [str(WORKER), "--out", str(out), "--ds", ds, f"logging.log_dir={tmp / 'logs'}", *args]
    if launcher is not None:
        cmd = launcher + common
    elif ranks == 1:
        cmd = [PYTHON] + common
    else:
        cmd = [DEEPSPEED, "--num_gpus", str(ranks), "--master_port", free_port()] + common
    proc = subprocess.run(
        cmd,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if expect_ok:
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return json.loads(out.read_text())
    return {"returncode": proc.returncode}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engine")


@pytest.fixture(scope="module")
def reference(work: Path) -> dict:
    """One plain process, global batch 8, 3 epochs of 4 steps."""
    return run(work, "reference", "training.batch_size=8", f"checkpoint.dir={work / 'ck_ref'}")


def assert_same_losses(got: list[float], expected: list[float]) -> None:
    assert len(got) == len(expected)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=0, atol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 2, 3])
def test_two_ranks_match_one_process(work: Path, reference: dict, stage: int):
    result = run(
        work,
        f"zero{stage}",
        "training.batch_size=4",
        f"checkpoint.dir={work / f'ck_z{stage}'}",
        ranks=2,
        ds=f"ds_configs/zero{stage}.json",
    )
    assert result["world_size"] == 2 and result["steps"] == 12
    assert_same_losses(result["losses"], reference["losses"])
    assert reference["losses"][-1] < reference["losses"][0]
    # The process group was freed at shutdown, not left to interpreter exit (where freeing it
    # can abort a finished run): none of gloo's threads outlive it.
    threads = result["threads_after_shutdown"]
    if threads is not None:
        assert not [t for t in threads if "gloo" in t or "tcpstore" in t], threads


@pytest.mark.slow
def test_gradient_accumulation_matches_bigger_batch(work: Path, reference: dict):
    result = run(
        work,
        "accum",
        "training.batch_size=4",
        "training.accumulate_grad_batches=2",
        f"checkpoint.dir={work / 'ck_accum'}",
    )
    assert_same_losses(result["losses"], reference["losses"])


@pytest.mark.slow
def test_two_simulated_nodes_train_and_checkpoint(work: Path, reference: dict):
    hostfile = work / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
    port = free_port()
    procs = []
    for node_rank in (0, 1):
        launcher = [
            DEEPSPEED,
            "--hostfile",
            str(hostfile),
            "--no_ssh",
            "--node_rank",
            str(node_rank),
            "--num_nodes",
            "2",
            "--num_gpus",
            "1",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            port,
        ]
        cmd = launcher + [
            str(WORKER),
            "--out",
            str(work / "nodes.json"),
            "training.batch_size=4",
            f"checkpoint.dir={work / 'ck_nodes'}",
            f"logging.log_dir={work / 'logs'}",
        ]
        procs.append(subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=SUBPROCESS_TIMEOUT_S)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-2000:] + outputs[1][-2000:]
    result = json.loads((work / "nodes.json").read_text())
    assert result["world_size"] == 2
    assert_same_losses(result["losses"], reference["losses"])
    latest = (work / "ck_nodes" / "latest").read_text()
    assert sorted(p.name for p in (work / "ck_nodes" / latest).glob("everest_rank*.pt")) == [
        "everest_rank0.pt",
        "everest_rank1.pt",
    ]


@pytest.mark.slow
def test_stop_and_resume_continues_the_same_trajectory(work: Path, reference: dict):
    ck = work / "ck_resume"
    first = run(work, "part1", "training.batch_size=8", "training.max_steps=6", f"checkpoint.dir={ck}")
    assert first["steps"] == 6 and "step00000006" in first["last_tag"]  # stopped mid-epoch 1
    second = run(work, "part2", "training.batch_size=8", f"checkpoint.dir={ck}", "--resume", "auto")
    assert second["steps"] == 12
    assert_same_losses(first["losses"] + second["losses"], reference["losses"])


@pytest.mark.slow
def test_process_killed_during_save_keeps_previous_checkpoint(work: Path):
    from everest.models import load_pretrain_model

    ck = work / "ck_killed"
    result = run(
        work,
        "killed",
        "training.batch_size=8",
        f"checkpoint.dir={ck}",
        "checkpoint.save_last=true",
        "--kill-at-save",
        "2",
        expect_ok=False,
    )
    assert result["returncode"] != 0
    latest = (ck / "latest").read_text()
    assert latest == "everest_epoch0000_step00000004"  # the second save never became 'latest'
    assert (ck / "everest_epoch0001_step00000008").is_dir()  # its shards were written
    model = load_pretrain_model(ck)
    assert model.spec.embed_dim == 32
    resumed = run(work, "after_kill", "training.batch_size=8", f"checkpoint.dir={ck}", "--resume", "auto")
    assert resumed["steps"] == 12


@pytest.mark.slow
def test_zero3_checkpoint_of_two_ranks_resumes_on_one(work: Path, reference: dict):
    ck = work / "ck_z3_resize"
    first = run(
        work,
        "z3_two",
        "training.batch_size=4",
        "training.max_steps=8",
        f"checkpoint.dir={ck}",
        ranks=2,
        ds="ds_configs/zero3.json",
    )
    assert first["steps"] == 8
    second = run(
        work, "z3_one", "training.batch_size=8", f"checkpoint.dir={ck}", "--resume", "auto", ds="ds_configs/zero3.json"
    )
    assert second["world_size"] == 1 and second["steps"] == 12
    assert_same_losses(first["losses"] + second["losses"], reference["losses"])


@pytest.mark.slow
def test_export_loads_into_load_encoder(work: Path, reference: dict):
    from everest.models import load_encoder
    from everest.models.weights import read_weights

    out = work / "exported.pt"
    proc = subprocess.run(
        [PYTHON, str(ROOT / "launch" / "export.py"), "--checkpoint", str(work / "ck_z3"), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    encoder = load_encoder(out)
    video = torch.randn(2, 3, 4, 32, 32)
    assert encoder(video).shape == (2, 32, 32)
    # The ZeRO-3 (2 ranks) weights equal the single-process run's weights.
    ours = read_weights(out).state_dict
    single = read_weights(work / "ck_ref").state_dict
    for name, value in single.items():
        torch.testing.assert_close(ours[name], value, rtol=0, atol=1e-5)
