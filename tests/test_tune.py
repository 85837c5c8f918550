"""pdmp tune: successive halving through Optuna on fixture validation curves (a file-backed fake
trainer), resume after Ctrl-C without repeated epochs, a diverging candidate dropped with its
reason, two processes sharing one SQLite storage, the branches of Eq. 12, and one tiny real
tuning during which the test split cannot be read."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from pathlib import Path

import pytest
from conftest import make_profile

from pdmp_cli import sweep, tune
from pdmp_cli.errors import PdmpError
from pdmp_cli.profile import Profile

NAN = float("nan")  # in a fixture curve: the loss becomes non-finite in that epoch

# Validation accuracy after each epoch (already increasing, so "best so far" = the value).
# budget 8, first rung 2, eta 2: rungs at epochs 2 and 4. Synchronous successive halving, by hand:
#   epoch 2, all six: γp 5 .60, γp 15 .58, γp 10 .55 | γp 1 .50, γp 2 .40, γp 20 .30: the best 3 of 6 go on
#   epoch 4: γp 15 diverges in epoch 3 -> dropped; γp 5 .65 and γp 10 .62: the best 1 of 2 goes on
#   epoch 8: γp 5 finishes (0.80)
CURVES = {
    "gamma_p-1": [0.40, 0.50, 0.55, 0.60, 0.62, 0.64, 0.66, 0.70],
    "gamma_p-2": [0.30, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.90],
    "gamma_p-5": [0.50, 0.60, 0.62, 0.65, 0.70, 0.75, 0.78, 0.80],
    "gamma_p-10": [0.45, 0.55, 0.60, 0.62, 0.64, 0.66, 0.68, 0.95],
    "gamma_p-15": [0.50, 0.58, NAN],
    "gamma_p-20": [0.20, 0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60],
}
EXPECTED = {
    "gamma_p-1": ("stopped", 2),
    "gamma_p-2": ("stopped", 2),
    "gamma_p-5": ("complete", 8),
    "gamma_p-10": ("stopped", 4),
    "gamma_p-15": ("dropped", 2),
    "gamma_p-20": ("stopped", 2),
}
SPENT = 2 + 2 + 8 + 4 + 2 + 2  # 20 of 48; the log also has γp 15's diverging epoch 3


class FileTrainer:
    """Stands in for the real trainer: a run's progress lives in a file (so a second process or a
    second call sees it), every trained epoch is logged, and one Ctrl-C can be simulated.
    ``curves``: key -> curve, or (key, seed) -> curve. ``peers``: before its first epoch, wait until
    that many trainers on ``root`` hold a candidate each, so several workers really overlap."""

    def __init__(self, root: Path, curves: dict, interrupt=None, delay: float = 0.0, n_val: int | None = None, peers: int = 0):
        self.root, self.curves, self.interrupt, self.delay, self.n_val = Path(root), curves, interrupt, delay, n_val
        self.root.mkdir(parents=True, exist_ok=True)
        self.peers = peers

    def _file(self, cand, seed) -> Path:
        return self.root / f"{cand.key}-s{seed}.json"

    def _state(self, cand, seed) -> dict:
        p = self._file(cand, seed)
        return json.loads(p.read_text()) if p.exists() else {"curve": [], "status": None, "message": None}

    def progress(self, cand, seed):
        s = self._state(cand, seed)
        return tune.Progress(s["curve"], s["status"], s["message"], float(len(s["curve"])), str(self.root / cand.key), self.n_val)

    def advance(self, cand, seed, epochs):
        import time

        if self.peers:  # this worker holds a candidate: wait until every peer holds one too
            (self.root / f"claimed-{os.getpid()}").touch()
            t0 = time.monotonic()
            while len(list(self.root.glob("claimed-*"))) < self.peers and time.monotonic() - t0 < 60:
                time.sleep(0.01)
            self.peers = 0
        s = self._state(cand, seed)
        assert s["status"] != "diverged", "a diverged candidate must not be trained again"
        curve = self.curves.get((cand.key, seed), self.curves.get(cand.key))
        for e in range(len(s["curve"]) + 1, epochs + 1):
            time.sleep(self.delay)
            with open(self.root / "log.txt", "a") as f:
                f.write(f"{cand.key} {seed} {e} {os.getpid()}\n")
            v = curve[e - 1]
            if math.isnan(v):
                s.update(status="diverged", message=f"the loss became non-finite at epoch {e}, step 3")
                break
            s["curve"].append(v)
            if self.interrupt == (cand.key, e):
                self.interrupt = None
                s.update(status="interrupted", message=f"interrupted after epoch {e}; continue with `pdmp train --resume x`")
                break
        else:
            s.update(status="complete", message=None)
        self._file(cand, seed).write_text(json.dumps(s))
        return self.progress(cand, seed)

    def log(self) -> list[tuple[str, int, int, int]]:
        p = self.root / "log.txt"
        rows = (ln.split() for ln in p.read_text().splitlines()) if p.exists() else []
        return [(k, int(s), int(e), int(pid)) for k, s, e, pid in rows]


def _profile(path: Path, **update) -> str:
    return str(make_profile(**update).save(path))


def _plan(tmp_path, tiny_manifest, profile=None, flags=None, **kw):
    prof = profile or _profile(tmp_path / "profile.json")
    base = sweep.base_spec(prof, dataset=str(tiny_manifest), flags={"runs_root": str(tmp_path / "runs"), **(flags or {})})
    kw.setdefault("values", {"gamma_p": [1, 2, 5, 10, 15, 20]})
    kw.setdefault("budget", 8)
    kw.setdefault("min_epochs", 2)
    return tune.make_plan(base, tmp_path / "tune", **kw)


def _states(result) -> dict:
    return {r.candidate.key: (r.state, len(r.curve)) for r in result.candidates}


def _epochs(trainer) -> list[tuple[str, int, int]]:
    return [(k, s, e) for k, s, e, _ in trainer.log()]


def test_synchronous_successive_halving_keeps_and_drops_the_right_candidates(tmp_path, tiny_manifest):
    plan = _plan(tmp_path, tiny_manifest)
    assert plan.rungs() == [2, 4] and plan.targets() == [2, 4, 8] and not plan.asynchronous
    trainer = FileTrainer(tmp_path / "fake", CURVES)
    result = tune.run(plan, trainer=trainer)
    assert _states(result) == EXPECTED
    assert result.choice.candidate.params == {"gamma_p": 5.0} and result.choice.value == 0.80
    assert result.spent_epochs == SPENT and result.full_epochs == 6 * 8
    notes = {r.candidate.key: r.note for r in result.candidates}
    assert notes["gamma_p-15"] == "dropped: diverged (the loss became non-finite at epoch 3, step 3)"
    assert notes["gamma_p-10"] == (
        "stopped after epoch 4: best validation accuracy 0.6200 ranked 2 of the 2 candidates at epoch 4 (the best 1 go on)"
    )
    assert notes["gamma_p-1"].startswith("stopped after epoch 2: best validation accuracy 0.5000 ranked 4 of the 6")
    # every candidate reached rung 2 before any went past it
    log = _epochs(trainer)
    first_past = next(i for i, (_, _, e) in enumerate(log) if e > 2)
    assert {k for k, _, e in log[:first_past] if e == 2} == set(CURVES)
    # the spec file pdmp train --spec takes: the choice for the whole run
    chosen = json.loads((plan.tune_dir / tune.CHOSEN).read_text())
    assert chosen["gamma_p"] == 5.0 and chosen["epochs"] == plan.base.epochs and "run_dir" not in chosen
    summary = json.loads((plan.tune_dir / tune.SUMMARY).read_text())
    assert summary["choice"] == "gamma_p-5" and summary["spent_epochs"] == SPENT and summary["schedule"] == "synchronous"
    # every epoch trained once; a second call trains nothing and gives the same answer
    assert len(log) == len(set(log)) == SPENT + 1  # + the diverging epoch 3
    again = tune.run(plan, trainer=trainer)
    assert len(trainer.log()) == SPENT + 1 and _states(again) == EXPECTED


def _order_curves(gammas):
    """12 candidates whose curves cross: a fast starter that stalls, slow ones that climb."""
    out = {}
    for i, g in enumerate(gammas):
        start, slope = 0.30 + 0.03 * ((i * 5) % 12), 0.004 + 0.002 * ((i * 7) % 12)
        out[f"gamma_p-{g:g}"] = [min(0.99, start + slope * e) for e in range(1, 26)]
    return out


def test_order_of_the_candidates_changes_nothing_and_halving_costs_at_most_half(tmp_path, tiny_manifest):
    gammas = [1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 12.0, 15.0, 20.0, 30.0]
    curves = _order_curves(gammas)
    runs = {}
    for name, order in (("best-first", sorted(gammas, key=lambda g: -curves[f"gamma_p-{g:g}"][-1])),
                        ("worst-first", sorted(gammas, key=lambda g: curves[f"gamma_p-{g:g}"][-1]))):  # fmt: skip
        d = tmp_path / name
        d.mkdir()
        plan = _plan(d, tiny_manifest, values={"gamma_p": order}, budget=25, min_epochs=None, eta=2)
        assert plan.rungs() == [6, 12, 24] and len(plan.candidates) == 12
        trainer = FileTrainer(d / "fake", curves)
        runs[name] = (tune.run(plan, trainer=trainer), trainer)
    (a, ta), (b, tb) = runs["best-first"], runs["worst-first"]
    assert _states(a) == _states(b) and a.choice.candidate.key == b.choice.candidate.key
    assert a.spent_epochs == b.spent_epochs == 12 * 6 + 6 * 6 + 3 * 12 + 1 == 145 <= 300 / 2
    assert sorted(_epochs(ta)) == sorted(_epochs(tb))  # the same epochs of the same candidates


def test_identical_candidates_train_once_and_vanilla_is_named(tmp_path, tiny_manifest):
    """γp 1 gives every modality γ = 1 under either branch of Eq. 12: one candidate, one run."""
    prof = _profile(tmp_path / "p.json", optimization_dominant=None)
    plan = _plan(tmp_path, tiny_manifest, profile=prof, values={"gamma_p": [1, 5]})
    assert plan.grid_size == 4 and len(plan.candidates) == 3
    one = plan.candidates[0]
    assert one.params == {"gamma_p": 1.0, "m_o": "visual"} and one.vanilla and one.same == ("γp 1 · m_o audio",)
    assert one.display == "γp 1 · m_o visual (= vanilla) [same as γp 1 · m_o audio]"
    assert [c.vanilla for c in plan.candidates] == [True, False, False]
    assert "γp 1 · m_o audio trains exactly as γp 1 · m_o visual: trained once" in plan.notes
    curves = {c.key: [0.7] * 8 if c is one else [0.5] * 8 for c in plan.candidates}
    trainer = FileTrainer(tmp_path / "fake", curves)
    result = tune.run(plan, trainer=trainer)
    assert {k for k, _, _ in _epochs(trainer)} == {c.key for c in plan.candidates}  # 3 runs, not 4
    assert result.full_epochs == 3 * 8 and result.choice.candidate is one
    assert result.vanilla_note == "the choice γp 1 · m_o visual switches PDMP off: every modality's γ is 1, so it trains as --method vanilla"
    assert result.branch_note.startswith("Eq. 12: no branch preferred")
    assert "1 of the grid's 4 points were duplicates, trained once" in tune.compute_line(result)
    # lr-scale's factor 1 is vanilla too; OGM-GE's alpha never is
    plan = _plan(tmp_path / "l", tiny_manifest, flags={"method": "lr-scale"}, values={"gamma_p": [1, 2]})
    assert [c.vanilla for c in plan.candidates] == [True, False]
    plan = _plan(tmp_path / "o", tiny_manifest, flags={"method": "ogm-ge"}, values={"ogm-ge.alpha": [0.1, 0.8]})
    assert [c.vanilla for c in plan.candidates] == [False, False] and len(plan.candidates) == 2


def test_choice_within_noise_is_said_and_recorded(tmp_path, tiny_manifest):
    """100 validation samples: 0.80 against 0.78 is 0.35 standard errors of the difference apart."""
    plan = _plan(tmp_path, tiny_manifest, values={"gamma_p": [1, 5, 10]}, budget=2, min_epochs=2)
    curves = {"gamma_p-1": [0.70, 0.78], "gamma_p-5": [0.75, 0.80], "gamma_p-10": [0.40, 0.50]}
    result = tune.run(plan, trainer=FileTrainer(tmp_path / "fake", curves, n_val=100))
    se5, se1 = math.sqrt(0.8 * 0.2 / 100), math.sqrt(0.78 * 0.22 / 100)
    assert result.choice.candidate.key == "gamma_p-5" and result.choice.se == pytest.approx(se5)
    z = 0.02 / math.sqrt(se5**2 + se1**2)
    assert result.noise == [
        f"within noise of the runner-up (PDMP off) γp 1: 0.8000 against 0.7800, a difference of 0.0200 = {z:.1f} "
        "standard errors (< 2); validation cannot tell them apart"
    ]
    assert result.within_noise_of == ["γp 1"] and result.vanilla_note is None
    chosen = json.loads((plan.tune_dir / tune.CHOSEN).read_text())
    assert chosen["_tune"]["within_noise_of"] == ["γp 1"] and chosen["_tune"]["se"] == pytest.approx(se5)
    # far apart: nothing said
    curves = {"gamma_p-1": [0.40, 0.45], "gamma_p-5": [0.90, 0.95], "gamma_p-10": [0.40, 0.50]}
    result = tune.run(_plan(tmp_path / "b", tiny_manifest, values={"gamma_p": [1, 5, 10]}, budget=2, min_epochs=2),
                      trainer=FileTrainer(tmp_path / "b" / "fake", curves, n_val=100))  # fmt: skip
    assert result.noise == [] and result.within_noise_of == []


def test_seeds_tune_on_the_mean(tmp_path, tiny_manifest):
    plan = _plan(tmp_path, tiny_manifest, values={"gamma_p": [1, 5]}, budget=2, min_epochs=2, seeds=[0, 1, 2])
    assert plan.seeds == [0, 1, 2] and plan.full_epochs == 2 * 3 * 2
    # γp 5 wins on seed 0 alone, γp 1 on the mean of the three
    curves = {("gamma_p-1", 0): [0.5, 0.6], ("gamma_p-1", 1): [0.7, 0.8], ("gamma_p-1", 2): [0.7, 0.8],
              ("gamma_p-5", 0): [0.6, 0.9], ("gamma_p-5", 1): [0.5, 0.5], ("gamma_p-5", 2): [0.5, 0.6]}  # fmt: skip
    trainer = FileTrainer(tmp_path / "fake", curves, n_val=50)
    result = tune.run(plan, trainer=trainer)
    assert result.choice.candidate.key == "gamma_p-1"
    assert result.choice.value == pytest.approx((0.6 + 0.8 + 0.8) / 3)
    assert result.choice.per_seed == {0: 0.6, 1: 0.8, 2: 0.8}
    sd = math.sqrt(((0.6 - 2.2 / 3) ** 2 + 2 * (0.8 - 2.2 / 3) ** 2) / 2)
    assert result.choice.se == pytest.approx(sd / math.sqrt(3))  # larger than the binomial one here
    assert len(set(_epochs(trainer))) == len(_epochs(trainer)) == 12 and result.spent_epochs == 12


def test_resume_after_interrupt_repeats_no_epoch_and_the_advice_reads_no_test_data(tmp_path, tiny_manifest):
    plan = _plan(tmp_path, tiny_manifest)
    trainer = FileTrainer(tmp_path / "fake", CURVES, interrupt=("gamma_p-5", 3))
    first = tune.run(plan, trainer=trainer, command="pdmp tune --profile p.json")
    assert first.stopped == (
        "interrupted in γp 5 after 3 epochs (its run keeps a checkpoint); run `pdmp tune --profile p.json` again "
        "to continue the tuning"
    )
    assert "pdmp train" not in first.stopped and first.choice is None
    assert not (plan.tune_dir / tune.CHOSEN).exists()
    assert {r.candidate.key: r.state for r in first.candidates}["gamma_p-5"] == "interrupted"
    second = tune.run(plan, trainer=trainer)  # the same call continues
    assert second.stopped is None and _states(second) == EXPECTED
    assert second.choice.candidate.key == "gamma_p-5"
    log = _epochs(trainer)
    assert len(log) == len(set(log)) == SPENT + 1  # the same epochs as without the interrupt, each once


def _load(stop):
    while not stop.is_set():  # another process keeping a core busy
        sum(i * i for i in range(10000))


def _worker(plan, root, delay):
    tune.run(plan, trainer=FileTrainer(root, CURVES, delay=delay, peers=2))


def _two_workers_share_the_work(plan, root: Path, ctx):
    """Two worker processes tune ``plan`` at once; both train, no epoch twice, no candidate in both;
    then the settled study as any later call reads it."""
    procs = [ctx.Process(target=_worker, args=(plan, root, 0.002)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    log = FileTrainer(root, CURVES).log()
    assert len({pid for *_, pid in log}) == 2  # both worked
    assert len({(k, s, e) for k, s, e, _ in log}) == len(log)  # no epoch twice
    for key in CURVES:
        assert len({pid for k, _, _, pid in log if k == key}) == 1  # no candidate in two workers
    result = tune.run(plan, trainer=FileTrainer(root, CURVES))
    assert all(r.state in ("complete", "stopped", "dropped") for r in result.candidates)
    return result


@pytest.mark.parametrize("repeats", [1, pytest.param(5, marks=pytest.mark.slow)])
def test_two_workers_on_a_journal_storage_never_train_the_same_epoch_under_load(tmp_path, tiny_manifest, repeats):
    """The claim of a candidate is one storage operation (a trial created with it), so this holds
    whatever the timing; while two other processes load the CPU (5 times: make test-slow)."""
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    loads = [ctx.Process(target=_load, args=(stop,)) for _ in range(2)]
    for p in loads:
        p.start()
    try:
        for rep in range(repeats):
            d = tmp_path / f"rep{rep}"
            plan = _plan(d, tiny_manifest, asynchronous=True)
            assert plan.storage.endswith("study.journal")
            result = _two_workers_share_the_work(plan, d / "fake", ctx)
            # the study is settled and the last worker wrote the choice: any later call reads it
            assert json.loads((plan.tune_dir / tune.SUMMARY).read_text())["choice"] == result.choice.candidate.key
    finally:
        stop.set()
        for p in loads:
            p.join(10)


class DyingTrainer(FileTrainer):
    """A worker killed (a preempted node) in the middle of a candidate: no Ctrl-C, no tell."""

    def advance(self, cand, seed, epochs):
        if cand.key == "gamma_p-5" and epochs == 4:
            super().advance(cand, seed, 3)  # epoch 3 done and saved, then the process dies in epoch 4
            os._exit(1)
        return super().advance(cand, seed, epochs)


def test_a_dead_workers_candidate_is_resumed_after_the_heartbeat_grace(tmp_path, tiny_manifest, monkeypatch):
    import time
    from types import SimpleNamespace

    monkeypatch.setattr(tune, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setattr(tune, "GRACE_SECONDS", 1)
    plan = _plan(tmp_path, tiny_manifest, asynchronous=True)
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=lambda: tune.run(plan, trainer=DyingTrainer(tmp_path / "fake", CURVES)))
    p.start()
    p.join(60)
    assert p.exitcode == 1  # died holding γp 5 (its trial still RUNNING in the storage)
    # past the grace period: the next worker's clock runs 1.2 s ahead (as if it had waited; its own
    # heartbeats carry the same clock), so it fails that trial and takes γp 5 over
    monkeypatch.setattr(tune, "time", SimpleNamespace(time=lambda: time.time() + 1.2, sleep=time.sleep))
    trainer = FileTrainer(tmp_path / "fake", CURVES)
    result = tune.run(plan, trainer=trainer)
    assert result.choice.candidate.key == "gamma_p-5"
    log = _epochs(trainer)
    assert len(log) == len(set(log))  # γp 5 went on from epoch 4: nothing trained twice
    mine = sorted(e for k, _, e, pid in trainer.log() if k == "gamma_p-5" and pid == os.getpid())
    assert mine == [4, 5, 6, 7, 8]  # epochs 1-3 were the dead worker's


@pytest.mark.parametrize(
    "update, tried",
    [
        ({}, None),  # the profile settles m_o: one branch
        ({"optimization_dominant": None}, ["visual", "audio"]),
        ({"probe": {"ranking": ["visual", "audio"]}, "early_ranking": ["audio", "visual"], "late_ranking": ["visual", "audio"],
          "optimization_criterion": "unimodal-early"}, ["audio", "visual"]),
        ({"uncertain": {"early_ranking": True}, "early_ranking": ["audio", "visual"], "late_ranking": ["visual", "audio"],
          "optimization_criterion": "unimodal-early"}, ["audio", "visual"]),
    ],
)
def test_both_branches_of_eq12_when_the_profile_cannot_settle_m_o(tmp_path, tiny_manifest, update, tried):
    prof = _profile(tmp_path / "p.json", **update)
    plan = _plan(tmp_path, tiny_manifest, profile=prof, values={"gamma_p": [5]})
    if tried is None:
        assert [c.params for c in plan.candidates] == [{"gamma_p": 5.0}] and plan.branch_reason is None
        return
    assert [c.params[tune.BRANCH] for c in plan.candidates] == tried
    for c in plan.candidates:
        p = Profile.load(c.profile)
        assert p.optimization_dominant == c.params[tune.BRANCH]
        assert plan.spec_for(c).profile == c.profile
    # validation decides: the γr = 1/γp branch (m_o audio) is better here
    curves = {c.key: [0.5] * 8 if c.params[tune.BRANCH] == "visual" else [0.6] * 8 for c in plan.candidates}
    result = tune.run(plan, trainer=FileTrainer(tmp_path / "fake", curves))
    assert result.choice.candidate.params[tune.BRANCH] == "audio"
    assert result.branch_note.startswith("Eq. 12: validation preferred m_o audio (γr = 1/γp) with 0.6000 over m_o visual (γr = γp)")
    assert json.loads((plan.tune_dir / tune.CHOSEN).read_text())["profile"] == result.choice.candidate.profile


def test_method_hyperparameters_and_bad_plans(tmp_path, tiny_manifest):
    plan = _plan(tmp_path, tiny_manifest, flags={"method": "ogm-ge"}, values={"ogm-ge.alpha": [0.1, 0.8]})
    specs = [plan.spec_for(c) for c in plan.candidates]
    assert [s.method_args["ogm-ge"]["alpha"] for s in specs] == [0.1, 0.8]
    # another method's field changes nothing PDMP trains: one candidate
    assert len(_plan(tmp_path, tiny_manifest, values={"ogm-ge.alpha": [0.1, 0.8]}).candidates) == 1
    with pytest.raises(PdmpError, match="--budget must be >= 1 epoch, got 0"):
        _plan(tmp_path, tiny_manifest, budget=0)
    with pytest.raises(PdmpError, match="is for dataset 'synthetic', but the dataset is .*tiny.toml"):  # before anything is written
        _plan(tmp_path / "other", tiny_manifest, profile=_profile(tmp_path / "syn.json", dataset="synthetic"))
    assert not (tmp_path / "other").exists()
    with pytest.raises(PdmpError, match="gamma_p must be > 0"):
        _plan(tmp_path, tiny_manifest, values={"gamma_p": [0, 5]})
    with pytest.raises(PdmpError, match="--min-epochs must be between 1 and the budget"):
        _plan(tmp_path, tiny_manifest, min_epochs=9)
    with pytest.raises(PdmpError, match="validation split"):
        prof = _profile(tmp_path / "profile.json")
        base = sweep.base_spec(prof, dataset=str(tiny_manifest), flags={"select_on_test": True, "val_fraction": 0})
        tune.make_plan(base, tmp_path / "t")


FILES_MANIFEST = """
loader = "files"
[splits.train]
list = "train.csv"
[splits.val]
list = "val.csv"
[splits.test]
list = "test.csv"
[modalities.audio]
kind = "audio"
path = "audio/{id}.wav"
[modalities.visual]
kind = "image"
path = "visual/{id}.png"
preprocessing = { size = 16 }
[defaults]
encoder = "small"
batch_size = 2
lr = 0.01
"""


def test_real_tuning_never_reads_the_test_split(tmp_path):
    """Real runs (pdmp_cli.train.run) on a files dataset whose test files are all garbage: reading
    one, by the dataset check or an evaluation, would fail. Two γp candidates, rung at epoch 1 of 2."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from data import miniature as M

    root = M.make_custom(tmp_path / "mine")
    (root / "m.toml").write_text(FILES_MANIFEST)
    for clip, _ in M.CUSTOM_TEST:
        (root / "audio" / f"{clip}.wav").write_bytes(b"not audio")
        (root / "visual" / f"{clip}.png").write_bytes(b"not an image")
    prof = _profile(tmp_path / "p.json", dataset="m")
    plan = _plan(tmp_path, root / "m.toml", profile=prof, flags={"device": "cpu"}, values={"gamma_p": [1, 5]}, budget=2, min_epochs=1)
    result = tune.run(plan, command="pdmp tune (test)")
    assert result.stopped is None and result.choice is not None
    for r in result.candidates:
        assert r.state in ("complete", "stopped") and 1 <= len(r.curve) <= 2
        metrics = [json.loads(ln) for ln in (Path(r.run_dir) / "metrics.jsonl").read_text().splitlines()]
        assert all(m["test_accuracy"] is None and m["val_accuracy"] is not None for m in metrics)
        assert [m["val_accuracy"] for m in metrics] == r.curve
    # the finished candidate's run was continued past the rung (resumed), not restarted
    done = [r for r in result.candidates if r.state == "complete"]
    assert len(done) == 1 and json.loads((Path(done[0].run_dir) / "summary.json").read_text())["epochs_done"] == 2
    assert [m["epoch"] for m in map(json.loads, (Path(done[0].run_dir) / "metrics.jsonl").read_text().splitlines())] == [1, 2]
    chosen = json.loads((plan.tune_dir / tune.CHOSEN).read_text())
    assert chosen["gamma_p"] == result.choice.candidate.params["gamma_p"]
    # the final training of the choice does read the test split, and refuses the garbage
    from pdmp_cli import train

    with pytest.raises(PdmpError, match="unreadable file"):
        train.run(plan.spec_for(result.choice.candidate, run_dir=str(tmp_path / "final")), quiet=True)


