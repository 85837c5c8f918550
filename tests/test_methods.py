"""The method registry: PDMP and the baselines, each against hand-computed expectations."""

import math

import pytest
import torch
from conftest import make_profile

from pdmp_cli.errors import PdmpError
from pdmp_cli.methods import METHODS, build_method
from pdmp_cli.methods.ogm_ge import conv_kernels, modulate_, ogm_coefficients
from pdmp_cli.models.multimodal import build_multimodal
from pdmp_cli.specs import TrainSpec, resolve_spec
from pdmp_cli.train.setup import build_optimizer

PROFILE = make_profile(dataset="toy")


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
    with pytest.raises(PdmpError, match=r"^method: unknown method; choose one of \['agm', 'dr', .*'vanilla'\], got 'nope'$"):
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
    # an exact tie (rho = 1) damps the first modality, as the reference's `if ratio_v > 1 ... else`:
    # 1 - tanh(0.1) = 0.900332
    tie = ogm_coefficients({"audio": torch.zeros(2, 3), "visual": torch.zeros(2, 3)}, torch.tensor([0, 1]), 0.1)
    assert (tie["audio"].item(), tie["visual"].item()) == (pytest.approx(0.9003320053750442, abs=1e-6), 1.0)


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
    spec = _spec(method="ogm-ge", method_args={"ogm-ge": {"start": 2, "end": 4}})
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
    with pytest.raises(PdmpError, match=r"ogm-ge is defined for 2 modalities, this dataset has 3 \(rgb, depth, ir\): its coefficient is the ratio of two branches' scores"):
        build_method("ogm-ge", three, _spec(method="ogm-ge"), PROFILE)
    with pytest.raises(ValueError, match=r"ogm-ge: end \(3\) must be > start \(3\)"):
        _spec(method="ogm-ge", method_args={"ogm-ge": {"start": 3, "end": 3}})


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


def test_pdmp_others_reads_eq12_for_a_third_modality():
    model, _, _ = _setup(channels={"audio": 1, "visual": 3, "depth": 1})
    prof = PROFILE.model_copy(update={"modalities": ["audio", "visual", "depth"]})  # m_p visual, m_o audio
    default = build_method("pdmp", model, _spec(method="pdmp", gamma_p=10), prof)
    assert default.gamma == {"audio": 0.1, "visual": 10.0, "depth": 0.1}
    one = build_method("pdmp", model, _spec(method="pdmp", gamma_p=10, method_args={"pdmp": {"others": "one"}}), prof)
    assert one.gamma == {"audio": 0.1, "visual": 10.0, "depth": 1.0} and "depth x1 (others=one)" in one.describe()
    # pdmp tune tells trainings apart by the factors they apply: the reading is part of them
    spec_one = _spec(method="pdmp", gamma_p=10, method_args={"pdmp": {"others": "one"}})
    assert METHODS.get("pdmp").training_settings(spec_one, prof)["gamma"] == one.gamma
    assert METHODS.get("pdmp").training_settings(_spec(method="pdmp", gamma_p=10), prof)["gamma"] == default.gamma


# --- AGM ---------------------------------------------------------------------------------------------


def test_agm_coefficients_hand_computed():
    from pdmp_cli.methods.agm import agm_coefficients, agm_ratio

    # two modalities, s = (0.5, 1.0): r_a = exp(s_v - s_a) = exp(0.5), r_v = exp(-0.5)
    s = torch.tensor([0.5, 1.0], dtype=torch.float64)
    assert agm_ratio(s).tolist() == pytest.approx([math.exp(0.5), math.exp(-0.5)])
    # running means S = (0.8, 0.9): r^_a = exp(0.1), r^_v = exp(-0.1); alpha 1.5:
    # k_a = exp(1.5 (1.105171 - 1.648721)) = 0.442495, k_v = exp(1.5 (0.904837 - 0.606531)) = 1.564334
    k = agm_coefficients(s, torch.tensor([0.8, 0.9], dtype=torch.float64), alpha=1.5)
    assert k.tolist() == pytest.approx([0.4424952589, 1.5643339424], abs=1e-8)
    # three modalities, s = (0.2, 0.5, 1.1), mean 0.6: r = exp(3/2 (0.6 - s)) = (1.822119, 1.161834, 0.472367);
    # S all 0.4 -> r^ = 1; alpha 1: k = exp(1 - r) = (0.439499, 0.850582, 1.694916)
    k3 = agm_coefficients(torch.tensor([0.2, 0.5, 1.1], dtype=torch.float64), torch.full((3,), 0.4, dtype=torch.float64), 1.0)
    assert k3.tolist() == pytest.approx([0.4394994557, 0.8505821830, 1.6949164495], abs=1e-8)
    # min(r^ - r, 10): far behind its target, a modality's k stops at exp(alpha * 10)
    capped = agm_coefficients(torch.tensor([0.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 20.0], dtype=torch.float64), 0.1)
    assert capped[0].item() == pytest.approx(math.exp(1.0))


