from pathlib import Path

import pytest
import yaml

from everest.config import Config, ConfigError, config_from_dict, load_config, token_counts


def test_defaults_validate_and_match_design_counts():
    cfg = config_from_dict({})
    assert isinstance(cfg, Config)
    counts = token_counts(cfg)
    # DESIGN.md: N = 1568 gives K = 470, V = 156 and 940 kept at mcm_ratio 0.4.
    assert counts == {"tokens": 1568, "kept": 470, "visible": 156, "targets": 314, "mcm_kept": 940}


def test_yaml_and_dotted_overrides(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": {"backbone": "vit-s", "mask_ratio": 0.9}, "optimizer": {"lr": "1e-3"}}))
    cfg = load_config(path, ["model.mask_ratio=0.85", "training.batch_size=4", "optimizer.betas=[0.9, 0.999]"])
    assert cfg.model.backbone == "vit-s"
    assert cfg.model.mask_ratio == 0.85
    assert cfg.training.batch_size == 4
    assert cfg.optimizer.lr == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.optimizer.betas == [0.9, 0.999]


def test_every_shipped_config_is_valid(root: Path):
    files = sorted((root / "configs").rglob("*.yaml"))
    assert files, "configs/ holds no YAML files"
    for path in files:
        load_config(path)


@pytest.mark.parametrize(
    "values, overrides, fragment",
    [
        ({"model": {"mask_ration": 0.9}}, [], "did you mean 'model.mask_ratio'"),
        ({"modle": {}}, [], "did you mean 'model'"),
        ({}, ["training.batch_sise=3"], "did you mean 'training.batch_size'"),
        ({"model": {"mask_type": "motion"}}, [], "choose one of 'motion-centric', 'random', 'tube'"),
        ({"model": {"backbone": "vit-x"}}, [], "'vit-s', 'vit-b'"),
        ({"training": {"batch_size": 2.5}}, [], "training.batch_size: got 2.5, expected an integer"),
        ({"model": {"normalize_target": "yes"}}, [], "expected true or false"),
        ({"model": {"mask_ratio": 1.0}}, [], "model.mask_ratio=1.0 must lie in (0, 1)"),
        ({"model": {"mask_ratio": 0.0}}, [], "model.mask_ratio=0.0 must lie in (0, 1)"),
        ({"model": {"mask_ratio": 0.6, "motion_centric_masking_ratio": 0.7}}, [], "no reconstruction targets"),
        ({"model": {"input_size": 100}}, [], "model.input_size=100 is not divisible by model.patch_size=16"),
        ({"training": {"num_frames": 15}}, [], "training.num_frames=15 is not divisible by model.tubelet_size=2"),
        ({"training": {"frames_to_sample": 8}}, [], "training.frames_to_sample=8 must be >= training.num_frames"),
        (
            {"model": {"task_type": "regression"}, "augmentation": {"mixup": 0.8}},
            [],
            "not supported for model.task_type='regression'",
        ),
        ({"optimizer": {"betas": [0.9]}}, [], "optimizer.betas"),
        ({"data": {"normalize_std": [0.2, 0.0, 0.2]}}, [], "data.normalize_std"),
        ({"augmentation": {"short_side_size": 200}}, [], "augmentation.short_side_size=200 is below model.input_size"),
        ({"augmentation": {"crop_scales": [1.0, 1.5]}}, [], "augmentation.crop_scales=[1.0, 1.5] must lie in (0, 1]"),
        ({"model": "vit-b"}, [], "model: expected a section"),
        ({}, ["model.mask_ratio"], "must look like section.key=value"),
        ({}, ["mask_ratio=0.5"], "must name a section and a key"),
    ],
)
def test_validation_errors_name_the_key(values, overrides, fragment):
    with pytest.raises(ConfigError) as info:
        config_from_dict(values, overrides)
    assert fragment in str(info.value)


def test_file_errors_name_the_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("model:\n  mask_ration: 0.9\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml: unknown key 'model.mask_ration'"):
        load_config(wrong)


def test_errors_say_whether_the_value_came_from_the_file_or_the_command_line(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  mask_ratio: 0.9\ntraining:\n  batch_size: 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["model.mask_ratio=abc"])
    assert str(info.value).startswith("command line (model.mask_ratio=abc): model.mask_ratio: got 'abc'")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["training.bach_size=4"])
    assert str(info.value).startswith("command line (training.bach_size=4): unknown key 'training.bach_size'")
    path.write_text("model:\n  mask_ratio: 1.5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["training.batch_size=8"])
    assert str(info.value).startswith(f"{path}: model.mask_ratio=1.5 must lie in (0, 1)")