def test_cli_prints_curves_choice_compute_and_the_spec(tmp_path, tiny_manifest, monkeypatch):
    from typer.testing import CliRunner

    from pdmp_cli.cli.app import app

    prof = _profile(tmp_path / "profile.json")
    monkeypatch.setattr(tune, "RunTrainer", lambda plan, **kw: FileTrainer(tmp_path / "fake", CURVES))
    args = ["tune", "--profile", prof, "--dataset", str(tiny_manifest), "--budget", "8", "--min-epochs", "2",
            "--tune-dir", str(tmp_path / "t")]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "γp 5 * │ complete │ 8 │ 0.8000 (8) │ 0.50 0.60 0.62" in out and "γp 1 (= vanilla) │ stopped │ 2" in out  # the curve (wraps at 80 columns)
    assert "γp 15: dropped: diverged (the loss became non-finite at epoch 3, step 3)" in out
    assert "choice: γp 5: the best validation accuracy, 0.8000 at epoch 8 of 8; next γp 10 0.6200 (stopped after 4 epochs)" in out
    assert "compute: 20 of 48 epochs (42% of a full sweep of 6 candidates x 8 epochs; synchronous successive halving)" in out
    name, h = tune.dataset_identity(sweep.base_spec(prof, dataset=str(tiny_manifest)))
    spec = tmp_path / "t" / f"{name}-{h}-pdmp-s0" / "chosen.json"
    assert name == "tiny" and f"pdmp train --spec {spec}" in out and json.loads(spec.read_text())["gamma_p"] == 5.0
    # bad input: one line, exit 2, nothing trained
    r = CliRunner().invoke(app, ["tune", "--profile", prof, "--dataset", str(tiny_manifest), "--values", "ogm-ge.alpha"])
    assert r.exit_code == 2 and "--values needs FIELD=v1,v2" in r.output
    r = CliRunner().invoke(app, ["tune", "--dataset", str(tiny_manifest)])
    assert r.exit_code == 2 and "--profile is required" in r.output
    r = CliRunner().invoke(app, [*args, "--budget", "0"])  # once silently the full budget
    assert r.exit_code == 2 and "--budget must be >= 1 epoch, got 0" in r.output


