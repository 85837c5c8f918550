"""The training loop end to end on tiny data: run directory, metrics, resume, divergence, refusals."""

import hashlib
import json
import math
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_SYNTHETIC
from conftest import make_profile as _profile
from torch.utils.data import DataLoader

from pdmp_cli import rundir
from pdmp_cli.data import load_dataset
from pdmp_cli.errors import PdmpError
from pdmp_cli.rundir import EpochMetrics, RunSummary
from pdmp_cli.specs import TrainSpec
from pdmp_cli.train import run
from pdmp_cli.train.loop import evaluate
from pdmp_cli.train.setup import build_model, eval_loader, resume_spec


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PDMP_CACHE_DIR", str(root / "cache"))
        manifest = root / "tiny.toml"
        manifest.write_text(TINY_SYNTHETIC)
        profile = _profile().save(root / "tiny-profile.json")

        def spec(**kw) -> TrainSpec:
            base = dict(profile=str(profile), dataset=str(manifest), encoder="small", epochs=2, batch_size=16, lr=0.01)
            return TrainSpec(**{**base, **kw})

        e = SimpleNamespace(root=root, manifest=manifest, profile=profile, spec=spec)
        e.pdmp = run(spec(run_dir=str(root / "pdmp")), quiet=True)
        e.ogm = run(spec(method="ogm-ge", seed=3, run_dir=str(root / "ogm")), quiet=True)
        yield e
    torch.set_num_threads(threads)


def _comparable(metrics: list[EpochMetrics]) -> list[dict]:
    return [m.model_dump(exclude={"epoch_seconds"}) for m in metrics]


def test_run_directory_metrics_and_summary(env):
    d = env.pdmp.run_dir
    assert sorted(p.name for p in d.iterdir()) == [
        "checkpoints", "metrics.jsonl", "profile.json", "spec.json", "split.json", "summary.json",
    ]  # fmt: skip
    assert sorted(p.name for p in (d / "checkpoints").iterdir()) == ["best.pt", "best.pt.sha256", "last.pt", "last.pt.sha256"]
    metrics, bad = rundir.read_metrics(d)
    assert bad == 0 and [m.epoch for m in metrics] == [1, 2] and _comparable(metrics) == _comparable(env.pdmp.metrics)
    for m in metrics:
        assert m.gamma == {"audio": pytest.approx(0.1), "visual": pytest.approx(10.0)}
        for mod, g in m.gamma.items():  # Eq. 10-11 as measured: after = gamma x before
            assert m.grad_norm_after[mod] == pytest.approx(g * m.grad_norm_before[mod], rel=1e-4)
            assert m.grad_norm_before[mod] > 0
        assert sum(m.shares.values()) == pytest.approx(1.0)
        assert m.w == pytest.approx(m.shares["audio"] / m.shares["visual"])  # Eq. 5, dataset modality order
        assert m.lr == 0.01 and math.isfinite(m.train_loss) and m.epoch_seconds > 0
        assert 0 <= m.test_accuracy <= 1 and set(m.branch_accuracy) == {"audio", "visual"}

    s = RunSummary.model_validate_json((d / "summary.json").read_text())
    assert s == env.pdmp.summary
    best = max(metrics, key=lambda m: m.test_accuracy)
    assert (s.status, s.epochs_done, s.epochs_planned, s.method, s.dataset) == ("complete", 2, 2, "pdmp", "tiny")
    assert (s.best_accuracy, s.best_epoch, s.best_macro_f1) == (best.test_accuracy, best.epoch, best.test_macro_f1)
    assert (s.final_accuracy, s.final_w, s.final_branch_accuracy) == (
        metrics[-1].test_accuracy, metrics[-1].w, metrics[-1].branch_accuracy,
    )
    assert s.gamma == {"audio": 0.1, "visual": 10.0} and s.wall_seconds > 0
    assert (d / "profile.json").read_bytes() == env.profile.read_bytes()
    assert s.profile_sha256 == hashlib.sha256(env.profile.read_bytes()).hexdigest()
    saved = TrainSpec.model_validate_json((d / "spec.json").read_text())
    assert (saved.dataset, saved.run_dir, saved.gamma_p, saved.epochs) == (str(env.manifest), str(d), 10.0, 2)

    # checkpoints load with weights_only=True, and the final weights reproduce the final accuracy
    last = torch.load(d / "checkpoints/last.pt", weights_only=True)
    best_ckpt = torch.load(d / "checkpoints/best.pt", weights_only=True)
    assert (last["epoch"], last["step"], best_ckpt["epoch"]) == (2, 0, s.selected_epoch)  # best.pt: chosen on val
    # the headline: test accuracy at the best validation epoch (first of equals), on a carved 10 % split
    chosen = max(metrics, key=lambda m: m.val_accuracy)
    assert (s.selection, s.selected_epoch, s.selected_accuracy, s.val_accuracy) == (
        "validation", chosen.epoch, chosen.test_accuracy, chosen.val_accuracy,
    )  # fmt: skip
    assert s.val_split["source"] == "carved" and (s.val_split["train_size"], s.val_split["val_size"]) == (54, 6)
    split = json.loads((d / "split.json").read_text())
    assert len(split["val_indices"]) == 6 and split["val_indices_sha256"] == s.val_split["val_indices_sha256"]
    bundle = load_dataset(env.manifest)
    model = build_model(saved, bundle, torch.device("cpu"))
    model.load_state_dict(last["model"])
    ev = evaluate(model, eval_loader(bundle, saved, torch.device("cpu")), torch.device("cpu"), bundle.num_classes)
    assert ev["accuracy"] == s.final_accuracy and ev["branch_accuracy"] == s.final_branch_accuracy


