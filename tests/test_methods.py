"""The method registry: PDMP and the baselines, each against hand-computed expectations."""

import math

import pytest
import torch

from pdmp_cli.errors import PdmpError
from pdmp_cli.methods import METHODS, build_method
from pdmp_cli.methods.ogm_ge import conv_kernels, modulate_, ogm_coefficients
from pdmp_cli.models.multimodal import build_multimodal
from pdmp_cli.profile import Profile, Provenance
from pdmp_cli.specs import TrainSpec, resolve_spec
from pdmp_cli.train.loop import build_optimizer

PROFILE = Profile(
    dataset="toy",
    modalities=["audio", "visual"],
    performance_dominant="visual",
    optimization_dominant="audio",
    optimization_criterion="manual",
    provenance=Provenance(tool_version="test", created="2025-01-01T00:00:00+00:00", source="manual"),
)


def _spec(**kw) -> TrainSpec:
    return TrainSpec(profile="p.json", encoder="small", lr=0.01, **kw)


def _setup(seed=0, channels=None):
    torch.manual_seed(seed)
    model = build_multimodal("small", "concat", channels or {"audio": 1, "visual": 3}, num_classes=3)
    x = {m: torch.randn(4, c, 16, 16) for m, c in (channels or {"audio": 1, "visual": 3}).items()}
    y = torch.tensor([0, 1, 2, 1])
    return model, x, y


def _backward(model, x, y):
    model.zero_grad(set_to_none=True)
    out = model(x)
    torch.nn.functional.cross_entropy(out.logits, y).backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_spec_method_is_checked_against_the_registry():
    for name in METHODS.names():
        assert _spec(method=name).method == name
    with pytest.raises(PdmpError, match=r"^method: unknown method; choose one of \['lr-scale'"):
        resolve_spec(TrainSpec, {"profile": "p.json", "method": "nope"})
    with pytest.raises(PdmpError, match="unknown method 'nope'; choose one of: " + ", ".join(METHODS.names())):
        build_method("nope", None, None, None)


# --- OGM-GE ---------------------------------------------------------------------------------------


def test_ogm_coefficient_hand_computed_audio_dominates():
    # audio: sample 0 softmax([2,0,0])[0] = e^2/(e^2+2) = 0.786986, sample 1 uniform 1/3 -> 1.120319
    # visual: all zeros -> 1/3 + 1/3 = 0.666667;  rho_a = 1.680479 > 1
    # k_a = 1 - tanh(0.1 * 1.680479) = 0.833516;  k_v = 1
    logits = {"audio": torch.tensor([[2.0, 0, 0], [0, 0, 0]]), "visual": torch.zeros(2, 3)}
    k = ogm_coefficients(logits, torch.tensor([0, 1]), alpha=0.1)
    assert k["audio"].item() == pytest.approx(0.8335163229469467, abs=1e-6)
    assert k["visual"].item() == 1.0


def test_ogm_coefficient_hand_computed_visual_dominates():
    # visual: e^3/(e^3+2) + e/(e+2) = 0.909445 + 0.576115 = 1.485560; audio 2/3; rho_v = 2.228340
    # alpha 0.5: k_v = 1 - tanh(1.114170) = 0.194469;  k_a = 1
    logits = {"audio": torch.zeros(2, 3), "visual": torch.tensor([[3.0, 0, 0], [0, 1, 0]])}
    k = ogm_coefficients(logits, torch.tensor([0, 1]), alpha=0.5)
    assert k["visual"].item() == pytest.approx(0.19446854672043634, abs=1e-6)
    assert k["audio"].item() == 1.0
    # an exact tie (rho = 1) damps the second modality: 1 - tanh(0.1) = 0.900332
    tie = ogm_coefficients({"audio": torch.zeros(2, 3), "visual": torch.zeros(2, 3)}, torch.tensor([0, 1]), 0.1)
    assert (tie["audio"].item(), tie["visual"].item()) == (1.0, pytest.approx(0.9003320053750442, abs=1e-6))


def test_ogm_modulates_conv_kernels_only_without_noise_exactly():
    model, x, y = _setup()
    _, ref = _backward(model, x, y)
    encoders = dict(model.encoders.items())
    modulate_(encoders, {"audio": torch.tensor(0.25), "visual": torch.tensor(1.0)}, noise=False)
    kernels = {id(p) for e in encoders.values() for p in conv_kernels(e)}
    assert len(kernels) == 6  # three conv layers per `small` encoder
    for n, p in model.named_parameters():
        factor = 0.25 if (id(p) in kernels and n.startswith("encoders.audio")) else 1.0
        assert torch.equal(p.grad, ref[n] * factor), n