def test_tune_folders_are_named_by_the_dataset_identity_and_not_overwritten(tmp_path, tiny_manifest):
    """Two datasets laid out as my-data/manifest.toml get two folders; another plan in a folder needs force."""
    text = tiny_manifest.read_text()
    bases = []
    for folder, extra in (("a", ""), ("b", ""), ("c", "\n# another content\n")):
        m = tmp_path / folder / "manifest.toml"
        m.parent.mkdir()
        m.write_text(text + extra)
        bases.append(sweep.base_spec(_profile(tmp_path / f"{folder}.json", dataset=folder), dataset=str(m)))
    names = [tune.dir_name(b) for b in bases]
    assert names[0].startswith("a-") and names[1].startswith("b-") and names[0].endswith("-pdmp-s0")
    assert names[0].split("-")[1] == names[1].split("-")[1] != names[2].split("-")[1]  # same bytes, same hash
    # one tune folder, two plans: the second is refused without force
    first = tune.make_plan(bases[0], tmp_path / "t", values={"gamma_p": [1, 5]})
    tune.check_tune_dir(first)
    tune.check_tune_dir(first)  # the same plan again: fine
    other = tune.make_plan(bases[2], tmp_path / "t", values={"gamma_p": [1, 5]})
    with pytest.raises(PdmpError, match=r"holds the tuning of another dataset \(a, candidates gamma_p-1, gamma_p-5"):
        tune.check_tune_dir(other)
    with pytest.raises(PdmpError, match="holds the tuning of other settings"):
        tune.check_tune_dir(tune.make_plan(bases[0], tmp_path / "t", values={"gamma_p": [1, 10]}))
    tune.check_tune_dir(other, force=True)


