"""The side-by-side against the published code: its target preparation (written from its
engine) equals ours on random clips, and a missing published folder is one clear line."""

import json
import sys
from pathlib import Path

import pytest
import torch

from everest.bench.versus import MEAN, STD, _published_targets, import_published
from everest.patches import pixel_targets


def test_published_target_preparation_equals_ours():
    g = torch.Generator().manual_seed(4)
    video = torch.randn(2, 3, 4, 32, 48, generator=g)  # 2 slots x 2 x 3 positions of 16 px
    index = torch.stack([torch.randperm(12, generator=g)[:5] for _ in range(2)])
    whole = _published_targets(video)
    theirs = whole[torch.arange(2)[:, None], index]
    ours = pixel_targets(video, index, 2, 16, True, mean=torch.tensor(MEAN), std=torch.tensor(STD))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_missing_published_files_name_the_folder(tmp_path):
    (tmp_path / "modeling_finetune.py").write_text("")
    with pytest.raises(SystemExit, match=f"--published {tmp_path}: missing modeling_pretrain.py"):
        import_published(str(tmp_path))


def test_published_modules_import_each_other_from_their_folder_only(tmp_path):
    (tmp_path / "modeling_finetune.py").write_text("WIDTH = 768\n")
    (tmp_path / "modeling_pretrain.py").write_text("from modeling_finetune import WIDTH\nimport json\n")
    finders = list(sys.meta_path)
    try:
        mp, mf = import_published(str(tmp_path))
        assert mp.WIDTH == mf.WIDTH == 768 and mp.json is json  # other names resolve as usual
        assert Path(mp.__file__) == tmp_path / "modeling_pretrain.py"
    finally:
        sys.modules.pop("modeling_pretrain", None)
        sys.modules.pop("modeling_finetune", None)
    assert sys.meta_path == finders  # the finder is gone again


def test_gpu_table_needs_cuda(capsys, tmp_path):
    from everest.bench.gpu import main

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["--published", str(tmp_path)]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