def test_agm_responses_are_shapley_and_concat_branch_logits():
    from pdmp_cli.methods.agm import shapley_responses, subset_logits

    a, v, av, none = (torch.tensor([[x]]) for x in (3.0, 5.0, 11.0, 1.0))
    f = {frozenset(): none, frozenset({"a"}): a, frozenset({"v"}): v, frozenset({"a", "v"}): av}
    m = shapley_responses(f, ["a", "v"])
    assert m["a"].item() == 0.5 * (11 - 5 + 3) and m["v"].item() == 0.5 * (11 - 3 + 5)  # the reference's formula
    model, x, y = _setup(channels={"audio": 1, "visual": 3, "depth": 1})
    out = model(x)
    f3 = {frozenset(s): subset_logits(model, out, x, s) for s in
          [(), ("audio",), ("visual",), ("depth",), ("audio", "visual"), ("audio", "depth"), ("visual", "depth")]}
    f3[frozenset(model.modalities)] = out.logits
    m3 = shapley_responses(f3, model.modalities)
    torch.testing.assert_close(sum(m3.values()), out.logits)  # the responses add up to the fused logits
    for mod in model.modalities:  # concat is additive: each response is the exact branch logit s_m
        torch.testing.assert_close(m3[mod], out.branch_logits[mod])


def test_agm_scales_each_modalitys_gradient_by_its_coefficient():
    from pdmp_cli.methods import Method
    from pdmp_cli.methods.agm import agm_coefficients, agm_scores, shapley_responses, subset_logits

    model, x, y = _setup()
    _, ref = _backward(model, x, y)
    method = build_method("agm", model, _spec(method="agm", method_args={"agm": {"alpha": 3.0}}), PROFILE)
    out0 = model(x)
    f = {frozenset(s): subset_logits(model, out0, x, s) for s in [(), ("audio",), ("visual",)]}
    f[frozenset(model.modalities)] = out0.logits
    s1 = agm_scores(shapley_responses(f, model.modalities), y)
    model.zero_grad(set_to_none=True)
    out, loss = method.forward_loss(model, x, y, epoch=0, part=None)
    # the very first step already updates k (the reference updates it at every step), from the
    # running means before this step (S = 0, so r^ = 1): k = exp(alpha min(1 - r, 10)), not 1
    k1 = agm_coefficients(s1, torch.zeros(2), 3.0)
    torch.testing.assert_close(method.k, k1)
    assert not torch.allclose(k1, torch.ones(2), atol=1e-3)
    torch.testing.assert_close(loss, Method.forward_loss(method, model, x, y, 0, None)[1])  # value: the fused CE
    loss.backward()
    for n, p in model.named_parameters():
        fac = k1[0] if n.startswith("encoders.audio") else k1[1] if n.startswith("encoders.visual") else None
        if fac is not None:
            torch.testing.assert_close(p.grad, ref[n] * fac, rtol=1e-5, atol=1e-7)
    assert method.after_backward(out, y, 0) == {"audio": method.k[0], "visual": method.k[1]}
    assert method.t.item() == 1
    torch.testing.assert_close(method.running, s1)  # S_1 = s_1, added after k was taken
    # the next step (a new epoch changes nothing: no step is skipped) takes k against S_1
    y2 = torch.tensor([2, 2, 0, 1])
    method.forward_loss(model, x, y2, epoch=1, part=None)
    s2 = agm_scores(shapley_responses({**f, frozenset(model.modalities): model(x).logits}, model.modalities), y2)
    torch.testing.assert_close(method.k, agm_coefficients(s2, s1, 3.0))
    torch.testing.assert_close(method.running, (s1 + s2) / 2)