def test_a_study_shared_with_an_incompatible_plan_is_refused_in_one_line(tmp_path, tiny_manifest):
    storage = str(tmp_path / "shared.journal")
    plan = _plan(tmp_path / "a", tiny_manifest, values={"gamma_p": [1, 5]}, storage=storage, study_name="s", asynchronous=True)
    tune.run(plan, trainer=FileTrainer(tmp_path / "fake", {"gamma_p-1": [0.5] * 8, "gamma_p-5": [0.6] * 8}))
    grid = _plan(tmp_path / "a", tiny_manifest, values={"gamma_p": [1, 10]}, storage=storage, study_name="s", asynchronous=True)
    with pytest.raises(PdmpError, match=r"study s in .*shared.journal was made by another plan \(its candidates differ\)"):
        tune.run(grid, trainer=FileTrainer(tmp_path / "fake", {}))
    elsewhere = _plan(tmp_path / "b", tiny_manifest, values={"gamma_p": [1, 5]}, storage=storage, study_name="s", asynchronous=True)
    with pytest.raises(PdmpError, match=r"study s in .* belongs to the tune directory .*a/tune"):
        tune.run(elsewhere, trainer=FileTrainer(tmp_path / "fake", {}))


def test_a_second_worker_opening_the_study_while_the_first_claims_it_joins(tmp_path, tiny_manifest, monkeypatch):
    """Two workers start at once: the second opens the study right after the first worker's first write
    to it. It must see the whole claim (one storage operation), not half of one, and join; a worker of
    another tune directory reading at that moment is still refused. (make test-slow's journal test under
    load once caught the second worker reading a claim without its tune directory.)"""
    import optuna

    storage = str(tmp_path / "shared.journal")
    first = _plan(tmp_path / "a", tiny_manifest, values={"gamma_p": [1, 5]}, storage=storage, study_name="s", asynchronous=True)
    same = _plan(tmp_path / "a", tiny_manifest, values={"gamma_p": [1, 5]}, storage=storage, study_name="s", asynchronous=True)
    elsewhere = _plan(tmp_path / "b", tiny_manifest, values={"gamma_p": [1, 5]}, storage=storage, study_name="s", asynchronous=True)
    seen = []
    real = optuna.study.Study.set_user_attr

    def then_the_others_open_it(study, key, value):
        real(study, key, value)
        if not seen:  # right after the first worker's first write to its new study
            seen.append(tune.open_study(same).study_name)
            with pytest.raises(PdmpError, match=r"belongs to the tune directory .*a/tune, not .*b/tune"):
                tune.open_study(elsewhere)

    monkeypatch.setattr(optuna.study.Study, "set_user_attr", then_the_others_open_it)
    assert tune.open_study(first).study_name == "s" and seen == ["s"]


