"""Streaming loaders: batch format per split, seeded epoch shuffles, exact mid-epoch resume,
2 ranks x 2 workers, clear errors for missing/unreachable datasets, the built-in data."""

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest
import torch

from everest.config import ConfigError, config_from_dict
from everest.data import build_dataloader
from everest.data.builtin.synthetic import SyntheticSpec, ensure_builtin_dataset, generate_collection
from everest.data.prepare import prepare_dataset
from tests.conftest import SUBPROCESS_TIMEOUT_S, free_port

VIDEOS = 16


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """16 labelled 32x32 videos in small chunks (so shuffling crosses chunks), and the same videos
    with 2-dim float targets."""
    root = tmp_path_factory.mktemp("loader")
    generate_collection(root, SyntheticSpec(train_videos=VIDEOS, val_videos=1, test_videos=1, size=32, frames=24))
    speed = (root / "train_speed.csv").read_text().splitlines()
    (root / "targets.csv").write_text("\n".join(f"{line} {i:.1f}" for i, line in enumerate(speed)) + "\n")
    prepare_dataset(
        root / "videos", root / "classes", root / "train_motion.csv", workers=2, chunk_bytes="12KB", verbose=False
    )
    prepare_dataset(root / "videos", root / "targets", root / "targets.csv", workers=2, verbose=False)
    return root


def config(data_dir, **training):
    values = {
        "data": {f"{s}_optimized_dir": str(data_dir) for s in ("train", "val", "test")},
        "model": {"input_size": 16, "patch_size": 4},
        "training": {
            "batch_size": 2,
            "num_frames": 4,
            "frames_to_sample": 4,
            "temporal_stride": 2,
            "num_workers": 0,
            "test_num_segment": 3,
            "test_num_crop": 2,
            **training,
        },
    }
    return config_from_dict(values)


def indices(batches):
    return [i for b in batches for i in b["index"].tolist()]


def test_batch_format_per_split(datasets):
    cfg = config(datasets / "classes")
    train = next(iter(build_dataloader(cfg, "train")))
    assert train["video"].shape == (2, 4, 16, 16, 3) and train["video"].dtype == torch.uint8
    assert train["label"].dtype == torch.int64 and train["label"].shape == (2,)
    assert train["index"].dtype == torch.int64
    val = list(build_dataloader(cfg, "val"))
    assert sorted(indices(val)) == list(range(VIDEOS))  # every clip once
    assert all(torch.equal(b["label"], b["index"] % 4) for b in val)  # generate_collection's classes
    test = next(iter(build_dataloader(cfg, "test")))
    assert test["video"].shape == (2, 6, 4, 16, 16, 3) and test["video"].dtype == torch.uint8
    val_views = next(iter(build_dataloader(cfg, "val", multiview=True)))
    assert val_views["video"].shape == (2, 6, 4, 16, 16, 3)


def test_regression_targets(datasets):
    cfg = config(datasets / "targets")
    cfg.model.task_type, cfg.model.output_dim = "regression", 2
    batch = next(iter(build_dataloader(cfg, "val")))
    assert batch["label"].dtype == torch.float32 and batch["label"].shape == (2, 2)
    assert torch.equal(batch["label"][:, 1], batch["index"].float())


def test_subset_ratio_keeps_a_fraction(datasets):
    cfg = config(datasets / "classes")
    cfg.data.subset_ratio = 0.5
    kept = indices(build_dataloader(cfg, "val"))
    assert len(kept) == VIDEOS // 2 and len(set(kept)) == len(kept)


def test_shuffle_is_seeded_and_changes_every_epoch(datasets):
    cfg = config(datasets / "classes", batch_size=4)
    loader = build_dataloader(cfg, "train")
    first, second = indices(loader), indices(loader)
    assert sorted(first) == sorted(second) == list(range(VIDEOS)) and first != second
    again = build_dataloader(cfg, "train")
    assert indices(again) == first
    again.set_epoch(1)  # the trainer's epoch 1 is the loader's second pass
    assert indices(again) == second
    cfg.training.seed = 1
    assert indices(build_dataloader(cfg, "train")) != first


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_yields_only_the_rest(datasets, workers):
    cfg = config(datasets / "classes", num_workers=workers)
    loader = build_dataloader(cfg, "train")
    indices(loader)  # one full epoch first: the resumed one is epoch 2
    batches = iter(loader)
    seen = indices(next(batches) for _ in range(3))
    state = loader.state_dict()
    del batches
    resumed = build_dataloader(cfg, "train")
    resumed.load_state_dict(state)
    resumed.set_epoch(5)  # ignored: the state decides the epoch
    rest = indices(resumed)
    assert sorted(seen + rest) == list(range(VIDEOS)) and len(rest) == VIDEOS - 6
    full = build_dataloader(cfg, "train")
    indices(full)
    assert indices(full) == seen + rest  # the very order the uninterrupted epoch has