def test_agm_clip_fires_exactly_when_a_head_weight_gradient_element_leaves_minus_one_one():
    from pdmp_cli.methods.agm import conditional_clip_

    head, other = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(3))
    for edge, fires in ((1.0, False), (-1.0, False), (1.001, True), (-1.001, True), (0.5, False)):
        head.grad = torch.tensor([[0.0, edge], [0.0, 0.0]])
        other.grad = torch.tensor([3.0, 4.0, 0.0])  # total norm sqrt(25 + edge^2) > 1 either way
        fired = conditional_clip_([head], [head, other])
        assert bool(fired) is fires, edge
        if fires:  # clip_grad_norm_(all, 1.0): every gradient x 1 / (norm + 1e-6)
            norm = math.sqrt(25 + edge**2)
            torch.testing.assert_close(other.grad, torch.tensor([3.0, 4.0, 0.0]) / (norm + 1e-6))
            assert torch.linalg.vector_norm(torch.cat([head.grad.flatten(), other.grad])).item() == pytest.approx(1.0, abs=1e-5)
        else:  # untouched, though the total norm is above 1
            assert other.grad.tolist() == [3.0, 4.0, 0.0] and head.grad[0, 1].item() == edge


def test_agm_after_backward_clips_by_default_and_not_when_turned_off():
    model, x, y = _setup()
    for clip in (True, False):
        method = build_method("agm", model, _spec(method="agm", method_args={"agm": {"clip": clip}}), PROFILE)
        model.zero_grad(set_to_none=True)
        out, loss = method.forward_loss(model, x, y, 0, None)
        loss.backward()
        for p in model.parameters():
            p.grad.fill_(0.01)
        model.fusion.fc.weight.grad[0, 0] = 5.0  # one element of the head's weight gradient leaves [-1, 1]
        method.after_backward(out, y, 0)
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item()
        assert (norm == pytest.approx(1.0, abs=1e-4)) is clip and (norm > 5.0) is not clip
        assert method.clipped.item() == (1 if clip else 0)
    from pdmp_cli.methods.agm import head_weights

    assert head_weights(model) == [model.fusion.fc.weight]
    for fusion, names in (("gated", ["fc_out"]), ("sum", ["fcs.audio", "fcs.visual"]), ("film", ["fc"])):
        m = build_multimodal("small", fusion, {"audio": 1, "visual": 3}, num_classes=3)
        assert head_weights(m) == [m.fusion.get_submodule(n).weight for n in names]
    for fusion, name in (("se", "head"), ("mmformer", "classifier")):  # fused inside the encoders
        m = build_multimodal("small", fusion, {"audio": 1, "visual": 3}, num_classes=3)
        assert head_weights(m) == [m.get_submodule(name).weight]


# --- PMR ---------------------------------------------------------------------------------------------


def test_pmr_prototypes_distances_and_the_modality_that_gets_the_extra_loss():
    from pdmp_cli.methods.pmr import class_means, extra_loss_weights, prototype_similarity

    feats = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    protos, seen = class_means(feats, torch.tensor([0, 0, 1]), num_classes=3)
    assert protos.tolist() == [[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]] and seen.tolist() == [True, True, False]
    # f = (0, 0): distances 1 and 2 to the two prototypes -> sim = (-1, -2)
    assert prototype_similarity(torch.zeros(1, 2), protos[:2]).tolist() == [[-1.0, -2.0]]
    # two modalities: scores (1.2, 0.8), rho_a = 1.5 > 1 -> visual is weaker and gets alpha
    assert extra_loss_weights(torch.tensor([1.2, 0.8]), 2.0).tolist() == [0.0, 2.0]
    assert extra_loss_weights(torch.tensor([1.0, 1.0]), 2.0).tolist() == [0.0, 0.0]  # a tie: nobody
    # three: rho = 1/2.5, 2/2, 3/1.5 -> only the first is below 1
    assert extra_loss_weights(torch.tensor([1.0, 2.0, 3.0]), 2.0).tolist() == [2.0, 0.0, 0.0]


def test_pmr_prototype_source_per_dataset_as_the_reference():
    from types import SimpleNamespace

    model, _, _ = _setup()
    feats = {"audio": torch.ones(3, 128), "visual": torch.ones(3, 128)}
    asked = []

    def ctx(val_source, source=None):
        args = {"pmr": {"source": source}} if source else {}
        method = build_method("pmr", model, _spec(method="pmr", method_args=args), PROFILE)

        def features(split, fraction=1.0):
            asked.append((split, fraction))
            return feats, torch.tensor([0, 1, 2])

        method.on_epoch_start(SimpleNamespace(features=features, val_source=val_source))
        return asked.pop()

    # auto: the dataset's own validation split, all of it (the reference on AVE); else a tenth of train
    assert ctx("manifest") == ("val", 1.0)
    assert ctx("carved") == ("train", 0.1)  # carved from train by pdmp: not a validation split of the dataset
    assert ctx("test") == ("train", 0.1)  # --select-on-test: there is no validation split
    assert ctx("manifest", "train") == ("train", 0.1) and ctx("carved", "val") == ("val", 1.0)
    with pytest.raises(PdmpError, match="pmr.source must be one of 'auto', 'train' or 'val', got 'test'"):
        resolve_spec(TrainSpec, {"profile": "p.json", "method": "pmr", "method_args": {"pmr": {"source": "test"}}})


