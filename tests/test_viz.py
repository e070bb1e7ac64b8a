"""Reconstruction pictures: grid geometry, non-constant panels, and launch/visualize.py over
every checkpoint format fine-tuning reads, on a real video file and on the dataset."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from everest.files import META_FILE
from everest.models import PretrainAutoencoder, VideoClassifier, export_huggingface, export_videomae, save_everest
from everest.models.weights import everest_meta
from everest.viz import LEFT_MARGIN, SEPARATOR, TOP_MARGIN, reconstruction_grid, selection_grid
from tests.test_models import random_indices, tiny_spec

CONFIG = "configs/pretrain/default_cpu.yaml"
SIZE = 64  # default_cpu.yaml: 64 px, patch 8, 8 frames


def assert_panels_vary(image: np.ndarray, rows: int, cols: int, size: int, labelled: bool = False) -> None:
    step = size + SEPARATOR
    if labelled:
        assert_labelled(image, rows, cols, size)
        image = image[
            TOP_MARGIN : TOP_MARGIN + rows * step - SEPARATOR, LEFT_MARGIN : LEFT_MARGIN + cols * step - SEPARATOR
        ]
    assert image.shape == (rows * step - SEPARATOR, cols * step - SEPARATOR, 3)
    for r in range(rows):
        for c in range(cols):
            panel = image[r * step : r * step + size, c * step : c * step + size]
            assert panel.std() > 1.0, f"panel row {r} column {c} is constant"


def assert_labelled(image: np.ndarray, rows: int, cols: int, size: int) -> None:
    """Text beside every row, above every column, and a legend with the three token-role swatches."""
    step = size + SEPARATOR
    ink = image.min(axis=2) < 128  # dark text on the white margins
    for r in range(rows):
        assert ink[TOP_MARGIN + r * step : TOP_MARGIN + r * step + size, :LEFT_MARGIN].any(), f"row {r} has no title"
    for c in range(cols):
        assert ink[:TOP_MARGIN, LEFT_MARGIN + c * step : LEFT_MARGIN + (c + 1) * step].any(), f"column {c} unlabelled"
    legend = image[TOP_MARGIN + rows * step :]
    colours = {tuple(int(v) for v in px) for px in legend.reshape(-1, 3)}
    assert {(153, 153, 153), (204, 95, 95), (20, 20, 20)} <= colours  # visible, target, dropped swatches


def test_pictures_are_labelled():
    spec = tiny_spec(num_frames=8)
    video01 = torch.rand(3, 8, 32, 32)
    visible, target = random_indices(1, spec.num_patches, 6, 20)
    pred, scores = torch.randn(20, spec.patch_pixels), torch.rand(spec.num_patches)
    image = reconstruction_grid(video01, visible[0], target[0], pred, spec, True, scores, frames_to_show=4)
    bare = reconstruction_grid(video01, visible[0], target[0], pred, spec, True, scores, 4, labelled=False)
    assert_panels_vary(image, rows=4, cols=4, size=32, labelled=True)
    assert np.array_equal(
        image[TOP_MARGIN : TOP_MARGIN + bare.shape[0], LEFT_MARGIN : LEFT_MARGIN + bare.shape[1]], bare
    )


def test_reconstruction_grid_geometry_and_content():
    spec = tiny_spec(num_frames=8)
    torch.manual_seed(0)
    video01 = torch.rand(3, 8, 32, 32)
    visible, target = random_indices(1, spec.num_patches, 6, 20)
    pred = torch.randn(20, spec.patch_pixels)
    scores = torch.rand(spec.num_patches)
    image = reconstruction_grid(
        video01, visible[0], target[0], pred, spec, True, scores, frames_to_show=4, labelled=False
    )
    assert image.dtype == np.uint8
    assert_panels_vary(image, rows=4, cols=4, size=32)
    assert_panels_vary(
        reconstruction_grid(video01, visible[0], target[0], pred, spec, False, labelled=False), rows=3, cols=8, size=32
    )


def test_selection_grid_has_no_reconstruction_row():
    spec = tiny_spec()
    video01 = torch.rand(3, 4, 32, 32)
    visible, target = random_indices(1, spec.num_patches, 4, 8)
    image = selection_grid(video01, visible[0], target[0], spec, torch.rand(spec.num_patches), frames_to_show=3)
    assert_panels_vary(image, rows=3, cols=3, size=32, labelled=True)


@pytest.fixture(scope="module")
def video_file(tmp_path_factory) -> Path:
    """A short mp4: a bright square crossing a gradient."""
    av = pytest.importorskip("av")
    path = tmp_path_factory.mktemp("video") / "square.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 80, "yuv420p"
        for i in range(24):
            frame = np.tile(np.linspace(0, 120, 96, dtype=np.uint8)[None, :, None], (80, 1, 3))
            frame[20:44, 4 * i : 4 * i + 24] = (250, 220, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _model_for_config(root: Path):
    from everest.config import load_config
    from everest.models.spec import spec_from_config

    torch.manual_seed(1)
    return PretrainAutoencoder(spec_from_config(load_config(root / CONFIG)))


def _deepspeed_folder(model, out: Path) -> Path:
    """The layout DeepSpeed writes at ZeRO 0-2 (one model-states file per tag) plus our metadata."""
    tag = out / "epoch_1"
    tag.mkdir(parents=True)
    torch.save({"module": model.state_dict()}, tag / "mp_rank_00_model_states.pt")
    (tag / META_FILE).write_text(json.dumps(everest_meta(model)))
    (out / "latest").write_text("epoch_1")
    return out


def _run(root: Path, out: Path, *args: str, kind: str = "reconstruction") -> list[np.ndarray]:
    """The pictures launch/visualize.py wrote, all named video_<i>_<kind>_grid.png."""
    from everest.cli.visualize import main

    assert main(["--config", str(root / CONFIG), "--output_dir", str(out), "--seed", "3", *args]) == 0
    files = sorted(out.glob("video_*.png"))
    assert files and all(p.name.endswith(f"_{kind}_grid.png") for p in files), files
    return [np.asarray(Image.open(p).convert("RGB")) for p in files]


@pytest.mark.parametrize("fmt", ["deepspeed", "everest", "videomae", "huggingface"])
def test_visualize_video_file_every_checkpoint_format(root, tmp_path, video_file, fmt):
    model = _model_for_config(root)
    if fmt == "deepspeed":
        ckpt = _deepspeed_folder(model, tmp_path / "run")
    elif fmt == "everest":
        save_everest(model, ckpt := tmp_path / "model.pt")
    elif fmt == "videomae":
        export_videomae(model, ckpt := tmp_path / "model.pth")
    else:
        ckpt = export_huggingface(model, tmp_path / "hf")
    images = _run(
        root, tmp_path / "out", "--checkpoint", str(ckpt), "--video", str(video_file), "--frames_to_show", "4"
    )
    assert len(images) == 1
    assert_panels_vary(images[0], rows=4, cols=4, size=SIZE, labelled=True)


@pytest.mark.parametrize("mask_type", ["random", "tube"])
def test_visualize_baseline_masks_and_decoderless_checkpoints(root, tmp_path, video_file, mask_type):
    classifier = VideoClassifier(_model_for_config(root).spec, num_outputs=5)
    save_everest(classifier, ckpt := tmp_path / "finetuned.pt")
    images = _run(
        root,
        tmp_path / "out",
        "--checkpoint",
        str(ckpt),
        "--video",
        str(video_file),
        "--video",
        str(video_file),
        f"model.mask_type={mask_type}",
        kind="selection",
    )
    assert len(images) == 2
    for image in images:
        assert_panels_vary(image, rows=3, cols=8, size=SIZE, labelled=True)  # no reconstruction row without a decoder


def test_visualize_dataset_clips(root, tmp_path):
    pytest.importorskip("everest.data")
    model = _model_for_config(root)
    save_everest(model, ckpt := tmp_path / "model.pt")
    data = [
        f"data.synthetic_dir={tmp_path / 'synthetic'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.synthetic_videos=4",
        "data.synthetic_heldout=4",
    ]
    images = _run(
        root, tmp_path / "out", "--checkpoint", str(ckpt), "--num_samples", "2", "--frames_to_show", "8", *data
    )
    assert len(images) == 2
    for image in images:
        assert_panels_vary(image, rows=4, cols=8, size=SIZE, labelled=True)


@pytest.mark.parametrize("selection", ["uniform", "information"])
def test_visualiser_cuts_the_clip_evaluation_cuts(tmp_path, selection):
    """Same video, same settings: the visualiser's clip is evaluation's (short side included)."""
    from everest.cli.visualize import read_video
    from everest.config import config_from_dict
    from everest.data.builtin.synthetic import write_video
    from everest.data.codec import iter_source_frames
    from everest.data.loader import clip_maker

    rng = np.random.default_rng(5)
    frames = np.cumsum(rng.integers(0, 40, (15, 48, 80, 3)), axis=0).astype(np.uint8)  # changing, 48x80
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=10, lossless=True)
    decoded = np.stack(list(iter_source_frames(path)))
    record = {"video_id": 0, "num_frames": len(decoded), "label": np.zeros(1), "label_kind": 0}

    def both(short_side):
        cfg = config_from_dict(
            {
                "model": {"input_size": 32, "patch_size": 8},
                "training": {
                    "num_frames": 4,
                    "frames_to_sample": 8,
                    "temporal_stride": 2,
                    "frame_selection": selection,
                },
                "augmentation": {"short_side_size": short_side},
            }
        )
        maker = clip_maker(cfg, "val", multiview=False)
        maker.read_frames = lambda _record, indices: decoded[indices]
        return read_video(path, cfg), maker(record)["video"]

    ours, evaluation = both(40)
    assert ours.shape == (4, 32, 32, 3) and torch.equal(ours, evaluation)
    assert not torch.equal(ours, both(None)[0])  # the short side is honoured, not ignored