SMALL_GRIDS = ["--values", "g-blending.super_epoch=1,2", "--values", "ogm-ge.alpha=0.1,0.8", "--values", "agm.alpha=0.1,1.5",
               "--values", "pmr.alpha=1,2", "--values", "dr.move_lambda=1,3", "--gamma-p", "1,5"]  # fmt: skip


@pytest.mark.slow
def test_tuned_table_one_tunes_every_method_before_any_run_reads_the_test_split(tmp_path):
    """--method paper on a dataset whose test files are garbage: every method with a knob is tuned
    (chosen.json each, same budget) and the methods without one say so; only then does the first
    final run read the test split, and it refuses the garbage."""
    import sys

    from typer.testing import CliRunner

    from pdmp_cli.cli.app import app
    from pdmp_cli.methods import METHODS

    sys.path.insert(0, str(Path(__file__).parent))
    from data import miniature as M

    root = M.make_custom(tmp_path / "mine")
    (root / "m.toml").write_text(FILES_MANIFEST)
    for clip, _ in M.CUSTOM_TEST:
        (root / "audio" / f"{clip}.wav").write_bytes(b"not audio")
        (root / "visual" / f"{clip}.png").write_bytes(b"not an image")
    prof = _profile(tmp_path / "p.json", dataset="m")
    args = ["tune", "--method", "paper", "--profile", prof, "--dataset", str(root / "m.toml"), "--budget", "1",
            "--epochs", "1", "--device", "cpu", "--tune-dir", str(tmp_path / "t"), "-q", *SMALL_GRIDS]  # fmt: skip
    r = CliRunner().invoke(app, args)
    out = " ".join(r.output.split())
    assert r.exit_code == 1 and "unreadable file [test]" in out, r.output
    paper = [n for n in METHODS.names() if METHODS.get(n).in_paper_table]
    knobs = {n for n in paper if tune.method_space(n)}
    assert knobs == {"g-blending", "ogm-ge", "agm", "pmr", "dr", "pdmp"}
    for n in sorted(set(paper) - knobs):
        assert f"{n}: no tunable hyperparameter; trained at its defaults" in out
    chosen = {p.parent.name.split("-s0")[0].split("-", 2)[2]: json.loads(p.read_text()) for p in (tmp_path / "t").glob("*/chosen.json")}
    assert set(chosen) == knobs
    assert all(c["_tune"]["budget"] == 1 and c["_tune"]["full_epochs"] in (2, 1) for c in chosen.values())