def _rank(rank, world, port, data_dir, out_dir):
    multiprocessing.set_start_method("fork", force=True)  # DataLoader workers as under torchrun/deepspeed
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = config(data_dir, num_workers=2)
        train = build_dataloader(cfg, "train")
        seen = {
            "train": [indices(train), indices(train)],
            "val": indices(build_dataloader(cfg, "val")),
            "len": len(train),
        }
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(seen, f)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_two_workers_see_every_clip_once(datasets, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    args = (2, int(free_port()), str(datasets / "classes"), str(tmp_path))
    ranks = [ctx.Process(target=_rank, args=(r, *args)) for r in range(2)]
    for p in ranks:
        p.start()
    for p in ranks:
        p.join(timeout=SUBPROCESS_TIMEOUT_S)
        assert p.exitcode == 0
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for epoch in range(2):
        parts = [s["train"][epoch] for s in seen]
        assert len(parts[0]) == len(parts[1]) == seen[0]["len"] * 2  # equal full batches on both ranks
        assert sorted(parts[0] + parts[1]) == list(range(VIDEOS))
    assert seen[0]["train"][0] != seen[0]["train"][1]
    assert sorted(seen[0]["val"] + seen[1]["val"]) == list(range(VIDEOS))


def test_missing_and_unreachable_datasets_fail_clearly(datasets, tmp_path):
    cfg = config(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="data.train_optimized_dir=.*nowhere.*prepare_data"):
        build_dataloader(cfg, "train")
    cfg.data.val_optimized_dir = None
    with pytest.raises(ConfigError, match="data.val_optimized_dir is not set"):
        build_dataloader(cfg, "val")
    with pytest.raises(ValueError, match="split"):
        build_dataloader(cfg, "validation")
    cfg.data.train_optimized_dir, cfg.data.cloud_type = "s3://everest-no-such-bucket-3141/shards", "s3_public"
    start = time.monotonic()
    with pytest.raises((ConnectionError, FileNotFoundError), match="s3://everest-no-such-bucket-3141/shards"):
        build_dataloader(cfg, "train")
    assert time.monotonic() - start < 60


def test_public_s3_dataset_reads_anonymously(datasets, tmp_path, monkeypatch):
    """A local S3 server (moto) stands in for a public bucket: no credentials, unsigned requests."""
    server_module = pytest.importorskip("moto.server")
    import boto3

    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        uploader = boto3.client("s3", aws_access_key_id="owner", aws_secret_access_key="owner")
        uploader.create_bucket(Bucket="public")
        for path in (datasets / "classes").iterdir():
            uploader.upload_file(str(path), "public", f"shards/{path.name}", ExtraArgs={"ACL": "public-read"})
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        cfg = config("s3://public/shards", num_workers=2)
        cfg.data.cloud_type, cfg.data.cache_dir = "s3_public", str(tmp_path / "cache")
        assert sorted(indices(build_dataloader(cfg, "val"))) == list(range(VIDEOS))
    finally:
        server.stop()


def _build_builtin(synthetic_dir, queue):
    cfg = config_from_dict({"data": {"synthetic": True, "synthetic_dir": synthetic_dir, "synthetic_videos": 4}})
    queue.put(str(ensure_builtin_dataset(cfg.data, workers=1)))


@pytest.mark.slow
def test_builtin_dataset_is_built_once_for_concurrent_ranks(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_builtin, args=(str(tmp_path / "synthetic"), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=SUBPROCESS_TIMEOUT_S)
        assert p.exitcode == 0
    paths = {queue.get(timeout=5) for _ in procs}
    assert len(paths) == 1
    shards = Path(paths.pop())
    assert all((shards / split).is_dir() and not (shards / split).is_symlink() for split in ("train", "val", "test"))
    names = {
        split: (tmp_path / "synthetic" / f"{split}_motion.csv").read_text().split("\n")[:-1]
        for split in ("train", "val", "test")
    }
    assert [len(v) for v in names.values()] == [4, 4, 4]  # held-out splits as large as the training one
    cfg = config_from_dict(
        {
            "data": {"synthetic": True, "synthetic_dir": str(tmp_path / "synthetic"), "synthetic_videos": 4},
            "model": {"input_size": 32, "patch_size": 8},
            "training": {
                "batch_size": 2,
                "num_frames": 4,
                "frames_to_sample": 4,
                "num_workers": 0,
                "test_num_segment": 2,
                "test_num_crop": 1,
            },
        }
    )
    assert indices(build_dataloader(cfg, "train", shuffle=False)) == [0, 1, 2, 3]
    test = next(iter(build_dataloader(cfg, "test")))
    assert test["video"].shape == (2, 2, 4, 32, 32, 3) and set(test["label"].tolist()) <= {0, 1, 2, 3}
    cfg.model.task_type = "regression"
    speed = next(iter(build_dataloader(cfg, "val")))["label"]
    assert speed.dtype == torch.float32 and speed.shape == (2, 1) and (speed > 0).all()
