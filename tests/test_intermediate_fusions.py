"""Fusions inside the encoders (``se``, ``mmformer``) through the whole tool: every method trains or
refuses in one line, PDMP scales the modality-owned gradients in the loop, Ctrl-C + resume equals
an uninterrupted run, bf16 autocast, two DDP ranks, the analysis probe."""

from __future__ import annotations

import math
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_SYNTHETIC, ddp_job

from pdmp_cli import analysis
from pdmp_cli.errors import PdmpError
from pdmp_cli.methods import METHODS
from pdmp_cli.models.fusions import FUSIONS, builds_model
from pdmp_cli.profile import Profile, Provenance
from pdmp_cli.specs import AnalyzeSpec, TrainSpec, dataset_defaults, resolve_spec
from pdmp_cli.train import checkpoint, run
from pdmp_cli.train.setup import resume_spec

INTERMEDIATE = [n for n in FUSIONS.names() if builds_model(n)]
MUST_RUN = ["vanilla", "pdmp", "ogm-ge", "lr-scale"]  # the methods Table IV and the baselines need


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("intermediate")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PDMP_CACHE_DIR", str(root / "cache"))
        (root / "tiny.toml").write_text(TINY_SYNTHETIC)
        Profile(
            dataset="tiny", modalities=["audio", "visual"], performance_dominant="visual",
            optimization_dominant="audio", optimization_criterion="manual",
            provenance=Provenance(tool_version="test", created="2025-01-01T00:00:00+00:00", source="manual"),
        ).save(root / "profile.json")  # fmt: skip

        def spec(**kw) -> TrainSpec:
            base = dict(profile=str(root / "profile.json"), dataset=str(root / "tiny.toml"), encoder="small",
                        epochs=1, batch_size=16, lr=0.01, device="cpu")  # fmt: skip
            return TrainSpec(**{**base, **kw})

        yield SimpleNamespace(root=root, spec=spec)


def _comparable(metrics) -> list[dict]:
    return [m.model_dump(exclude={"epoch_seconds"}) for m in metrics]


@pytest.mark.parametrize("fusion", INTERMEDIATE)
@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_or_refuses_in_one_line(env, fusion, method):
    spec = env.spec(fusion=fusion, method=method, run_dir=str(env.root / f"{fusion}-{method}"))
    try:
        r = run(spec, quiet=True)
    except PdmpError as e:
        assert method not in MUST_RUN, f"{method} must train with --fusion {fusion}: {e}"
        assert "\n" not in str(e) and e.exit_code == 2 and "fus" in str(e)  # one line naming the fusion
        assert not (env.root / f"{fusion}-{method}" / "spec.json").exists()  # refused before writing
        return
    (m,) = r.metrics
    assert r.status == "complete" and math.isfinite(m.train_loss)
    assert set(m.branch_accuracy) == {"audio", "visual"} and set(m.grad_norm_before) == {"audio", "visual"}
    if method == "pdmp":  # Eq. 10-11 on the modality-owned parameters, as the loop measures them
        for mod, g in {"audio": 0.1, "visual": 10.0}.items():
            assert m.gamma[mod] == pytest.approx(g)
            assert m.grad_norm_after[mod] == pytest.approx(g * m.grad_norm_before[mod], rel=1e-4)


@pytest.mark.slow  # resume is model-agnostic: checked for every method in test_methods_contract by default
@pytest.mark.parametrize("fusion", INTERMEDIATE)
def test_ctrl_c_then_resume_equals_uninterrupted(env, fusion):
    whole = run(env.spec(fusion=fusion, epochs=2, run_dir=str(env.root / f"{fusion}-whole")), quiet=True)

    def ctrl_c(info):
        if (info.epoch, info.step) == (1, 1):
            signal.raise_signal(signal.SIGINT)

    cut = run(env.spec(fusion=fusion, epochs=2, run_dir=str(env.root / f"{fusion}-cut")), on_step=ctrl_c, quiet=True)
    assert cut.status == "interrupted"
    done = run(resume_spec(cut.run_dir), resume=True, quiet=True)
    assert done.status == "complete" and _comparable(done.metrics) == _comparable(whole.metrics)
    a = checkpoint.load(done.run_dir / "checkpoints" / "last.pt")["model"]
    b = checkpoint.load(whole.run_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.parametrize("fusion", INTERMEDIATE)
def test_bf16_autocast_trains(env, fusion):
    r = run(env.spec(fusion=fusion, precision="bf16", run_dir=str(env.root / f"{fusion}-bf16")), quiet=True)
    (m,) = r.metrics
    assert r.status == "complete" and math.isfinite(m.train_loss) and all(v > 0 for v in m.grad_norm_before.values())


@pytest.mark.parametrize("fusion", INTERMEDIATE)
def test_the_analysis_probe_trains_the_fusion(env, fusion, tmp_path):
    manifest = str(env.root / "tiny.toml")
    spec = resolve_spec(AnalyzeSpec, dataset_defaults(manifest, AnalyzeSpec),
                        {"dataset": manifest, "device": "cpu", "out": str(tmp_path / "p.json")},
                        {"probe_epochs": 1, "probe_fusion": fusion, "epochs": 1})  # fmt: skip
    [o] = analysis.run(spec, progress=False)
    assert o.profile.probe["fusion"] == fusion and sorted(o.profile.probe["ranking"]) == ["audio", "visual"]
    assert o.profile.optimization_criterion == "multimodal-probe"


# --- two DDP ranks (gloo, fork: conftest's one shared spawn) ---------------------------------


def _write_data(root: Path) -> None:
    (root / "tiny.toml").write_text(TINY_SYNTHETIC)
    Profile(
        dataset="tiny", modalities=["audio", "visual"], performance_dominant="visual",
        optimization_dominant="audio", optimization_criterion="manual",
        provenance=Provenance(tool_version="test", created="2025-01-01T00:00:00+00:00", source="manual"),
    ).save(root / "profile.json")  # fmt: skip


@ddp_job("intermediate", prepare=_write_data)
def _gloo_rank(rank: int, root: Path) -> dict:
    rec = {}
    for fusion in INTERMEDIATE:  # the module env's spec: small encoder, 1 epoch, global batch 16
        spec = TrainSpec(profile=str(root / "profile.json"), dataset=str(root / "tiny.toml"), encoder="small", epochs=1,
                         batch_size=16, lr=0.01, device="cpu", fusion=fusion, run_dir=str(root / f"ddp-{fusion}"))  # fmt: skip
        weights = []
        r = run(spec, quiet=True, on_step=lambda i: weights.append(torch.cat([p.detach().flatten() for p in i.model.parameters()])))
        rec[fusion] = {"status": r.status, "weights": weights}
    return rec


def test_two_ddp_ranks_train_alike(gloo_pair):
    """Under DDP the ranks see different shards, yet after every step their weights are identical
    (the modulation acts on the averaged gradients, so it keeps the replicas in step)."""
    r0, r1 = gloo_pair.records["intermediate"]
    for f in INTERMEDIATE:
        assert r0[f]["status"] == r1[f]["status"] == "complete"
        assert len(r0[f]["weights"]) == 4  # 60 training clips (carved validation aside) / global batch 16
        assert all(torch.equal(a, b) for a, b in zip(r0[f]["weights"], r1[f]["weights"]))