def test_pmr_epoch_start_sets_prototypes_with_momentum_and_the_loss_adds_the_weaker_ce():
    from types import SimpleNamespace

    import torch.nn.functional as F

    from pdmp_cli.methods.pmr import prototype_similarity

    model, x, y = _setup()
    method = build_method("pmr", model, TrainSpec(profile="p", encoder="small", method="pmr",
                                                  method_args={"pmr": {"momentum": 0.5, "alpha": 3.0}}), PROFILE)
    method.proto_audio.fill_(1.0)
    feats = {"audio": torch.randn(6, 128), "visual": torch.randn(6, 128)}
    labels = torch.tensor([0, 0, 1, 1, 1, 0])  # class 2 absent: keeps its old prototype
    method.on_epoch_start(SimpleNamespace(features=lambda split, fraction: (feats, labels), epoch=2))
    want = 0.5 * feats["audio"][labels == 0].mean(0) + 0.5  # epoch 2: the first the momentum applies to
    torch.testing.assert_close(method.proto_audio[0], want)
    assert torch.equal(method.proto_audio[2], torch.ones(128))
    model.eval()  # BatchNorm in eval: the loss below is recomputed from the same features
    out, loss = method.forward_loss(model, x, y, epoch=0, part=None)
    sims = {m: prototype_similarity(out.features[m], getattr(method, f"proto_{m}")) for m in ("audio", "visual")}
    score = {m: torch.softmax(s, 1).gather(1, y[:, None]).sum() for m, s in sims.items()}
    weaker = "audio" if score["audio"] < score["visual"] else "visual"
    expected = F.cross_entropy(out.logits, y) + 3.0 * F.cross_entropy(sims[weaker], y)
    torch.testing.assert_close(loss, expected)
    _, outside = method.forward_loss(model, x, y, epoch=71, part=None)  # after the window: the fused CE only
    torch.testing.assert_close(outside, F.cross_entropy(out.logits, y))


# --- G-Blending ----------------------------------------------------------------------------------------


def test_g_blending_weights_from_train_and_validation_losses():
    from pdmp_cli.methods.g_blending import blend_weights

    # heads (audio, visual, fused): dG = max(0, V1 - V2) = (0.2, 0, 0.3);
    # dO = (V2 - T2) - (V1 - T1) = (0.4 - 0.3, 0.4 - 0.2, 0.5 - 0.4) = (0.1, 0.2, 0.1)
    # w = dG / dO^2 = (20, max(1e-8, 0), 30) -> normalised (0.4, 2e-10, 0.6)
    w = blend_weights(t1=[1.0, 1.0, 1.0], v1=[1.3, 1.2, 1.4], t2=[0.7, 0.8, 0.6], v2=[1.1, 1.2, 1.1])
    assert w.tolist() == pytest.approx([0.4, 2e-10, 0.6], rel=1e-9)
    # dO = 0 -> dO^2 is clamped to 1e-8 (that head takes almost all the weight)
    assert blend_weights([1.0, 1.0], [1.2, 1.2], [0.9, 0.8], [1.1, 1.1]).tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


def test_g_blending_loss_is_the_weighted_sum_of_head_losses():
    import torch.nn.functional as F

    model, x, y = _setup()
    method = build_method("g-blending", model, _spec(method="g-blending"), PROFILE)
    assert method.w.tolist() == pytest.approx([1 / 3] * 3)  # before the first estimate
    method.w.copy_(torch.tensor([0.2, 0.3, 0.5]))
    out, loss = method.forward_loss(model, x, y, epoch=0, part=None)
    heads = [F.cross_entropy(method.heads[m](out.features[m]), y) for m in ("audio", "visual")]
    torch.testing.assert_close(loss, 0.2 * heads[0] + 0.3 * heads[1] + 0.5 * F.cross_entropy(out.logits, y))
    assert method.predict(out).logits is out.logits  # the fused head predicts
    with pytest.raises(PdmpError, match=r"^g-blending needs a validation split \(its weights come from validation losses, never test\)"):
        build_method("g-blending", model, _spec(method="g-blending", select_on_test=True), PROFILE)


# --- MMPareto --------------------------------------------------------------------------------------------