@pytest.mark.slow
def test_tuned_table_one_trains_the_choices_and_report_names_them(tmp_path, tiny_manifest):
    from typer.testing import CliRunner

    from pdmp_cli.cli.app import app

    prof = _profile(tmp_path / "p.json")
    args = ["tune", "--method", "vanilla,ogm-ge,pdmp", "--final", "--profile", prof, "--dataset", str(tiny_manifest),
            "--budget", "1", "--epochs", "1", "--seeds", "0,1", "--tune-dir", str(tmp_path / "t"), "-q",
            "--values", "ogm-ge.alpha=0.1,0.8", "--gamma-p", "1,5"]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "vanilla has no tunable hyperparameter" in r.output  # a list, not paper/all: refused
    args[2] = "all"
    args = [a for a in args if a != "--final"]
    r = CliRunner().invoke(app, [*args, "--values", "g-blending.super_epoch=1", "--values", "agm.alpha=1.5",
                                 "--values", "pmr.alpha=2", "--values", "dr.move_lambda=3"])  # fmt: skip
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "tuned Table I: each method's setting, chosen on validation with the same budget" in out
    assert "vanilla: defaults (no tunable hyperparameter)" in out
    table = next(tmp_path.joinpath("t").glob("table-tiny-*"))
    assert f"pdmp report {table} --compare vanilla" in out
    assert sorted(p.name for p in table.iterdir())[:2] == ["agm-s0", "agm-s1"]
    rec = json.loads((table / "ogm-ge-s1" / tune.TUNED).read_text())
    assert rec["tuned"] and rec["budget"] == 1 and rec["seeds"] == [0, 1] and rec["setting"].startswith("ogm-ge.alpha ")
    r = CliRunner().invoke(app, ["report", str(table), "--format", "markdown", "--compare", "vanilla"])
    assert r.exit_code == 0, r.output
    assert "tuned on validation" in r.output and f"{rec['setting']} of 2 (budget 1 ep x 2 seeds; 4/4 ep)" in r.output
    assert "no knob: defaults" in r.output


