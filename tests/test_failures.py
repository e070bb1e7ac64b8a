"""What a user gets when things go wrong: a clear message, a bounded wait, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from everest.models import PretrainAutoencoder, WeightsError, save_everest
from tests.test_engine_dist import DEEPSPEED, PYTHON, ROOT, WORKER, _port
from tests.test_models import tiny_spec


def launch(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_missing_dataset_path_is_named(tmp_path: Path):
    proc = launch(str(ROOT / "launch" / "pretrain.py"), "data.synthetic=false",
                  f"data.train_optimized_dir={tmp_path / 'nowhere'}", f"logging.log_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"data.train_optimized_dir={tmp_path / 'nowhere'}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreadable_dataset_is_named(tmp_path: Path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "index.json").write_text("{not json")
    proc = launch(str(ROOT / "launch" / "pretrain.py"), "data.synthetic=false",
                  f"data.train_optimized_dir={tmp_path / 'shards'}", f"logging.log_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode != 0
    assert "shards" in proc.stderr and "index.json" in proc.stderr


def test_config_typo_fails_before_any_work(tmp_path: Path):
    start = time.monotonic()
    proc = launch(str(ROOT / "launch" / "pretrain.py"), "model.mask_ration=0.9", cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown key 'model.mask_ration'; did you mean 'model.mask_ratio'?" in proc.stderr
    assert not (tmp_path / "output").exists() and time.monotonic() - start < 60


def test_mask_ratio_leaving_no_targets_is_refused(tmp_path: Path):
    proc = launch(str(ROOT / "launch" / "pretrain.py"), "model.mask_ratio=0.6", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no reconstruction targets are left" in proc.stderr


def test_checkpoint_from_another_backbone_is_named(tmp_path: Path):
    save_everest(PretrainAutoencoder(tiny_spec(embed_dim=64, num_heads=4)), tmp_path / "wide.pt")
    proc = launch(str(ROOT / "launch" / "finetune.py"), f"model.pretrained_path={tmp_path / 'wide.pt'}",
                  "model.embed_dim=48", "model.depth=2", "model.num_heads=4", "model.input_size=32",
                  "model.patch_size=8", "training.num_frames=4", "training.frames_to_sample=4",
                  f"data.synthetic_dir={tmp_path / 'syn'}", "data.synthetic_videos=4",
                  f"logging.log_dir={tmp_path / 'logs'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "has shape (64, 3, 2, 8, 8) but the model expects (48, 3, 2, 8, 8)" in proc.stderr
    assert "another backbone" in proc.stderr


def test_full_disk_during_save_keeps_previous_checkpoint(tmp_path: Path):
    ck = tmp_path / "ck"
    proc = launch(str(WORKER), "--out", str(tmp_path / "out.json"), "--fail-save", "2", "training.batch_size=8",
                  "checkpoint.save_last=true", f"checkpoint.dir={ck}", f"logging.log_dir={tmp_path / 'logs'}",
                  cwd=tmp_path)
    assert proc.returncode == 2
    assert "No space left on device" in proc.stderr and "is intact" in proc.stderr
    latest = (ck / "latest").read_text()
    assert latest == "everest_epoch0000_step00000004"
    assert not (ck / "everest_epoch0001_step00000008").exists()  # the partial tag was removed
    from everest.models import load_pretrain_model

    assert load_pretrain_model(ck).spec.embed_dim == 32


def test_one_rank_crashing_stops_the_other(tmp_path: Path):
    start = time.monotonic()
    proc = subprocess.run([DEEPSPEED, "--num_gpus", "2", "--master_port", _port(), str(WORKER), "--out",
                           str(tmp_path / "out.json"), "--crash-rank", "1", "--crash-step", "2",
                           "training.batch_size=4", f"checkpoint.dir={tmp_path / 'ck'}",
                           f"logging.log_dir={tmp_path / 'logs'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert time.monotonic() - start < 240
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_a_final_checkpoint_and_exits_cleanly(tmp_path: Path, sig):
    ck = tmp_path / "ck"
    proc = subprocess.Popen([PYTHON, str(WORKER), "--out", str(tmp_path / "out.json"), "--clips", "256",
                             "training.batch_size=4", "training.max_epochs=100", "checkpoint.save_top_k=0",
                             f"checkpoint.dir={ck}", f"logging.log_dir={tmp_path / 'logs'}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 240
    seen = ""
    while "everest:" not in seen and time.monotonic() < deadline:  # the loop has started
        seen += proc.stdout.readline()
    time.sleep(3)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, seen + output[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["interrupted"] and 0 < result["steps"] < 6400
    assert (ck / "latest").read_text() == result["last_tag"]
    assert f"step{result['steps']:08d}" in result["last_tag"]


def test_s3_without_network_fails_clearly_within_a_timeout(tmp_path: Path):
    start = time.monotonic()
    proc = launch(str(ROOT / "launch" / "pretrain.py"), "data.synthetic=false",
                  "data.train_optimized_dir=s3://everest-test-bucket/shards", "data.cloud_type=s3_public",
                  f"logging.log_dir={tmp_path}", cwd=tmp_path, timeout=240)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "s3://everest-test-bucket/shards" in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - start < 180
