"""Checkpoint conversions are trusted only when outputs match numerically."""

from pathlib import Path

import pytest
import torch

from everest.models import (
    PretrainAutoencoder,
    VideoClassifier,
    WeightsError,
    export_huggingface,
    export_videomae,
    load_classifier,
    load_encoder,
    load_pretrain_model,
    save_everest,
)
from tests.test_models import random_indices, tiny_spec

transformers = pytest.importorskip("transformers")


def hf_config(**changes):
    values = dict(
        image_size=32,
        patch_size=8,
        num_channels=3,
        num_frames=4,
        tubelet_size=2,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=128,
        use_mean_pooling=False,
        norm_pix_loss=True,
    )
    values.update(changes)
    return transformers.VideoMAEConfig(**values)


def masked_positions(batch: int, n: int, masked: int, seed: int):
    vis, tgt = random_indices(batch, n, n - masked, masked, seed)
    mask = torch.zeros(batch, n, dtype=torch.bool)
    mask.scatter_(1, tgt, True)
    return mask, vis, tgt


@pytest.mark.parametrize("use_mean_pooling", [False, True])
def test_huggingface_pretraining_round_trip(tmp_path: Path, use_mean_pooling: bool):
    torch.manual_seed(0)
    hf = transformers.VideoMAEForPreTraining(hf_config(use_mean_pooling=use_mean_pooling)).eval()
    with torch.no_grad():  # non-trivial biases and norms so that every mapped tensor matters
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf")
    ours = load_pretrain_model(tmp_path / "hf")
    assert ours.spec.encoder_final_norm is (not use_mean_pooling)

    video = torch.randn(2, 4, 3, 32, 32)  # HF layout [B, F, C, H, W]
    mask, vis, tgt = masked_positions(2, 32, 24, seed=3)
    with torch.no_grad():
        expected = hf(video, bool_masked_pos=mask).logits
        got = ours(video.permute(0, 2, 1, 3, 4), vis, tgt)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

    export_huggingface(ours, tmp_path / "back")
    modes = {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / "back").iterdir()}
    assert modes["model.safetensors"] == modes["config.json"], modes  # not safetensors' 0600
    reloaded = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        again = reloaded(video, bool_masked_pos=mask).logits
    assert torch.equal(again, expected)


def test_huggingface_classifier_round_trip(tmp_path: Path):
    torch.manual_seed(1)
    hf = transformers.VideoMAEForVideoClassification(hf_config(use_mean_pooling=True, num_labels=5)).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = load_classifier(tmp_path / "hf")
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        expected = hf(video).logits
        torch.testing.assert_close(ours(video.permute(0, 2, 1, 3, 4)), expected, rtol=0, atol=1e-5)
    export_huggingface(ours, tmp_path / "back")
    reloaded = transformers.VideoMAEForVideoClassification.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(video).logits, expected)


def test_official_videomae_formats_round_trip(tmp_path: Path):
    torch.manual_seed(2)
    spec = tiny_spec()
    model = PretrainAutoencoder(spec).eval()
    export_videomae(model, tmp_path / "pretrain.pth")
    # Official checkpoints sometimes wrap the weights in 'module' and prefix them.
    raw = torch.load(tmp_path / "pretrain.pth", weights_only=True)["model"]
    torch.save({"module": {f"module.{k}": v for k, v in raw.items()}}, tmp_path / "wrapped.pth")
    video = torch.randn(2, 3, 4, 32, 32)
    vis, tgt = random_indices(2, 32, 4, 8)
    for name in ("pretrain.pth", "wrapped.pth"):
        loaded = load_pretrain_model(tmp_path / name, input_size=32, num_frames=4, num_heads=4, decoder_num_heads=2)
        with torch.no_grad():
            assert torch.equal(loaded(video, vis, tgt), model(video, vis, tgt))

    classifier = VideoClassifier(spec, num_outputs=3).eval()
    export_videomae(classifier, tmp_path / "finetune.pth")
    keys = torch.load(tmp_path / "finetune.pth", weights_only=True)["model"].keys()
    assert "blocks.0.attn.qkv.weight" in keys and "fc_norm.weight" in keys and "head.weight" in keys
    loaded = load_classifier(tmp_path / "finetune.pth", input_size=32, num_frames=4, num_heads=4)
    with torch.no_grad():
        assert torch.equal(loaded(video), classifier(video))


def test_load_encoder_returns_normed_token_features(tmp_path: Path):
    torch.manual_seed(3)
    model = PretrainAutoencoder(tiny_spec()).eval()
    save_everest(model, tmp_path / "ours.pt")
    encoder = load_encoder(tmp_path / "ours.pt")
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        features = encoder(video)
        assert features.shape == (2, 32, 48)
        assert torch.equal(features, model.encoder(video))
    # Positions are fixed sinusoids: a longer clip loads and runs without interpolation.
    longer = load_encoder(tmp_path / "ours.pt", num_frames=8)
    assert longer(torch.randn(1, 3, 8, 32, 32)).shape == (1, 64, 48)


def test_backbone_mismatch_is_named(tmp_path: Path):
    save_everest(PretrainAutoencoder(tiny_spec()), tmp_path / "small.pt")
    from everest.models.weights import load_into, read_weights

    wider = PretrainAutoencoder(tiny_spec(embed_dim=64))
    with pytest.raises(
        WeightsError, match=r"encoder.patch_embed.proj.weight has shape \(48, 3, 2, 8, 8\).*another backbone"
    ):
        load_into(wider, read_weights(tmp_path / "small.pt").state_dict)


def test_unreadable_checkpoint_is_named(tmp_path: Path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="broken.pth: cannot be read"):
        load_encoder(bad)
    with pytest.raises(WeightsError, match="checkpoint not found"):
        load_encoder(tmp_path / "nope.pth")
