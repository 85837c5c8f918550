"""Every registered encoder and fusion: shapes, the logit decomposition, gradients reach encoders."""

import pytest
import torch

from pdmp_cli.models.encoders import ENCODERS, build_encoder
from pdmp_cli.models.fusions import FUSIONS, build_fusion, builds_model, late_fusions
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


@pytest.mark.parametrize("name", late_fusions())
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


@pytest.mark.parametrize("name", ["film", "film-swap", "gated"])
def test_non_separable_fusions_branch_by_zeroing_the_others(name):
    dims = {"audio": 4, "visual": 4}
    fusion = build_fusion(name, dims, num_classes=3)
    feats = _feats(dims)
    zero_v = {"audio": feats["audio"], "visual": torch.zeros(5, 4)}
    torch.testing.assert_close(fusion.branch_logits(feats)["audio"], fusion(zero_v))


def test_film_the_first_modality_produces_gamma_beta_that_modulate_the_others():
    """The reference (OGM-GE, PMR: x_film=True on fusion_module(a, v)): audio films visual."""
    dims = {"audio": 2, "visual": 3, "depth": 1}
    fusion = build_fusion("film", dims, num_classes=2)
    assert fusion.film.in_features == 2 and fusion.film.out_features == 2 * 4 and fusion.fc.in_features == 4
    with torch.no_grad():  # gamma = 1 + audio[0], beta = 0: the logits read visual/depth scaled by audio
        fusion.film.weight.zero_(), fusion.film.bias.zero_()
        fusion.film.weight[:4, 0] = 1.0
        fusion.film.bias[:4] = 1.0
        fusion.fc.weight.copy_(torch.eye(2, 4)), fusion.fc.bias.zero_()
    feats = {"audio": torch.tensor([[2.0, 7.0]]), "visual": torch.tensor([[1.0, -1.0, 5.0]]), "depth": torch.tensor([[9.0]])}
    torch.testing.assert_close(fusion(feats), torch.tensor([[3.0, -3.0]]))  # (1 + 2) * (1, -1)
    swap = build_fusion("film-swap", dims, num_classes=2)  # the other direction: the others film audio
    assert swap.film.in_features == 4 and swap.film.out_features == 2 * 2 and swap.fc.in_features == 2
    # gamma and beta come only from the first modality in film, only from the others in film-swap
    g = {m: torch.zeros(1, d) for m, d in dims.items()}
    moved = {**g, "audio": torch.ones(1, 2)}
    assert not torch.allclose(fusion.film(moved["audio"]), fusion.film(g["audio"]))
    assert torch.equal(swap.film(torch.cat([moved["visual"], moved["depth"]], 1)), swap.film(torch.cat([g["visual"], g["depth"]], 1)))


def test_gated_hidden_size_is_the_references():
    fusion = build_fusion("gated", {"audio": 512, "visual": 512}, num_classes=6)
    assert (fusion.fc_x.out_features, fusion.fc_y.out_features, fusion.fc_out.in_features) == (512, 512, 512)


def _small(fusion, channels, classes=3):
    torch.manual_seed(0)
    return build_multimodal("small", fusion, channels, num_classes=classes)


def _batch(channels, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(b, c, 32, 32, generator=g) for m, c in channels.items()}


def _encoder_by_fusion():
    """Every encoder x fusion. Past ``small``, a late fusion other than concat runs under -m slow: a
    late fusion sees the encoder only as a feature vector (each late fusion is checked on small, each
    encoder's own parameters through concat), while se and mmformer run the encoder's stages."""
    for encoder in ENCODERS.names():
        for fusion in FUSIONS.names():
            late_repeat = encoder != "small" and fusion != "concat" and not builds_model(fusion)
            yield pytest.param(encoder, fusion, marks=[pytest.mark.slow] if late_repeat else [], id=f"{encoder}-{fusion}")