def test_ogm_ge_noise_has_the_gradients_std():
    torch.manual_seed(0)
    enc = torch.nn.Conv2d(64, 64, 3)  # 36,864 kernel values: std estimated to ~1 %
    enc.weight.grad = torch.randn_like(enc.weight) * 0.02
    enc.bias.grad = torch.ones_like(enc.bias)
    g = enc.weight.grad.clone()
    modulate_({"a": enc}, {"a": torch.tensor(0.5)}, noise=True)
    noise = enc.weight.grad - 0.5 * g
    assert noise.std().item() == pytest.approx(g.std().item(), rel=0.03)
    assert abs(noise.mean().item()) < 0.001
    assert torch.equal(enc.bias.grad, torch.ones_like(enc.bias))  # not a conv kernel


def test_ogm_method_window_and_refusals():
    model, x, y = _setup()
    spec = _spec(method="ogm-ge", ogm_start=2, ogm_end=4)  # the old flat fields still work
    assert spec.method_args["ogm-ge"] == {"alpha": 0.8, "start": 2, "end": 4}
    method = build_method("ogm-ge", model, spec, PROFILE)
    out, ref = _backward(model, x, y)
    assert method.after_backward(out, y, epoch=1) == {"audio": 1.0, "visual": 1.0}  # before the window
    assert all(torch.equal(p.grad, ref[n]) for n, p in model.named_parameters())
    expected = ogm_coefficients(out.branch_logits, y, 0.8)
    got = method.after_backward(out, y, epoch=2)
    assert {m: v.item() for m, v in got.items()} == {m: v.item() for m, v in expected.items()}
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.grad, ref[n])}
    assert changed == {n for n, p in model.named_parameters() if n.startswith("encoders.") and p.dim() > 2}

    three, _, _ = _setup(channels={"rgb": 3, "depth": 1, "ir": 1})
    with pytest.raises(PdmpError, match=r"ogm-ge is defined for 2 modalities, this dataset has 3 \(rgb, depth, ir\)"):
        build_method("ogm-ge", three, _spec(method="ogm-ge"), PROFILE)
    with pytest.raises(ValueError, match=r"ogm-ge: end \(3\) must be > start \(3\)"):
        _spec(method="ogm-ge", ogm_start=3, ogm_end=3)


# --- lr-scale, vanilla, pdmp ------------------------------------------------------------------------


def test_lr_scale_multiplies_every_lr_and_leaves_grads():
    model, x, y = _setup()
    spec = _spec(method="lr-scale", gamma_p=15)
    method = build_method("lr-scale", model, spec, PROFILE)
    opt = build_optimizer(model, spec, method)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.15)]
    assert (opt.param_groups[0]["momentum"], opt.param_groups[0]["weight_decay"]) == (0.9, 1e-4)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    out, ref = _backward(model, x, y)
    assert method.after_backward(out, y, 0) == {"audio": 1.0, "visual": 1.0}
    assert all(torch.equal(p.grad, ref[n]) for n, p in model.named_parameters())
    # every other method keeps the paper's lr
    for name in ("vanilla", "pdmp", "ogm-ge"):
        assert build_optimizer(model, spec, build_method(name, model, spec, PROFILE)).param_groups[0]["lr"] == 0.01


def test_vanilla_leaves_grads():
    model, x, y = _setup()
    method = build_method("vanilla", model, _spec(method="vanilla"), PROFILE)
    out, ref = _backward(model, x, y)
    assert method.after_backward(out, y, 0) == {"audio": 1.0, "visual": 1.0}
    assert all(torch.equal(p.grad, ref[n]) for n, p in model.named_parameters())


def test_pdmp_method_uses_the_modulator_and_needs_optimization_dominant():
    model, x, y = _setup()
    method = build_method("pdmp", model, _spec(gamma_p=5), PROFILE)
    assert method.gamma == {"audio": 0.2, "visual": 5.0}
    out, ref = _backward(model, x, y)
    method.after_backward(out, y, 0)
    for n, p in model.named_parameters():
        f = 5.0 if n.startswith("encoders.visual") else 0.2 if n.startswith("encoders.audio") else 1.0
        assert torch.equal(p.grad, ref[n] * f), n
    unknown = PROFILE.model_copy(update={"optimization_dominant": None})
    with pytest.raises(PdmpError, match="leaves optimization_dominant null") as e:
        build_method("pdmp", model, _spec(), unknown)
    assert "--method vanilla, ogm-ge and lr-scale do not need it" in str(e.value)
    for name in ("vanilla", "ogm-ge", "lr-scale"):
        build_method(name, model, _spec(method=name), unknown)  # fine without it
    assert math.isclose(method.gamma["audio"] * method.gamma["visual"], 1.0)
