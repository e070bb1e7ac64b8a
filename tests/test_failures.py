"""What a user gets when things go wrong: a clear message, a bounded wait, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from everest.models import PretrainAutoencoder, save_everest
from tests.conftest import SUBPROCESS_TIMEOUT_S, free_port
from tests.test_engine_dist import DEEPSPEED, PYTHON, ROOT, WORKER
from tests.test_models import tiny_spec


def launch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, *args], cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The single 'error: ...' line a user error prints (and no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def test_missing_dataset_path_is_named(tmp_path: Path):
    proc = launch(
        str(ROOT / "launch" / "pretrain.py"),
        "data.synthetic=false",
        f"data.train_optimized_dir={tmp_path / 'nowhere'}",
        f"logging.log_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert f"data.train_optimized_dir={tmp_path / 'nowhere'}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_unreadable_dataset_is_named(tmp_path: Path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "index.json").write_text("{not json")
    proc = launch(
        str(ROOT / "launch" / "pretrain.py"),
        "data.synthetic=false",
        f"data.train_optimized_dir={tmp_path / 'shards'}",
        f"logging.log_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "shards" in proc.stderr and "index.json" in proc.stderr


def test_config_typo_fails_before_any_work(tmp_path: Path):
    proc = launch("-X", "importtime", str(ROOT / "launch" / "pretrain.py"), "model.mask_ration=0.9", cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        "command line (model.mask_ration=0.9): unknown key 'model.mask_ration'; did you mean 'model.mask_ratio'?"
        in one_line_error(proc)
    )
    assert not (tmp_path / "output").exists()
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "everest.config" in imported and not {"torch", "deepspeed"} & imported  # checked before heavy imports


def test_mask_ratio_leaving_no_targets_is_refused(tmp_path: Path):
    proc = launch(
        str(ROOT / "launch" / "pretrain.py"),
        "model.motion_centric_masking_ratio=0.7",
        "model.mask_ratio=0.6",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "no reconstruction targets are left" in proc.stderr


@pytest.mark.slow
def test_checkpoint_from_another_backbone_is_named(tmp_path: Path):
    save_everest(PretrainAutoencoder(tiny_spec(embed_dim=64, num_heads=4)), tmp_path / "wide.pt")
    proc = launch(
        str(ROOT / "launch" / "finetune.py"),
        f"model.pretrained_path={tmp_path / 'wide.pt'}",
        "model.embed_dim=48",
        "model.depth=2",
        "model.num_heads=4",
        "model.input_size=32",
        "model.patch_size=8",
        "training.num_frames=4",
        "training.frames_to_sample=4",
        f"data.synthetic_dir={tmp_path / 'syn'}",
        "data.synthetic_videos=4",
        f"logging.log_dir={tmp_path / 'logs'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "has shape (64, 3, 2, 8, 8) but the model expects (48, 3, 2, 8, 8)" in proc.stderr
    assert "another backbone" in proc.stderr


@pytest.mark.slow
def test_full_disk_during_save_keeps_previous_checkpoint(tmp_path: Path):
    ck = tmp_path / "ck"
    proc = launch(
        str(WORKER),
        "--out",
        str(tmp_path / "out.json"),
        "--fail-save",
        "2",
        "training.batch_size=8",
        "checkpoint.save_last=true",
        f"checkpoint.dir={ck}",
        f"logging.log_dir={tmp_path / 'logs'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "No space left on device" in proc.stderr and "is intact" in proc.stderr
    latest = (ck / "latest").read_text()
    assert latest == "everest_epoch0000_step00000004"
    assert not (ck / "everest_epoch0001_step00000008").exists()  # the partial tag was removed
    from everest.models import load_pretrain_model

    assert load_pretrain_model(ck).spec.embed_dim == 32


@pytest.mark.slow
def test_one_rank_crashing_stops_the_other(tmp_path: Path):
    # A hang (the survivor waiting in a collective forever) would end in TimeoutExpired.
    proc = subprocess.run(
        [
            DEEPSPEED,
            "--num_gpus",
            "2",
            "--master_port",
            free_port(),
            str(WORKER),
            "--out",
            str(tmp_path / "out.json"),
            "--crash-rank",
            "1",
            "--crash-step",
            "2",
            "training.batch_size=4",
            f"checkpoint.dir={tmp_path / 'ck'}",
            f"logging.log_dir={tmp_path / 'logs'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert proc.returncode != 0
    assert not (tmp_path / "out.json").exists()


def _wait_for_line(proc: subprocess.Popen, marker: str) -> str:
    """Read the process's output until a line holds `marker` (the point the test means to interrupt)."""
    seen = ""
    for line in proc.stdout:
        seen += line
        if marker in line:
            return seen
    raise AssertionError(f"the process ended before printing {marker!r}:\n{seen[-3000:]}")