@pytest.mark.parametrize(("encoder", "fusion"), list(_encoder_by_fusion()))
def test_modality_parameters_are_disjoint_and_each_gets_a_gradient(encoder, fusion):
    """The model contract, for every registered fusion: forward/backward through the registry;
    modality_parameters() is disjoint, non-empty, and every group receives a gradient."""
    channels = {"audio": 1, "visual": 3}
    model = build_multimodal(encoder, fusion, channels, num_classes=4)
    out = model(_batch(channels))
    assert out.logits.shape == (2, 4) and list(out.branch_logits) == ["audio", "visual"]
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 3])).backward()
    groups = model.modality_parameters()
    assert list(groups) == model.modalities == ["audio", "visual"]
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)), "a parameter belongs to two modalities"
    assert set(ids) <= {id(p) for p in model.parameters()}
    for m, ps in groups.items():
        assert ps and any(p.grad is not None and p.grad.abs().sum() > 0 for p in ps), m


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_branch_logits_read_their_own_modality_only(fusion):
    """s_m (exact split or masked forward) does not change when another modality's input does."""
    channels = {"audio": 1, "visual": 3, "depth": 1}
    model = _small(fusion, channels).eval()
    x = _batch(channels)
    y = {**x, "visual": torch.randn(2, 3, 32, 32)}
    with torch.no_grad():
        a, b = model(x), model(y)
    for m in ("audio", "depth"):
        assert a.branch_logits[m].shape == (2, 3)
        torch.testing.assert_close(a.branch_logits[m], b.branch_logits[m], rtol=0, atol=0)
    assert not torch.equal(a.branch_logits["visual"], b.branch_logits["visual"])


@pytest.mark.parametrize("fusion", [n for n in FUSIONS.names() if builds_model(n)])
def test_masked_forward_with_every_modality_is_the_fused_forward(fusion):
    """Masking drops modalities: keeping all of them is the fused model; keeping one is s_m."""
    channels = {"audio": 1, "visual": 3}
    model = _small(fusion, channels).eval()
    x = _batch(channels, b=3)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(model.masked(x, ["audio", "visual"])[0], out.logits)
        assert torch.equal(model.masked(x, ["visual"])[0], out.branch_logits["visual"])
        assert not torch.equal(out.branch_logits["visual"], out.logits)  # one modality is not the fused model
        none = model.masked(x, [])[0]  # no modality at all (AGM's f of the empty set): reads no input
        assert none.shape == (3, 3) and torch.equal(none, model.masked(_batch(channels, b=3, seed=1), [])[0])
    assert set(out.features) == {"audio", "visual"}


@pytest.mark.parametrize("fusion", [n for n in FUSIONS.names() if builds_model(n)])
def test_intermediate_fusions_take_clips_of_frames(fusion):
    """A (B, C, T, H, W) clip beside (B, C, H, W) inputs: its frames are folded, and its branch
    reads the clip alone."""
    model = _small(fusion, {"audio": 1, "visual": 3}).eval()
    x = {"audio": torch.randn(2, 1, 32, 32), "visual": torch.randn(2, 3, 4, 32, 32)}
    with torch.no_grad():
        out = model(x)
        other = model({**x, "audio": torch.randn(2, 1, 32, 32)})
    assert out.logits.shape == (2, 3) and torch.isfinite(out.logits).all()
    assert torch.equal(out.branch_logits["visual"], other.branch_logits["visual"])
    assert not torch.equal(out.logits, other.logits)


@pytest.mark.parametrize("fusion", [n for n in FUSIONS.names() if builds_model(n)])
def test_branch_passes_in_training_leave_batchnorm_statistics_alone(fusion):
    channels = {"audio": 1, "visual": 3}
    model = _small(fusion, channels).train()
    x = _batch(channels, b=3)
    model(x, with_branches=False)
    after_fused = {n: b.clone() for n, b in model.named_buffers()}
    again = _small(fusion, channels).train()
    again(x, with_branches=True)
    assert all(torch.equal(b, after_fused[n]) for n, b in again.named_buffers())


@pytest.mark.parametrize("fusion", [n for n in FUSIONS.names() if builds_model(n)])
def test_intermediate_fusions_refuse_encoders_without_stages(fusion, monkeypatch):
    from pdmp_cli.models.encoders import register_encoder
    from pdmp_cli.models.encoders._frames import FrameFolding

    monkeypatch.setattr(ENCODERS, "_items", dict(ENCODERS._items))
    register_encoder("flat")(lambda in_channels: FrameFolding(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(8)), 8))
    with pytest.raises(PdmpError, match=f"--fusion {fusion} .* encoder 'flat' exposes none; use --encoder small or resnet18"):
        build_multimodal("flat", fusion, {"audio": 1, "visual": 3}, num_classes=3)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(PdmpError, match=r"unknown fusion 'bogus'; choose one of: concat, film, film-swap, gated, mmformer, se, sum"):
        build_fusion("bogus", {"a": 1, "b": 1}, 2)
    with pytest.raises(PdmpError, match="unknown encoder 'vit'"):
        build_encoder("vit", 3)