def test_mmpareto_min_norm_weights_and_rescaling():
    from pdmp_cli.methods.mmpareto import combine, min_norm_2, pareto_weights

    # conflicting: g1 = (1, 0), g2 = (-1, 1): g1.g1 = 1, g1.g2 = -1, g2.g2 = 2 -> c = (2 + 1) / (1 + 2 + 2) = 0.6
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    assert pareto_weights(g1, g2) == pytest.approx((0.6, 0.4))
    assert pareto_weights(g1, torch.tensor([1.0, 1.0])) == (0.5, 0.5)  # agreeing (cosine > 0): equal weights
    assert min_norm_2(g1, torch.tensor([2.0, 0.0])) == pytest.approx((0.999, 0.001))  # g1 is the min-norm point
    # new = 2 (0.6 g1 + 0.4 g2) = (0.4, 0.8), |new| = 0.894427
    k = (0.6, 0.4)
    stretched = combine(torch.tensor([0.0, 1.0]), g1, g2, k, scale=1.5)  # |g_sum| = 1 > |new|: new / 0.894427 x 1.5
    assert stretched.tolist() == pytest.approx([0.6708203932, 1.3416407865])
    kept = combine(torch.tensor([0.0, 0.5]), g1, g2, k, scale=1.5)  # |g_sum| smaller: new x 1.5
    assert kept.tolist() == pytest.approx([0.6, 1.2])


def test_mmpareto_step_sets_encoder_grads_and_leaves_the_heads_the_summed_gradient():
    from pdmp_cli.methods.mmpareto import combine, pareto_weights
    from pdmp_cli.train.amp import Precision

    model, x, y = _setup()
    method = build_method("mmpareto", model, _spec(method="mmpareto"), PROFILE)
    model.zero_grad(set_to_none=True)
    out, loss = method.forward_loss(model, x, y, epoch=0, part=None)
    terms = dict(method._terms)
    per_term = {}
    for name, t in terms.items():
        per_term[name] = torch.autograd.grad(t, list(model.parameters()) + list(method.parameters()), retain_graph=True, allow_unused=True)
    method.backward(loss, Precision("fp32", torch.device("cpu")))
    summed = {n: p.grad.clone() for n, p in [*model.named_parameters(), *method.named_parameters()]}
    method.after_backward(out, y, 0)
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in method.named_parameters()]
    for m in ("audio", "visual"):
        idx = [i for i, n in enumerate(names) if n.startswith(f"encoders.{m}")]
        flat = [torch.cat([per_term[t][i].flatten() for i in idx]) for t in ("mm", m)]
        k = pareto_weights(*flat)
        for i in idx:
            p = dict(model.named_parameters())[names[i]]
            want = combine(summed[names[i]], per_term["mm"][i], per_term[m][i], k, 1.5)
            torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-8)
    for n, p in [*model.fusion.named_parameters(prefix="fusion"), *method.named_parameters()]:
        assert torch.equal(p.grad, summed[n]), n  # heads: the gradient of L_mm + sum_m L_m


# --- a method is one file ----------------------------------------------------------------------------


def test_nothing_outside_methods_names_a_method():
    """No code outside pdmp_cli/methods/ holds a method's name as a string literal ("pdmp" is also
    the program's name and is left out); report, sweep, plots and the loop ask the classes."""
    import ast
    from pathlib import Path

    import pdmp_cli

    names = set(METHODS.names()) - {"pdmp"}
    root = Path(pdmp_cli.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        if "methods" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.value!r}")
    assert found == []


def test_report_asks_the_class_whether_gamma_p_matters():
    from pdmp_cli.report import settings_key

    for name in METHODS.names():
        assert ("gamma_p" in settings_key({"method": name, "gamma_p": 5.0})) == METHODS.get(name).uses_gamma_p
    assert "gamma_p" not in settings_key({"method": "a-method-no-longer-registered", "gamma_p": 5.0})
    key = settings_key({"method": "ogm-ge", "gamma_p": 5.0, "method_args": {"ogm-ge": {"alpha": 0.8}, "agm": {"alpha": 1.5}}})
    assert "gamma_p" not in key and key["method_args"] == {"ogm-ge": {"alpha": 0.8}}


def test_synthetic_3_is_a_built_in_three_modality_preset():
    from pdmp_cli.data import load_manifest

    m = load_manifest("synthetic-3")
    assert (m.loader, m.depth.reliability, m.audio.reliability, m.visual.reliability) == ("synthetic", 0.75, 0.6, 0.9)
    assert load_manifest("synthetic").depth is None  # the two-modality presets have no third cue
