"""Every registered method through one contract (timm style): a new method file is covered here
without new test code.

For each method x fusion (the late ones concat and film, and every fusion inside the encoders: se,
mmformer) x {2, 3 modalities} it trains with finite metrics (2 epochs with a late fusion, 1 with
a fusion inside the encoders) and PDMP scales the modality-owned gradients by its gammas (or it
refuses in one line, before writing anything: 3 modalities when its class says it is defined for
2, a fusion inside the encoders when it needs a late one, never for the methods Table IV and the
baselines need); Ctrl-C mid-epoch then ``--resume`` equals the uninterrupted run exactly (CPU);
its own state round-trips through the checkpoint and its parameters are in the optimizer once; two
gloo processes agree with each other step by step and train what one process trains. Per
intermediate fusion also: bf16 autocast, two DDP ranks in step, the analysis probe.

Data: a 36-clip, 3-class synthetic set (two modalities, or three with the ``depth`` cue), batch 12:
3 steps per epoch. Late fusions use the GroupNorm encoder of test_distributed (no BatchNorm, so
one process and DDP compute the same function); the intermediate fusions, which need an encoder's
stages, use the ``small`` encoder (BatchNorm) that users train them with.
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import FLAT, TINY_SYNTHETIC, ddp_job, make_profile, register_flat_encoder

from pdmp_cli import analysis, rundir
from pdmp_cli.errors import PdmpError
from pdmp_cli.methods import METHODS, build_method
from pdmp_cli.models.fusions import FUSIONS, builds_model
from pdmp_cli.profile import Profile
from pdmp_cli.specs import AnalyzeSpec, TrainSpec, dataset_defaults, resolve_spec
from pdmp_cli.train import checkpoint, run
from pdmp_cli.train.setup import build_model, build_optimizer, resume_spec

NAMES = METHODS.names()
INTERMEDIATE = [n for n in FUSIONS.names() if builds_model(n)]  # se, mmformer: fused inside the encoders
MUST_RUN = ["vanilla", "pdmp", "ogm-ge", "lr-scale"]  # the methods Table IV and the baselines need: never refused
TINY = TINY_SYNTHETIC.replace("train_size = 60", "train_size = 36").replace("test_size = 30", "test_size = 12")
TINY3 = TINY.replace("[defaults]", "[depth]\nreliability = 0.75\nimage_size = 8\n[defaults]")


def _spec(env, n: int, **kw) -> TrainSpec:
    encoder = "small" if builds_model(kw.get("fusion", "concat")) else FLAT  # se/mmformer need the stages
    base = dict(
        profile=str(env.root / f"p{n}.json"), dataset=str(env.root / f"tiny{n}.toml"), encoder=encoder, epochs=2,
        batch_size=12, lr=0.01, device="cpu", gamma_p=2.0,
    )  # fmt: skip
    return TrainSpec(**{**base, **kw})


def _write_data(root: Path) -> None:
    for n, text, mods in ((2, TINY, ["audio", "visual"]), (3, TINY3, ["audio", "visual", "depth"])):
        (root / f"tiny{n}.toml").write_text(text)
        make_profile(dataset=f"tiny{n}", modalities=mods).save(root / f"p{n}.json")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    register_flat_encoder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PDMP_CACHE_DIR", str(root / "cache"))
        _write_data(root)
        e = SimpleNamespace(root=root, runs={})

        def result(method: str, fusion: str = "concat", n: int = 2, epochs: int | None = None):
            key = (method, fusion, n, epochs or _epochs(fusion))
            if key not in e.runs:
                spec = _spec(e, n, method=method, fusion=fusion, epochs=key[3], run_dir=str(root / "-".join(map(str, key))))
                e.runs[key] = run(spec, quiet=True)
            return e.runs[key]

        e.result = result
        yield e
    from pdmp_cli.models.encoders import ENCODERS

    ENCODERS._items.pop(FLAT, None)


def _epochs(fusion: str) -> int:
    """The matrix trains the late fusions 2 epochs (every method's epoch-to-epoch life cycle, which
    the resume test cuts into) and the intermediate fusions 1 (a fusion changes the model, not the
    method's life cycle)."""
    return 1 if builds_model(fusion) else 2


def _same(a, b) -> bool:
    """Exact equality of (nested) checkpoint contents: tensors, dicts, lists, plain values."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def _comparable(metrics) -> list[dict]:
    return [m.model_dump(exclude={"epoch_seconds"}) for m in metrics]


def _matrix():
    """method x fusion x modality count. At 3 modalities only concat runs by default, every other
    fusion under -m slow: a method's N-modality support does not depend on the fusion (and the
    fusions' own N-modality forward is test_models')."""
    for method in NAMES:
        for fusion in ("concat", "film", *INTERMEDIATE):
            for n in (2, 3):
                slow = [pytest.mark.slow] if n == 3 and fusion != "concat" else []
                yield pytest.param(method, fusion, n, marks=slow, id=f"{method}-{fusion}-{n}")


@pytest.mark.parametrize(("method", "fusion", "n"), list(_matrix()))
def test_trains_two_epochs_or_refuses_in_one_line(env, method, fusion, n):
    limit = METHODS.get(method).max_modalities
    if limit is not None and n > limit:
        run_dir = env.root / f"refused-{method}-{fusion}"
        with pytest.raises(PdmpError, match=rf"^{method} is defined for {limit} modalities, this dataset has 3 \(audio, visual, depth\)(: [^;]+)?; use --method ") as e:
            run(_spec(env, n, method=method, fusion=fusion, run_dir=str(run_dir)), quiet=True)
        assert "\n" not in str(e.value) and e.value.exit_code == 2
        assert not run_dir.exists()  # refused before anything was written
        return
    try:
        r = env.result(method, fusion, n)
    except PdmpError as e:  # only a fusion inside the encoders may be refused, and not by these methods
        assert builds_model(fusion) and method not in MUST_RUN, f"{method} must train with --fusion {fusion}: {e}"
        assert "\n" not in str(e) and e.exit_code == 2 and "fus" in str(e)  # one line naming the fusion
        assert not (env.root / "-".join(map(str, (method, fusion, n, _epochs(fusion))))).exists()  # refused before writing
        return
    mods = {"audio", "visual", "depth"} if n == 3 else {"audio", "visual"}
    assert r.status == "complete" and [m.epoch for m in r.metrics] == [1, 2][: _epochs(fusion)], r.summary.message
    for m in r.metrics:
        assert math.isfinite(m.train_loss) and 0 <= m.test_accuracy <= 1 and math.isfinite(m.test_macro_f1)
        assert set(m.branch_accuracy) == set(m.gamma) == set(m.grad_norm_before) == mods
        assert all(math.isfinite(v) for v in [*m.gamma.values(), *m.grad_norm_after.values()])
        if method == "pdmp":  # Eq. 10-11 on the modality-owned parameters, as the loop measures them
            if n == 2:
                assert m.gamma == pytest.approx({"audio": 1 / 2.0, "visual": 2.0})  # γp 2, m_p visual
            for mod, g in m.gamma.items():
                assert m.grad_norm_after[mod] == pytest.approx(g * m.grad_norm_before[mod], rel=1e-4)


def _resumes():
    """Every method on concat; the intermediate fusions (PDMP) under -m slow: resume is model-agnostic
    (the model's state dict, whatever the model), methods hold state of their own."""
    yield from (pytest.param(m, "concat", id=m) for m in NAMES)
    yield from (pytest.param("pdmp", f, marks=pytest.mark.slow, id=f"pdmp-{f}") for f in INTERMEDIATE)


@pytest.mark.parametrize(("method", "fusion"), list(_resumes()))
def test_ctrl_c_mid_epoch_then_resume_equals_uninterrupted(env, method, fusion):
    whole = env.result(method, fusion, epochs=2)

    def ctrl_c(info):
        if (info.epoch, info.step) == (1, 0):  # mid epoch 2: on_epoch_start already ran for it
            signal.raise_signal(signal.SIGINT)

    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in the background
    cut = run(_spec(env, 2, method=method, fusion=fusion, run_dir=str(env.root / f"cut-{method}-{fusion}")), on_step=ctrl_c, quiet=True)
    assert cut.status == "interrupted" and _comparable(cut.metrics) == _comparable(whole.metrics[:1])
    # the message, the summary on disk, where the checkpoint stands, the handler given back (these
    # were checked for ogm-ge alone in test_train, whose copy now runs under -m slow)
    assert cut.summary.message == f"interrupted at epoch 2, step 1; continue with `pdmp train --resume {cut.run_dir}`"
    assert json.loads((cut.run_dir / "summary.json").read_text())["status"] == "interrupted"
    ckpt = checkpoint.load(cut.run_dir / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (1, 1)
    assert signal.getsignal(signal.SIGINT) is handler_before
    done = run(resume_spec(cut.run_dir), resume=True, quiet=True)
    assert done.status == "complete"
    assert _comparable(done.metrics) == _comparable(whole.metrics)
    assert _comparable(rundir.read_metrics(done.run_dir)[0]) == _comparable(whole.metrics)
    a = checkpoint.load(done.run_dir / "checkpoints" / "last.pt")
    b = checkpoint.load(whole.run_dir / "checkpoints" / "last.pt")
    assert _same(a["model"], b["model"]) and _same(a["method"], b["method"])


@pytest.mark.parametrize("method", NAMES)
def test_method_state_round_trips_and_its_parameters_are_in_the_optimizer_once(env, method):
    saved = checkpoint.load(env.result(method).run_dir / "checkpoints" / "last.pt")
    spec = _spec(env, 2, method=method)
    from pdmp_cli.data import load_dataset

    bundle = load_dataset(spec.dataset)
    model = build_model(spec, bundle, torch.device("cpu"))
    fresh = build_method(method, model, spec, Profile.load(spec.profile))
    opt = build_optimizer(model, spec, fresh)
    in_opt = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(in_opt) == len(set(in_opt)) == len(list(model.parameters())) + len(list(fresh.parameters()))
    fresh.load_state_dict(saved["method"])  # strict: same names and shapes
    assert _same(dict(fresh.state_dict()), dict(saved["method"]))


@pytest.mark.parametrize("method", NAMES)
def test_predict_returns_an_output_and_leaves_its_argument_alone(env, method):
    from torch.utils.data import DataLoader

    from pdmp_cli.data import load_dataset
    from pdmp_cli.models.base import ModelOutput

    spec = _spec(env, 2, method=method)
    bundle = load_dataset(spec.dataset)
    model = build_model(spec, bundle, torch.device("cpu")).eval()
    method_ = build_method(method, model, spec, Profile.load(spec.profile))
    inputs, _ = next(iter(DataLoader(bundle.test, batch_size=4)))
    with torch.no_grad():
        out = model(inputs)
        logits, branches, branch_items, features = out.logits, out.branch_logits, dict(out.branch_logits), out.features
        pred = method_.predict(out)
    assert isinstance(pred, ModelOutput) and pred.logits.shape == logits.shape
    assert out.logits is logits and out.branch_logits is branches and out.features is features
    assert out.branch_logits.keys() == branch_items.keys()
    assert all(out.branch_logits[m] is s for m, s in branch_items.items())


@pytest.mark.parametrize("fusion", INTERMEDIATE)
def test_bf16_autocast_trains_the_intermediate_fusions(env, fusion):
    r = run(_spec(env, 2, fusion=fusion, epochs=1, precision="bf16", run_dir=str(env.root / f"bf16-{fusion}")), quiet=True)
    (m,) = r.metrics
    assert r.status == "complete" and math.isfinite(m.train_loss) and all(v > 0 for v in m.grad_norm_before.values())


@pytest.mark.parametrize("fusion", INTERMEDIATE)
def test_the_analysis_probe_trains_the_intermediate_fusions(env, fusion, tmp_path):
    manifest = str(env.root / "tiny2.toml")
    spec = resolve_spec(AnalyzeSpec, dataset_defaults(manifest, AnalyzeSpec),
                        {"dataset": manifest, "device": "cpu", "out": str(tmp_path / "p.json")},
                        {"probe_epochs": 1, "probe_fusion": fusion, "epochs": 1})  # fmt: skip
    [o] = analysis.run(spec, progress=False)
    assert o.profile.probe["fusion"] == fusion and sorted(o.profile.probe["ranking"]) == ["audio", "visual"]
    assert o.profile.optimization_criterion == "multimodal-probe"


# --- two gloo processes -------------------------------------------------------------------------


@ddp_job("contract", prepare=_write_data)
def _gloo_rank(rank: int, root: Path) -> dict:
    """One of the two gloo ranks of conftest's shared spawn: every method on the 2-modality data
    (concat), and PDMP with each intermediate fusion (recorded under the fusion's name)."""
    env = SimpleNamespace(root=root)
    rec = {}
    for method, fusion in [*((m, "concat") for m in NAMES), *(("pdmp", f) for f in INTERMEDIATE)]:
        steps: list = []

        def on_step(info, steps=steps):
            steps.append(torch.cat([p.detach().flatten() for g in info.optimizer.param_groups for p in g["params"]]))

        spec = _spec(env, 2, method=method, fusion=fusion, epochs=_epochs(fusion), run_dir=str(env.root / f"ddp-{method}-{fusion}"))
        r = run(spec, quiet=True, on_step=on_step)
        rec[method if fusion == "concat" else fusion] = {
            "status": r.status, "message": r.summary.message, "metrics": _comparable(r.metrics), "steps": steps,
        }  # fmt: skip
    return rec


@pytest.fixture(scope="module")
def ddp(gloo_pair):
    return gloo_pair.records["contract"]


@pytest.mark.parametrize("method", NAMES)
def test_two_gloo_processes_agree_and_train_what_one_does(env, ddp, method):
    r0, r1 = ddp[0][method], ddp[1][method]
    assert r0["status"] == r1["status"] == "complete", (r0["message"], r1["message"])
    assert r0["metrics"] == r1["metrics"]  # every rank reports the gathered metrics
    assert len(r0["steps"]) == len(r1["steps"]) > 0
    for a, b in zip(r0["steps"], r1["steps"]):  # the same weights (model and method) after every step
        assert torch.equal(a, b)
    one = _comparable(env.result(method).metrics)
    # the same problem: the global batch of one process, so the losses agree closely (OGM-GE's
    # noise and float summation order keep them from being equal)
    assert r0["metrics"][0]["train_loss"] == pytest.approx(one[0]["train_loss"], rel=0.25)


@pytest.mark.parametrize("fusion", INTERMEDIATE)
def test_two_gloo_processes_train_alike_with_the_intermediate_fusions(ddp, fusion):
    """Under DDP the ranks see different shards, yet after every step their weights are identical
    (the modulation acts on the averaged gradients, so it keeps the replicas in step)."""
    r0, r1 = ddp[0][fusion], ddp[1][fusion]
    assert r0["status"] == r1["status"] == "complete", (r0["message"], r1["message"])
    assert len(r0["steps"]) == len(r1["steps"]) == 3  # 1 epoch: 32 training clips (4 carved for validation) / global batch 12
    assert all(torch.equal(a, b) for a, b in zip(r0["steps"], r1["steps"]))
