import pytest
import torch

from everest.models import PretrainAutoencoder, VideoClassifier, VideoEncoder, VideoViTSpec, count_parameters, spec_for
from everest.models.vit import sinusoid_table


def tiny_spec(**changes) -> VideoViTSpec:
    base = dict(
        embed_dim=48,
        depth=2,
        num_heads=4,
        decoder_embed_dim=32,
        decoder_depth=2,
        decoder_num_heads=2,
        input_size=32,
        patch_size=8,
        num_frames=4,
        tubelet_size=2,
    )
    base.update(changes)
    return VideoViTSpec(**base)


# Encoder sizes published for VideoMAE / VideoMAE V2 (millions of parameters).
@pytest.mark.parametrize(
    "backbone, published",
    [
        ("vit-s", 22.0),
        ("vit-b", 86.0),
        ("vit-l", 304.0),
        ("vit-h", 632.0),
        ("vit-g", 1011.0),
    ],
)
def test_preset_parameter_counts(backbone, published):
    with torch.device("meta"):
        encoder = VideoEncoder(spec_for(backbone))
    millions = count_parameters(encoder) / 1e6
    assert millions == pytest.approx(published, rel=0.01)


def test_sinusoid_table_formula():
    table = sinusoid_table(7, 6).double()
    for pos in range(7):
        for j in range(6):
            angle = pos / 10000 ** (2 * (j // 2) / 6)
            expected = (
                torch.sin(torch.tensor(angle, dtype=torch.float64))
                if j % 2 == 0
                else torch.cos(torch.tensor(angle, dtype=torch.float64))
            )
            assert table[pos, j].item() == pytest.approx(expected.item(), abs=1e-6)


def random_indices(batch, n, visible, targets, seed=0):
    g = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(n, generator=g) for _ in range(batch)])
    vis = perms[:, :visible].sort(dim=1).values
    tgt = perms[:, visible : visible + targets].sort(dim=1).values
    return vis, tgt


def test_pretrain_forward_backward_shapes():
    spec = tiny_spec()
    model = PretrainAutoencoder(spec)
    video = torch.randn(3, 3, 4, 32, 32)
    vis, tgt = random_indices(3, spec.num_patches, 5, 9)
    pred = model(video, vis, tgt)
    assert pred.shape == (3, 9, spec.patch_pixels) == (3, 9, 3 * 2 * 8 * 8)
    pred.square().mean().backward()
    assert model.encoder.patch_embed.proj.weight.grad is not None
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0
    # Tokens that are neither visible nor targets must not influence the prediction.
    unused = torch.ones(spec.num_patches, dtype=torch.bool)
    unused[vis[0]] = False
    unused[tgt[0]] = False
    slot, rest = divmod(int(torch.nonzero(unused)[0]), spec.grid[1] * spec.grid[2])
    row, col = divmod(rest, spec.grid[2])
    changed = video.clone()
    changed[0, :, slot * 2 : (slot + 1) * 2, row * 8 : (row + 1) * 8, col * 8 : (col + 1) * 8] += 5.0
    with torch.no_grad():
        assert torch.equal(model(video, vis, tgt)[0], model(changed, vis, tgt)[0])


def test_classifier_forward_with_and_without_keep():
    spec = tiny_spec(drop_path_rate=0.1, layer_scale_init_value=0.1)
    model = VideoClassifier(spec, num_outputs=5, head_drop_rate=0.5)
    video = torch.randn(2, 3, 4, 32, 32)
    assert model(video).shape == (2, 5)
    keep, _ = random_indices(2, spec.num_patches, 7, 0)
    out = model(video, keep)
    assert out.shape == (2, 5)
    out.sum().backward()
    assert model.encoder.blocks[0].gamma_1.grad is not None
    cls_model = VideoClassifier(spec, num_outputs=3, use_mean_pooling=False)
    assert cls_model(video, keep).shape == (2, 3)


def test_activation_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    plain = PretrainAutoencoder(tiny_spec())
    ckpt = PretrainAutoencoder(tiny_spec(use_checkpoint=True))
    ckpt.load_state_dict(plain.state_dict())
    video = torch.randn(2, 3, 4, 32, 32)
    vis, tgt = random_indices(2, 32, 6, 10)
    grads = []
    for model in (plain, ckpt):
        model.zero_grad()
        model(video, vis, tgt).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7)


def test_encoder_rejects_wrong_clip_size():
    encoder = VideoEncoder(tiny_spec())
    with pytest.raises(ValueError, match="built for 32"):
        encoder(torch.randn(1, 3, 8, 32, 32))
