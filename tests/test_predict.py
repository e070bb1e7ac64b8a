"""launch/predict.py: the same top-1 and probabilities as evaluate's multi-view test on the same
clips (prepared shards, MCM on), rows keyed by path with class names; raw files with labels
from a list file, a bad file named; regression outputs; evaluate's CSV carries the path."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import everest
from everest.cli import predict
from everest.models import VideoClassifier, save_everest
from everest.models.vit import VideoViTSpec
from tests.test_extract import FRAMES, SPEC, make_videos

NAMES = ["left", "right", "up", "down"]
CFG = (
    "data: {normalize_mean: [0.45, 0.45, 0.45], normalize_std: [0.225, 0.225, 0.225]}\n"
    "model: {embed_dim: 32, depth: 2, num_heads: 2, input_size: 32, patch_size: 8, num_classes: 4,"
    " mcm: true, mcm_ratio: 0.4}\n"
    "training: {num_frames: 4, frames_to_sample: 4, temporal_stride: 2, test_num_segment: 3, test_num_crop: 2,"
    " num_workers: 0, val_batch_size: 3}\n"
)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    from everest.data.prepare import prepare_dataset

    work = tmp_path_factory.mktemp("predict")
    make_videos(work / "videos")
    (work / "cfg.yaml").write_text(CFG)
    torch.manual_seed(1)
    model = VideoClassifier(VideoViTSpec(**SPEC), 4, init_scale=1.0)
    save_everest(model, work / "classifier.pt")
    # Random-weight features of these videos share one large common part: centre the head on
    # it (and sharpen it) so that the predicted class differs between videos.
    encoder = everest.load_encoder(work / "classifier.pt", work / "cfg.yaml")
    common = torch.from_numpy(
        np.concatenate([v.features for v in everest.extract(encoder, str(work / "videos"), clips=3, on_skip=print)])
    )
    with torch.no_grad():
        model.head.weight.mul_(50)
        model.head.bias.copy_(-model.head.weight @ common.mean(0))
    save_everest(model, work / "classifier.pt")
    (work / "names.txt").write_text("\n".join(NAMES) + "\n")
    (work / "labels.csv").write_text("".join(f"{name} {k}\n" for k, name in enumerate(FRAMES)) + "truncated.mp4 1\n")
    prepare_dataset(work / "videos", work / "shards", work / "labels.csv", workers=1, min_frames=4, verbose=False)
    return work


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_top1_equals_evaluate_on_the_same_clips(work: Path):
    from everest.config import load_config
    from everest.engine.distributed import DistInfo
    from everest.tasks.multiview import evaluate_checkpoint

    cfg = load_config(work / "cfg.yaml", [f"data.test_optimized_dir={work / 'shards'}"])
    evaluate_checkpoint(cfg, work / "classifier.pt", "test", DistInfo(0, 1, 0, torch.device("cpu")), work / "eval")
    evaluated = {r["path"]: r for r in read_csv(work / "eval" / "predictions.csv")}
    assert sorted(evaluated) == sorted(str(work / "videos" / n) for n in FRAMES)  # evaluate's new path column

    assert (
        predict.main(
            [
                "--checkpoint",
                str(work / "classifier.pt"),
                "--videos",
                str(work / "shards"),
                "--config",
                str(work / "cfg.yaml"),
                "--class_names",
                str(work / "names.txt"),
                "--batch_size",
                "2",
                "--output",
                str(work / "predicted.csv"),
            ]
        )
        == 0
    )
    predicted = {r["path"]: r for r in read_csv(work / "predicted.csv")}
    assert predicted.keys() == evaluated.keys()
    predictions = {r["prediction"] for r in predicted.values()}
    assert len(predictions) > 1, "a constant prediction would make the comparison empty"
    for path, row in predicted.items():
        assert row["prediction"] == evaluated[path]["prediction"]
        assert row["label"] == evaluated[path]["label"]
        assert row["top5"] == evaluated[path]["top5"]
        assert float(row["confidence"]) == pytest.approx(float(evaluated[path]["confidence"]), abs=1e-5)
        assert row["class"] == NAMES[int(row["prediction"])]
        probs = [float(p) for p in row["top5_probs"].split()]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-5)


def test_raw_files_from_a_list_with_labels_and_a_bad_file(work: Path, capsys):
    assert (
        predict.main(
            [
                "--checkpoint",
                str(work / "classifier.pt"),
                "--videos",
                str(work / "labels.csv"),
                "--root",
                str(work / "videos"),
                "--config",
                str(work / "cfg.yaml"),
            ]
        )
        == 1
    )
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(out.splitlines()))
    assert [r["path"] for r in rows] == list(FRAMES)  # as written in the list
    assert [r["label"] for r in rows] == ["0", "1", "2", "3"]
    assert "skipped truncated.mp4: cannot open" in err


def test_regression_outputs_and_class_names_errors(work: Path, capsys):
    torch.manual_seed(2)
    save_everest(VideoClassifier(VideoViTSpec(**SPEC), 2), work / "regressor.pt")
    assert (
        predict.main(
            [
                "--checkpoint",
                str(work / "regressor.pt"),
                "--videos",
                str(work / "videos" / "deep"),
                "--config",
                str(work / "cfg.yaml"),
                "model.task_type=regression",
                "model.output_dim=2",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [Path(r["path"]).name for r in rows] == ["c.mp4", "d.mp4"]
    assert set(rows[0]) == {"path", "prediction0", "prediction1"}
    (work / "two_names.txt").write_text("a\nb\n")
    assert (
        predict.main(
            [
                "--checkpoint",
                str(work / "classifier.pt"),
                "--videos",
                str(work / "videos"),
                "--class_names",
                str(work / "two_names.txt"),
            ]
        )
        == 2
    )
    assert "2 names for 4 classes" in capsys.readouterr().err


def test_extraction_reads_prepared_shards(work: Path):
    from everest.cli import extract_features

    out = work / "shard_features"
    assert (
        extract_features.main(
            [
                "--checkpoint",
                str(work / "classifier.pt"),
                "--videos",
                str(work / "shards"),
                "--output",
                str(out),
                "--config",
                str(work / "cfg.yaml"),
                "--clips",
                "2",
                "--no_progress",
            ]
        )
        == 0
    )
    rows = read_csv(out / "index.csv")
    assert [r["path"] for r in rows] == [str(work / "videos" / n) for n in FRAMES]  # keyed by the source path
    assert [r["file"] for r in rows] == [n.replace(".mp4", ".npy") for n in FRAMES]
    assert [int(r["video_frames"]) for r in rows] == list(FRAMES.values())
    assert all(np.load(out / r["file"]).shape == (2, 32) for r in rows)


def test_class_names_of_the_built_in_collections(work: Path):
    from everest.config import load_config
    from everest.data.builtin import digits, objects, synthetic
    from everest.inference.predict import class_names
    from everest.models.weights import read_weights

    loaded = read_weights(work / "classifier.pt")
    for kind, names in (("objects", objects.CLASSES), ("motion", synthetic.CLASSES), ("digits", digits.CLASSES)):
        cfg = load_config(None, ["data.synthetic=true", f"data.synthetic_kind={kind}"])
        assert class_names(cfg, loaded, None, len(names)) == list(names)
    assert class_names(load_config(None, []), loaded, None, 4) is None
    assert class_names(load_config(None, []), loaded, str(work / "names.txt"), 4) == NAMES
