"""Every registered method through one contract (timm style): a new method file is covered here
without new test code.

For each method: x {concat, film} x {2, 3 modalities} it trains 2 epochs with finite metrics (or
refuses 3 modalities with one line, before writing anything, when its class says it is defined
for 2); Ctrl-C mid-epoch then ``--resume`` equals the uninterrupted run exactly (CPU); its own
state round-trips through the checkpoint and its parameters are in the optimizer once; two gloo
processes agree with each other step by step and train what one process trains.

Data: a 36-clip, 3-class synthetic set (two modalities, or three with the ``depth`` cue), the
GroupNorm encoder of test_distributed (no BatchNorm, so one process and DDP compute the same
function), batch 12: 3 steps per epoch.
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import FLAT, TINY_SYNTHETIC, ddp_job, register_flat_encoder

from pdmp_cli import rundir
from pdmp_cli.errors import PdmpError
from pdmp_cli.methods import METHODS, build_method
from pdmp_cli.profile import Profile, Provenance
from pdmp_cli.specs import TrainSpec
from pdmp_cli.train import checkpoint, run
from pdmp_cli.train.loop import build_model, build_optimizer, resume_spec

NAMES = METHODS.names()
TINY = TINY_SYNTHETIC.replace("train_size = 60", "train_size = 36").replace("test_size = 30", "test_size = 12")
TINY3 = TINY.replace("[defaults]", "[depth]\nreliability = 0.75\nimage_size = 8\n[defaults]")


def _spec(env, n: int, **kw) -> TrainSpec:
    base = dict(
        profile=str(env.root / f"p{n}.json"), dataset=str(env.root / f"tiny{n}.toml"), encoder=FLAT, epochs=2,
        batch_size=12, lr=0.01, device="cpu", gamma_p=2.0,
    )  # fmt: skip
    return TrainSpec(**{**base, **kw})


def _write_data(root: Path) -> None:
    for n, text, mods in ((2, TINY, ["audio", "visual"]), (3, TINY3, ["audio", "visual", "depth"])):
        (root / f"tiny{n}.toml").write_text(text)
        Profile(
            dataset=f"tiny{n}", modalities=mods, performance_dominant="visual", optimization_dominant="audio",
            optimization_criterion="manual",
            provenance=Provenance(tool_version="t", created="2025-01-01T00:00:00+00:00", source="manual"),
        ).save(root / f"p{n}.json")  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    register_flat_encoder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PDMP_CACHE_DIR", str(root / "cache"))
        _write_data(root)
        e = SimpleNamespace(root=root, runs={})

        def result(method: str, fusion: str = "concat", n: int = 2):
            key = (method, fusion, n)
            if key not in e.runs:
                e.runs[key] = run(_spec(e, n, method=method, fusion=fusion, run_dir=str(root / "-".join(map(str, key)))), quiet=True)
            return e.runs[key]

        e.result = result
        yield e
    from pdmp_cli.models.encoders import ENCODERS

    ENCODERS._items.pop(FLAT, None)


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
    """method x fusion x modality count; film at 3 modalities runs under -m slow only: a method's
    N-modality support does not depend on the fusion (concat at 3 and film at 2 stay by default)."""
    for method in NAMES:
        for fusion in ("concat", "film"):
            for n in (2, 3):
                slow = [pytest.mark.slow] if (fusion, n) == ("film", 3) else []
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
    r = env.result(method, fusion, n)
    assert r.status == "complete" and [m.epoch for m in r.metrics] == [1, 2], r.summary.message
    for m in r.metrics:
        assert math.isfinite(m.train_loss) and 0 <= m.test_accuracy <= 1 and math.isfinite(m.test_macro_f1)
        assert set(m.branch_accuracy) == set(m.gamma) == ({"audio", "visual", "depth"} if n == 3 else {"audio", "visual"})
        assert all(math.isfinite(v) for v in [*m.gamma.values(), *m.grad_norm_after.values()])


@pytest.mark.parametrize("method", NAMES)
def test_ctrl_c_mid_epoch_then_resume_equals_uninterrupted(env, method):
    whole = env.result(method)

    def ctrl_c(info):
        if (info.epoch, info.step) == (1, 0):  # mid epoch 2: on_epoch_start already ran for it
            signal.raise_signal(signal.SIGINT)

    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in the background
    cut = run(_spec(env, 2, method=method, run_dir=str(env.root / f"cut-{method}")), on_step=ctrl_c, quiet=True)
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


# --- two gloo processes -------------------------------------------------------------------------


@ddp_job("contract", prepare=_write_data)
def _gloo_rank(rank: int, root: Path) -> dict:
    """One of the two gloo ranks of conftest's shared spawn: every method on the 2-modality data."""
    env = SimpleNamespace(root=root)
    rec = {}
    for method in NAMES:
        steps: list = []

        def on_step(info, steps=steps):
            steps.append(torch.cat([p.detach().flatten() for g in info.optimizer.param_groups for p in g["params"]]))

        r = run(_spec(env, 2, method=method, run_dir=str(env.root / f"ddp-{method}")), quiet=True, on_step=on_step)
        rec[method] = {"status": r.status, "message": r.summary.message, "metrics": _comparable(r.metrics), "steps": steps}
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