@pytest.fixture
def postgres_url():
    """A real PostgreSQL server for the test (initdb, start, stop); skipped where there is none."""
    import shutil
    import subprocess
    import tempfile

    pytest.importorskip("psycopg2")
    if not (shutil.which("initdb") and shutil.which("pg_ctl") and shutil.which("createdb")):
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, createdb)")
    d = Path(tempfile.mkdtemp(prefix="pdmp-pg-"))  # under /tmp: the postgres user must reach it
    prefix = []
    if os.geteuid() == 0:  # postgres refuses to run as root: as the postgres user
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser")
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a postgres user")
        os.chown(d, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = str(54000 + os.getpid() % 1000)
    run = lambda *a: subprocess.run([*prefix, *a], check=True, capture_output=True, timeout=120)  # noqa: E731
    run("initdb", "-D", str(d / "data"), "-A", "trust", "-U", "pdmp")
    run("pg_ctl", "-D", str(d / "data"), "-o", f"-k {d} -p {port} -h ''", "-l", str(d / "log"), "-w", "start")
    try:
        run("createdb", "-h", str(d), "-p", port, "-U", "pdmp", "tune")
        yield f"postgresql+psycopg2://pdmp@/tune?host={d}&port={port}"
    finally:
        run("pg_ctl", "-D", str(d / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_on_a_real_postgresql_server_never_train_the_same_epoch(tmp_path, tiny_manifest, postgres_url):
    ctx = multiprocessing.get_context("fork")
    for rep in range(2):
        d = tmp_path / f"rep{rep}"
        plan = _plan(d, tiny_manifest, storage=postgres_url, study_name=f"pg-{rep}", asynchronous=True)
        assert _two_workers_share_the_work(plan, d / "fake", ctx).choice is not None


def test_chosen_json_works_from_any_folder(tmp_path, tiny_manifest, monkeypatch):
    """A relative --profile (and manifest) given where tune ran are stored absolute in chosen.json."""
    from pdmp_cli.specs import TrainSpec, read_spec_file, resolve_spec

    _profile(tmp_path / "profile.json")
    monkeypatch.chdir(tmp_path)
    base = sweep.base_spec("profile.json", dataset="tiny.toml", flags={"runs_root": "runs"})
    plan = tune.make_plan(base, "tune", values={"gamma_p": [1, 5]}, budget=2, min_epochs=2)
    tune.run(plan, trainer=FileTrainer(tmp_path / "fake", {"gamma_p-1": [0.5, 0.6], "gamma_p-5": [0.5, 0.7]}))
    chosen = tmp_path / "tune" / tune.CHOSEN
    monkeypatch.chdir(tmp_path.parent)  # elsewhere
    layer = read_spec_file(chosen)
    assert layer["profile"] == str(tmp_path / "profile.json") and layer["dataset"] == str(tmp_path / "tiny.toml")
    assert "_tune" not in layer and resolve_spec(TrainSpec, layer).gamma_p == 5.0


def test_tune_reaches_optunas_storage_through_public_api_only():
    """The claim, the lease and the stale-claim sweep use Optuna's public storage API (the storage
    pdmp opened, ``get_trial_id_from_study_id_trial_number``), not ``study._storage`` or
    ``trial._trial_id``, which an Optuna release may rename."""
    import inspect
    import re

    src = inspect.getsource(tune)
    assert not re.findall(r"\._storage\b|\._trial_id\b", src)


def test_a_tie_at_the_end_is_broken_the_same_way_whatever_the_order(tmp_path, tiny_manifest):
    """Two candidates that finish with the same best (and the same curve): the choice follows the
    ranking of the rungs (ties by the key), not the order the values were given in."""
    curves = {"gamma_p-2": [0.5, 0.6, 0.7, 0.8], "gamma_p-5": [0.5, 0.6, 0.7, 0.8], "gamma_p-10": [0.1] * 4}
    chosen = []
    for name, order in (("a", [2, 5, 10]), ("b", [5, 2, 10])):
        plan = _plan(tmp_path / name, tiny_manifest, values={"gamma_p": order}, budget=4, min_epochs=4)
        chosen.append(tune.run(plan, trainer=FileTrainer(tmp_path / name / "fake", curves)).choice.candidate.key)
    assert chosen == ["gamma_p-2", "gamma_p-2"]  # "gamma_p-2" < "gamma_p-5": the key decides, as at a rung


class StuckTrainer(FileTrainer):
    """A run that ends 'complete' short of the epochs asked for (its curve runs out)."""

    calls = 0

    def advance(self, cand, seed, epochs):
        self.calls += 1
        assert self.calls < 50, "tune asked the same run again and again (an endless loop)"
        return super().advance(cand, seed, min(epochs, len(self.curves[cand.key])))


def test_a_run_that_stops_short_of_its_target_is_one_line_not_an_endless_loop(tmp_path, tiny_manifest):
    curves = {"gamma_p-2": [0.5, 0.6, 0.7, 0.8], "gamma_p-5": [0.5, 0.6]}  # γp 5's run ends after epoch 2
    plan = _plan(tmp_path, tiny_manifest, values={"gamma_p": [2, 5]}, budget=4, min_epochs=4)
    with pytest.raises(PdmpError, match=r"γp 5: its run .* ended at epoch 2 of the 4 asked for \(complete\)"):
        tune.run(plan, trainer=StuckTrainer(tmp_path / "fake", curves))


def test_a_plan_file_that_is_not_pdmps_is_refused_in_one_line(tmp_path, tiny_manifest):
    plan = _plan(tmp_path, tiny_manifest)
    plan.tune_dir.mkdir(parents=True)
    for text in ("[1, 2]", '{"candidates": [1, 2]}', '"text"'):
        (plan.tune_dir / tune.PLAN_FILE).write_text(text)
        with pytest.raises(PdmpError, match=r"holds the tuning of another dataset \(\?, candidates (\?|1, 2)\.\.\.\); give another --tune-dir"):
            tune.check_tune_dir(plan)


def test_the_tune_folder_follows_the_data_root_wherever_it_comes_from(tmp_path, monkeypatch):
    """One manifest, two data roots given by $PDMP_DATA_ROOT_<NAME> (not --data-root): two
    identities, so the second tune never reuses runs trained on the first's data."""
    m = tmp_path / "m.toml"
    m.write_text(FILES_MANIFEST)
    prof = _profile(tmp_path / "p.json", dataset="m")
    hashes = []
    for root in ("one", "two", "one"):
        monkeypatch.setenv("PDMP_DATA_ROOT_M", str(tmp_path / root))
        hashes.append(tune.dataset_identity(sweep.base_spec(prof, dataset=str(m)))[1])
    assert hashes[0] != hashes[1] and hashes[0] == hashes[2]


def test_a_final_run_of_another_setting_is_never_labelled_with_the_new_choice(tmp_path, tiny_manifest, monkeypatch):
    """The tuned Table I's final run folder is <method>-s<seed>: after a new tuning (--force) that
    chooses another setting, the old complete run must not be kept and labelled with the new one."""
    from pdmp_cli import train

    curves = {"gamma_p-2": [0.5, 0.6], "gamma_p-5": [0.5, 0.9]}
    plan = _plan(tmp_path, tiny_manifest, values={"gamma_p": [2, 5]}, budget=2, min_epochs=2)
    entry = tune.TableEntry("pdmp", plan, tune.run(plan, trainer=FileTrainer(tmp_path / "fake", curves)), base=plan.base)
    assert entry.result.choice.candidate.key == "gamma_p-5"
    trained = []
    monkeypatch.setattr(train, "run", lambda *a, **kw: trained.append(a) or pytest.fail("no training expected"))
    d = tune.final_dir(tmp_path / "t", plan.base, "pdmp", 0)
    d.mkdir(parents=True)
    old = plan.by_key()["gamma_p-2"]
    (d / "spec.json").write_text(json.dumps(plan.spec_for(old, seed=0, run_dir=str(d)).model_dump(mode="json")))
    (d / "summary.json").write_text(json.dumps({"status": "complete"}))
    with pytest.raises(PdmpError, match=r"pdmp-s0 holds a final run of another setting \(gamma_p 2.0, not 5.0\)"):
        tune.train_final(entry, tmp_path / "t", [0], "", lambda s: None)
    assert not (d / tune.TUNED).exists()
    # the same setting: kept, labelled, nothing trained
    spec = plan.spec_for(entry.result.choice.candidate, seed=0, run_dir=str(d)).model_dump(mode="json")
    (d / "spec.json").write_text(json.dumps({**spec, "threads": 1}))
    assert tune.train_final(entry, tmp_path / "t", [0], "", lambda s: None) is None and not trained
    assert json.loads((d / tune.TUNED).read_text())["setting"] == "γp 5"


def test_values_closer_than_six_digits_are_two_candidates_with_two_keys(tmp_path, tiny_manifest):
    """Keys name run folders and index the standings: two values must never share one."""
    plan = _plan(tmp_path, tiny_manifest, flags={"method": "ogm-ge"}, values={"ogm-ge.alpha": [0.1, 0.1000001]})
    keys = [c.key for c in plan.candidates]
    assert len(keys) == 2 and len(set(keys)) == 2, keys
    assert len({c.label for c in plan.candidates}) == 2
    assert _plan(tmp_path / "b", tiny_manifest, values={"gamma_p": [2, 0.5]}).candidates[0].key == "gamma_p-2"  # as before


def test_seeds_scored_on_one_validation_split_do_not_pool_its_samples():
    """Three seeds on the dataset's own validation split score the same 100 clips: the binomial
    standard error is that of 100 samples, not 300; seeds on carved splits of their own pool."""
    def st(sets):
        return tune.Standing({s: tune.Progress([0.8], n_val=100, val_set=v) for s, v in enumerate(sets)})

    assert st(["manifest"] * 3).se(1) == pytest.approx(math.sqrt(0.8 * 0.2 / 100))  # the seeds agree: sd 0
    assert st(["a1", "b2", "c3"]).se(1) == pytest.approx(math.sqrt(0.8 * 0.2 / 300))
    assert st([None] * 3).se(1) == pytest.approx(math.sqrt(0.8 * 0.2 / 300))  # unknown (no split.json): as before


class TakenOverTrainer(FileTrainer):
    """After γp 5's first rung, another worker takes its claim over (as one that found the lease
    stale would: this claim failed, a new one with a fresh heartbeat)."""

    def __init__(self, *a, plan=None, **kw):
        super().__init__(*a, **kw)
        self.plan = plan

    def advance(self, cand, seed, epochs):
        out = super().advance(cand, seed, epochs)
        if cand.key == "gamma_p-5" and epochs == 2:
            import time

            import optuna
            from optuna.distributions import CategoricalDistribution
            from optuna.trial import TrialState

            storage = tune.open_storage(self.plan.storage)
            study = optuna.load_study(study_name=self.plan.study_name, storage=storage)
            sid = storage.get_study_id_from_name(self.plan.study_name)
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(sid, t.number), TrialState.FAIL)
            keys = [c.key for c in self.plan.candidates]
            storage.create_new_trial(sid, template_trial=optuna.trial.create_trial(
                state=TrialState.RUNNING, params={"candidate": "gamma_p-5"},
                distributions={"candidate": CategoricalDistribution(keys)}, user_attrs={"heartbeat": time.time() + 3600},
            ))  # fmt: skip
        return out


def test_a_worker_whose_claim_was_taken_over_stops_training_that_candidate(tmp_path, tiny_manifest):
    plan = _plan(tmp_path, tiny_manifest, values={"gamma_p": [5]}, asynchronous=True)
    trainer = TakenOverTrainer(tmp_path / "fake", CURVES, plan=plan)
    lines = []
    result = tune.run(plan, trainer=trainer, log=lines.append)
    assert max(e for k, _, e, _ in trainer.log() if k == "gamma_p-5") == 2  # not one epoch past the takeover
    assert any("claim was taken over by another worker" in ln for ln in lines), lines
    assert result.pending  # the other worker holds γp 5 now