def _handles_sigterm(pid: int) -> bool:
    """Whether the process has installed a SIGTERM handler (Python installs none by default)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # it has already ended; the caller sees why
        return True
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_a_final_checkpoint_and_exits_with_the_signal_status(tmp_path: Path, sig):
    ck = tmp_path / "ck"
    overrides = [
        "training.batch_size=4",
        "training.max_epochs=100",
        "checkpoint.save_top_k=0",
        f"checkpoint.dir={ck}",
        f"logging.log_dir={tmp_path / 'logs'}",
    ]
    worker = [PYTHON, str(WORKER), "--clips", "256"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        worker + ["--out", str(tmp_path / "out.json"), *overrides],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    seen = _wait_for_line(proc, "epoch 0:")  # mid-training: the first epoch has ended
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    assert proc.returncode == 128 + sig, seen + output[-3000:]  # 130 for SIGINT, 143 for SIGTERM
    assert "Traceback" not in seen + output and "continue with the same command plus --resume auto" in output
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["interrupted"] and result["signal"] == sig and 0 < result["steps"] < 6400
    assert (ck / "latest").read_text() == result["last_tag"]
    assert f"step{result['steps']:08d}" in result["last_tag"]
    if sig != signal.SIGINT:
        return
    # Resuming continues in the same TensorBoard run folder (one run, not two).
    stop_at = result["steps"] + 8
    resumed = subprocess.run(
        worker
        + ["--out", str(tmp_path / "resumed.json"), "--resume", "auto", *overrides, f"training.max_steps={stop_at}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        env=env,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    second = json.loads((tmp_path / "resumed.json").read_text())
    assert second["run_dir"] == result["run_dir"] and second["steps"] == stop_at
    assert [p.name for p in (tmp_path / "logs").iterdir()] == [Path(result["run_dir"]).name]
    assert len(list(Path(result["run_dir"]).glob("events.out.tfevents.*"))) == 2


@pytest.mark.parametrize("entry", ["pretrain.py", "finetune.py", "evaluate.py", "visualize.py"])
def test_ctrl_c_at_start_up_exits_cleanly(tmp_path: Path, entry: str):
    args = {
        "evaluate.py": ["--config", "configs/finetune/default_cpu.yaml", "--checkpoint", str(tmp_path)],
        "visualize.py": ["--output_dir", str(tmp_path / "pictures")],
    }.get(entry, [])
    overrides = [f"checkpoint.dir={tmp_path / 'ck'}", f"logging.log_dir={tmp_path / 'logs'}"]
    proc = subprocess.Popen(
        [PYTHON, str(ROOT / "launch" / entry), *args, *overrides],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while proc.poll() is None and not _handles_sigterm(proc.pid):  # the entry point's first lines ran
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "interrupted (SIGINT)" in err


@pytest.mark.slow
def test_rerun_into_a_finished_runs_folder_is_refused_and_leaves_it_intact(tmp_path: Path):
    ck = tmp_path / "ck"
    common = [
        "training.batch_size=8",
        "checkpoint.save_top_k=2",
        f"checkpoint.dir={ck}",
        f"logging.log_dir={tmp_path / 'logs'}",
    ]
    first = launch(str(WORKER), "--out", str(tmp_path / "first.json"), *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]

    def snapshot() -> dict[str, tuple[int, int]]:
        return {str(p.relative_to(ck)): (p.stat().st_size, p.stat().st_mtime_ns) for p in ck.rglob("*")}

    before, latest = snapshot(), (ck / "latest").read_text()
    assert len([p for p in ck.iterdir() if p.is_dir()]) == 2  # the top 2 of its 3 epochs
    # The same command again (the engine's own guard), and the entry point (refused before any import).
    again = launch(str(WORKER), "--out", str(tmp_path / "again.json"), *common, cwd=tmp_path)
    entry = launch(str(ROOT / "launch" / "pretrain.py"), *common, cwd=tmp_path)
    for proc in (again, entry):
        assert proc.returncode == 2
        line = one_line_error(proc)
        assert f"checkpoint.dir={ck} already holds a run (latest checkpoint {latest})" in line
        assert "--resume auto" in line and "checkpoint.dir=NEW_FOLDER" in line
    assert snapshot() == before and (ck / "latest").read_text() == latest
    assert not (tmp_path / "again.json").exists()


@pytest.mark.slow
def test_s3_without_network_fails_clearly(tmp_path: Path):
    # The wait is bounded (the subprocess limit); how long it takes on a busy machine is not asserted.
    proc = launch(
        str(ROOT / "launch" / "pretrain.py"),
        "data.synthetic=false",
        "data.train_optimized_dir=s3://everest-test-bucket/shards",
        "data.cloud_type=s3_public",
        f"logging.log_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "s3://everest-test-bucket/shards" in proc.stderr and "Traceback" not in proc.stderr
