"""A checkpoint from elsewhere can never run code: a DeepSpeed folder whose pickle would write a
marker file is refused by every entry point that reads weights, with one line naming the file,
and the marker is never written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from everest.models import PretrainAutoencoder, WeightsError, read_weights
from everest.models.weights import everest_meta
from tests.test_failures import ROOT, launch
from tests.test_models import tiny_spec


class WritesAMarker:
    """Unpickling this calls open(marker, "w"): a stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def evil_checkpoint(root, zero: bool = False):
    """A DeepSpeed run folder (latest -> tag, the architecture beside the weights) whose model
    state, and under ZeRO also the optimizer partition, carries a WritesAMarker."""
    model = PretrainAutoencoder(tiny_spec())
    tag = root / "ck" / "global_step1"
    tag.mkdir(parents=True)
    (root / "ck" / "latest").write_text("global_step1")
    (tag / "everest_meta.json").write_text(json.dumps(everest_meta(model)))
    payload = {"module": model.state_dict(), "extra": WritesAMarker(root / "marker")}
    torch.save(payload, tag / "mp_rank_00_model_states.pt")
    if zero:
        torch.save(
            {"optimizer_state_dict": WritesAMarker(root / "marker")}, tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
        )
    return root / "ck"


@pytest.mark.parametrize("zero", [False, True])
def test_reading_refuses_the_pickle_and_names_the_file(tmp_path, zero):
    folder = evil_checkpoint(tmp_path, zero)
    with pytest.raises(WeightsError, match=r"_states\.pt: refused: the file pickles [\w.]+, not only tensors"):
        read_weights(folder)
    assert not (tmp_path / "marker").exists()
    assert torch.load is torch.serialization.load  # the weights-only patch is undone


def _one_line_naming_the_file(err: str, tmp_path) -> None:
    lines = [line for line in err.splitlines() if "refused" in line]
    assert len(lines) == 1 and "mp_rank_00_model_states.pt: refused" in lines[0], err
    assert not (tmp_path / "marker").exists()


def _video(path):
    from everest.data.builtin.synthetic import write_video

    write_video(path, (np.random.default_rng(0).random((8, 32, 32, 3)) * 255).astype(np.uint8), fps=8)
    return path


def test_every_entry_point_that_reads_weights_refuses_it(tmp_path, capsys):
    from everest.cli import convert_weights, export, extract_features, predict, visualize

    folder = str(evil_checkpoint(tmp_path))
    video = str(_video(tmp_path / "clip.mp4"))
    small = ["model.input_size=32", "training.num_frames=4", "training.frames_to_sample=4"]
    calls = {
        "export": lambda: export.main(["--checkpoint", folder, "--output", str(tmp_path / "out.pt")]),
        "convert_weights": lambda: convert_weights.main(
            ["--input", folder, "--output", str(tmp_path / "out.pth"), "--to", "videomae"]
        ),
        "extract_features": lambda: extract_features.main(
            ["--checkpoint", folder, "--videos", video, "--output", str(tmp_path / "features")]
        ),
        "predict": lambda: predict.main(
            ["--checkpoint", folder, "--videos", video, "--output", str(tmp_path / "p.csv")]
        ),
        "visualize": lambda: visualize.main(
            ["--checkpoint", folder, "--video", video, "--output_dir", str(tmp_path / "pictures"), *small]
        ),
    }
    for name, call in calls.items():
        assert call() == 2, name
        _one_line_naming_the_file(capsys.readouterr().err, tmp_path)


@pytest.mark.slow
def test_fine_tuning_refuses_it_as_pretrained_path(tmp_path):
    folder = evil_checkpoint(tmp_path)
    proc = launch(
        str(ROOT / "launch" / "finetune.py"),
        f"model.pretrained_path={folder}",
        "model.embed_dim=48",
        "model.depth=2",
        "model.num_heads=4",
        "model.input_size=32",
        "model.patch_size=8",
        "training.num_frames=4",
        "training.frames_to_sample=4",
        f"data.synthetic_dir={tmp_path / 'syn'}",
        "data.synthetic_videos=10",
        "data.synthetic_heldout=4",
        f"logging.log_dir={tmp_path / 'logs'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    _one_line_naming_the_file(proc.stderr, tmp_path)