@pytest.mark.slow  # the message, handler, (epoch, step) and resume equality: every method in test_methods_contract
def test_ctrl_c_mid_epoch_then_resume_equals_uninterrupted(env):
    def ctrl_c(info):
        if (info.epoch, info.step) == (1, 1):  # epoch 2: its data order must come from the checkpoint
            signal.raise_signal(signal.SIGINT)

    spec = env.spec(method="ogm-ge", seed=3, run_dir=str(env.root / "ogm-cut"))
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in the background
    cut = run(spec, on_step=ctrl_c, quiet=True)
    assert cut.status == "interrupted" and _comparable(cut.metrics) == _comparable(env.ogm.metrics[:1])
    assert cut.summary.message == f"interrupted at epoch 2, step 2; continue with `pdmp train --resume {cut.run_dir}`"
    assert json.loads((cut.run_dir / "summary.json").read_text())["status"] == "interrupted"
    ckpt = torch.load(cut.run_dir / "checkpoints/last.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 2)
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored

    done = run(resume_spec(cut.run_dir), resume=True, quiet=True)
    assert done.status == "complete"
    assert _comparable(done.metrics) == _comparable(env.ogm.metrics)
    assert _comparable(rundir.read_metrics(done.run_dir)[0]) == _comparable(env.ogm.metrics)
    a = torch.load(done.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(env.ogm.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_resume_after_last_epoch_with_more_epochs_equals_longer_run(env):
    short = run(env.spec(method="ogm-ge", seed=3, epochs=1, run_dir=str(env.root / "ogm-short")), quiet=True)
    assert short.status == "complete" and len(short.metrics) == 1
    with pytest.raises(PdmpError, match="has already done 1 of 1 epochs; pass --epochs N with N > 1"):
        run(resume_spec(short.run_dir), resume=True, quiet=True)
    with pytest.raises(PdmpError, match="lr cannot be changed"):
        resume_spec(short.run_dir, {"lr": 0.1})
    changed = resume_spec(short.run_dir, {"epochs": 2}).model_copy(update={"gamma_p": 3.0})
    with pytest.raises(PdmpError, match="gamma_p differ from the checkpoint"):
        run(changed, resume=True, quiet=True)
    longer = run(resume_spec(short.run_dir, {"epochs": 2}), resume=True, quiet=True)
    assert _comparable(longer.metrics) == _comparable(env.ogm.metrics)
    assert longer.summary.epochs_planned == 2
    assert json.loads((short.run_dir / "spec.json").read_text())["epochs"] == 2



def test_a_checkpoint_from_an_older_pdmp_is_refused_in_one_line(env, tmp_path):
    import shutil

    from pdmp_cli.train import checkpoint

    d = tmp_path / "old"
    shutil.copytree(env.ogm.run_dir, d)
    last = d / "checkpoints" / "last.pt"
    ckpt = checkpoint.load(last)
    from pdmp_cli.train.setup import STATS_KEYS

    del ckpt["lr_schedule"], ckpt["spec"]["val_fraction"]
    ckpt["stats"] = {k: 0 for k in STATS_KEYS - {"norm_steps"}}  # mid-epoch statistics from before norm_steps
    checkpoint.save(last, ckpt)
    with pytest.raises(PdmpError, match=r"^cannot resume .*old: its checkpoint was written by an older pdmp \(no "
                                        r"lr_schedule, norm_steps, spec.val_fraction\); start a new run$"):
        run(resume_spec(d, {"epochs": 3}), resume=True, quiet=True)

def test_setup_writes_nothing_and_its_run_trains_a_step_and_round_trips_its_state(env, tmp_path):
    """The recipe's set-up, as ``--dry-run`` and step-level tests use it: every check, no file; one
    PDMP step on its Run scales the performance-dominant encoder's gradient by exactly γp; and
    Run.state_dict() holds exactly the keys a resume requires, which load_state_dict restores."""
    from pdmp_cli.signals import GracefulInterrupt
    from pdmp_cli.train.loop import train_one_epoch
    from pdmp_cli.train.setup import LAST_KEYS, require_current, setup
    from pdmp_cli.train.state import EpochStats

    cpu = torch.device("cpu")
    spec = env.spec(run_dir=str(tmp_path / "run"), runs_root=str(tmp_path / "runs"))
    first = setup(spec, cpu)
    assert list(tmp_path.iterdir()) == [] and first.run_dir is None and first.history == []
    batch = next(iter(DataLoader(first.bundle.train, batch_size=16)))
    stats = EpochStats(first.model.modalities, cpu)
    with GracefulInterrupt() as stop:
        assert train_one_epoch(first, [batch], stats, epoch=0, start_step=0, stop=stop) is None
    means = stats.means()
    assert means["gamma"] == pytest.approx({"audio": 0.1, "visual": 10.0})  # Eq. 12 (float32): m_p visual x γp, m_o audio x 1/γp
    for m, g in means["gamma"].items():
        assert means["grad_norm_after"][m] == pytest.approx(g * means["grad_norm_before"][m], rel=1e-5)
    assert list(tmp_path.iterdir()) == []  # a step writes nothing either

    state = first.state_dict(epoch=1)
    assert set(state) == LAST_KEYS
    require_current(tmp_path, {**state, "spec": spec.model_dump(mode="json")})  # what a resume accepts
    second = setup(spec, cpu)  # seeded alike: same initial weights, which the step then moved
    assert not all(torch.equal(a, b) for a, b in zip(first.model.parameters(), second.model.parameters()))
    second.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(first.model.parameters(), second.model.parameters()))
    assert (second.start_epoch, second.start_step, second.stats) == (1, 0, None)
    assert second.optimizer.state_dict()["state"].keys() == first.optimizer.state_dict()["state"].keys()


def test_pdmp_at_gamma_p_1_is_vanilla_to_the_last_bit(env):
    # γp 1 multiplies every encoder gradient by 1.0 (exact in floating point); same seed, same
    # threads: the same data order, losses, accuracies and weights as vanilla
    v = run(env.spec(method="vanilla", run_dir=str(env.root / "v-g1")), quiet=True)
    p = run(env.spec(method="pdmp", gamma_p=1.0, run_dir=str(env.root / "p-g1")), quiet=True)
    strip = lambda ms: [m.model_dump(exclude={"epoch_seconds", "gamma"}) for m in ms]  # noqa: E731
    assert strip(p.metrics) == strip(v.metrics)
    assert all(g == 1.0 for m in p.metrics for g in m.gamma.values())
    a = torch.load(p.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(v.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_too_large_gamma_diverges_with_a_clear_message(env):
    r = run(env.spec(gamma_p=1e30, run_dir=str(env.root / "boom")), quiet=True)
    assert r.status == "diverged"
    assert r.summary.message.startswith("the loss became non-finite at epoch 1, step ")
    assert ("try a new run with a smaller --gamma-p than 1e+30, a smaller --lr than 0.01 or --grad-clip 1.0; "
            "no checkpoint was written (no epoch finished)") in r.summary.message
    assert not (r.run_dir / "checkpoints/last.pt").exists()
    assert json.loads((r.run_dir / "summary.json").read_text())["status"] == "diverged"


def test_divergence_keeps_the_last_good_checkpoint(env):
    def poison(info):  # after epoch 2's first step, the head's weights become NaN
        if (info.epoch, info.step) == (1, 0):
            with torch.no_grad():
                info.model.fusion.fc.weight.fill_(float("nan"))

    r = run(env.spec(method="vanilla", run_dir=str(env.root / "poison")), on_step=poison, quiet=True)
    assert r.status == "diverged" and r.summary.epochs_done == 1
    last = r.run_dir / "checkpoints" / "last.pt"
    assert r.summary.message == (
        "the loss became non-finite at epoch 2, step 2; try a new run with a smaller --lr than 0.01 or --grad-clip 1.0; "
        f"the last good checkpoint ({last}, 1 epochs done) is kept"
    )
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert len(rundir.read_metrics(r.run_dir)[0]) == 1


def test_refusals_come_before_any_file_is_written(env, tmp_path):
    root = tmp_path / "runs"
    cases = [
        (_profile(dataset="cremad"), "is for dataset 'cremad', but the dataset is"),
        (
            _profile(modalities=["rgb", "depth"], performance_dominant="rgb", optimization_dominant="depth"),
            r"has modalities \['rgb', 'depth'\], but dataset 'tiny' has \['audio', 'visual'\]",
        ),
        (_profile(dataset_identity="0123456789abcdef"), r"was made from other data \(identity 0123456789abcdef\)"),
        (_profile(optimization_dominant=None), "leaves optimization_dominant null"),
    ]
    for i, (profile, message) in enumerate(cases):
        path = profile.save(tmp_path / f"p{i}.json")
        with pytest.raises(PdmpError, match=message):
            run(env.spec(profile=str(path), runs_root=str(root)), quiet=True)
    assert not root.exists()
    with pytest.raises(PdmpError, match="already holds a run; continue it with `pdmp train --resume"):
        run(env.spec(run_dir=str(env.pdmp.run_dir)), quiet=True)
    # a null optimization_dominant is fine for the baselines
    ok = run(env.spec(profile=str(tmp_path / "p3.json"), method="vanilla", epochs=1, runs_root=str(root)), quiet=True)
    assert ok.status == "complete" and ok.summary.gamma == {"audio": 1.0, "visual": 1.0}
    assert ok.run_dir.parent == root and ok.run_dir.name.endswith("-tiny-vanilla-concat-g10-s0")
    assert Path(ok.run_dir).is_dir()


@pytest.mark.parametrize("fusion", ["sum", "film", "gated"])
def test_every_fusion_trains_pdmp_and_ogm_ge(env, fusion):
    for method in ("pdmp", "ogm-ge"):
        r = run(env.spec(fusion=fusion, method=method, epochs=1, run_dir=str(env.root / f"{fusion}-{method}")), quiet=True)
        (m,) = r.metrics
        assert r.status == "complete" and math.isfinite(m.train_loss)
        if method == "pdmp":
            assert m.grad_norm_after["visual"] == pytest.approx(10 * m.grad_norm_before["visual"], rel=1e-4)
        else:  # OGM-GE damps at most one branch per step: each epoch-mean coefficient lies in (0, 1]
            assert all(0 < g <= 1 for g in m.gamma.values()) and min(m.gamma.values()) < 1
