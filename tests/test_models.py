"""Every registered encoder and fusion: shapes, the logit decomposition, gradients reach encoders."""

import pytest
import torch

from pdmp_cli.models.encoders import ENCODERS, build_encoder
from pdmp_cli.models.fusions import FUSIONS, build_fusion
from pdmp_cli.models.multimodal import build_multimodal
from pdmp_cli.errors import PdmpError


@pytest.mark.parametrize("name", ENCODERS.names())
@pytest.mark.parametrize("channels", [1, 3])
def test_encoder_maps_images_to_features(name, channels):
    enc = build_encoder(name, channels)
    out = enc(torch.randn(2, channels, 32, 32))
    assert out.shape == (2, enc.out_dim)


@pytest.mark.parametrize("name", ENCODERS.names())
def test_multi_frame_input_is_folded_and_averaged_over_time(name):
    enc = build_encoder(name, 3).eval()
    clip = torch.randn(2, 3, 4, 32, 32)  # (B, C, T, H, W)
    with torch.no_grad():
        out = enc(clip)
        per_frame = torch.stack([enc(clip[:, :, t]) for t in range(4)], dim=1)  # (B, T, D)
    assert out.shape == (2, enc.out_dim)
    torch.testing.assert_close(out, per_frame.mean(dim=1), rtol=1e-4, atol=1e-5)


def test_resnet18_is_torchvisions_with_adapted_conv1():
    from torchvision.models import ResNet

    enc = build_encoder("resnet18", 1)
    assert isinstance(enc.backbone, ResNet)
    assert enc.backbone.conv1.in_channels == 1 and enc.out_dim == 512


def _feats(dims, b=5):
    torch.manual_seed(0)
    return {m: torch.randn(b, d) for m, d in dims.items()}


@pytest.mark.parametrize("name", FUSIONS.names())
@pytest.mark.parametrize("dims", [{"audio": 8, "visual": 6}, {"rgb": 4, "depth": 5, "ir": 3}])
def test_fusion_gives_fused_and_branch_logits(name, dims):
    fusion = build_fusion(name, dims, num_classes=7)
    feats = _feats(dims)
    logits = fusion(feats)
    branches = fusion.branch_logits(feats)
    assert logits.shape == (5, 7)
    assert list(branches) == list(dims)
    assert all(s.shape == (5, 7) for s in branches.values())


@pytest.mark.parametrize("name", ["concat", "sum"])
def test_additive_fusions_decompose_exactly(name):
    """Eq. 3-4: f(x) = sum_m s_m for concat (weight slices, bias split) and sum."""
    dims = {"a": 8, "b": 6, "c": 4}
    fusion = build_fusion(name, dims, num_classes=3)
    feats = _feats(dims)
    torch.testing.assert_close(sum(fusion.branch_logits(feats).values()), fusion(feats))


def test_concat_branch_is_the_weight_slice():
    fusion = build_fusion("concat", {"audio": 2, "visual": 3}, num_classes=2)
    feats = _feats({"audio": 2, "visual": 3})
    w, b = fusion.fc.weight, fusion.fc.bias
    expected = feats["visual"] @ w[:, 2:].t() + b / 2
    torch.testing.assert_close(fusion.branch_logits(feats)["visual"], expected)


@pytest.mark.parametrize("name", ["film", "gated"])
def test_non_separable_fusions_branch_by_zeroing_the_others(name):
    dims = {"audio": 4, "visual": 4}
    fusion = build_fusion(name, dims, num_classes=3)
    feats = _feats(dims)
    zero_v = {"audio": feats["audio"], "visual": torch.zeros(5, 4)}
    torch.testing.assert_close(fusion.branch_logits(feats)["audio"], fusion(zero_v))


@pytest.mark.parametrize("fusion", FUSIONS.names())
@pytest.mark.parametrize("encoder", ENCODERS.names())
def test_backward_reaches_every_encoder(encoder, fusion):
    model = build_multimodal(encoder, fusion, {"audio": 1, "visual": 3}, num_classes=4)
    inputs = {"audio": torch.randn(2, 1, 32, 32), "visual": torch.randn(2, 3, 32, 32)}
    out = model(inputs)
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 3])).backward()
    for m in ("audio", "visual"):
        grads = [p.grad for p in model.encoders[m].parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), m


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(PdmpError, match=r"unknown fusion 'bogus'; choose one of: concat, film, gated, sum"):
        build_fusion("bogus", {"a": 1, "b": 1}, 2)
    with pytest.raises(PdmpError, match="unknown encoder 'vit'"):
        build_encoder("vit", 3)
