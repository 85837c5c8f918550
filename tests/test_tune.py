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

from pdmp_cli import sweep, tune
from pdmp_cli.errors import PdmpError
from pdmp_cli.profile import Profile, Provenance

NAN = float("nan")  # in a fixture curve: the loss becomes non-finite in that epoch

# Validation accuracy after each epoch (already increasing, so "best so far" = the value).
# budget 8, first rung 2, eta 2: rungs at epochs 2 and 4. Worked out by hand with Optuna's rule
# (a candidate goes on if its value is >= the k-th best of the n that reached the rung, k = max(1, n // 2)):
#   γp 1  : epoch 2 alone -> on; epoch 4 alone -> on; finishes 8 epochs (0.70)
#   γp 2  : epoch 2 {.50, .40}: k=1, .40 < .50 -> stopped after 2
#   γp 5  : epoch 2 {.50,.40,.60}: k=1 best -> on; epoch 4 {.60,.65}: best -> on; finishes (0.80)
#   γp 10 : epoch 2 {.50,.40,.60,.55}: k=2 -> .55 >= .55 on; epoch 4 {.60,.65,.62}: k=1 -> stopped after 4
#   γp 15 : epoch 2 {.., .58}: n=5, k=2 -> .58 >= .58 on; epoch 3 diverges -> dropped
#   γp 20 : epoch 2 n=6, k=3: 3rd best .55 > .30 -> stopped after 2
CURVES = {
    "gamma_p-1": [0.40, 0.50, 0.55, 0.60, 0.62, 0.64, 0.66, 0.70],
    "gamma_p-2": [0.30, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.90],
    "gamma_p-5": [0.50, 0.60, 0.62, 0.65, 0.70, 0.75, 0.78, 0.80],
    "gamma_p-10": [0.45, 0.55, 0.60, 0.62, 0.64, 0.66, 0.68, 0.95],
    "gamma_p-15": [0.50, 0.58, NAN],
    "gamma_p-20": [0.20, 0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60],
}
EXPECTED = {
    "gamma_p-1": ("complete", 8),
    "gamma_p-2": ("stopped", 2),
    "gamma_p-5": ("complete", 8),
    "gamma_p-10": ("stopped", 4),
    "gamma_p-15": ("dropped", 2),
    "gamma_p-20": ("stopped", 2),
}


class FileTrainer:
    """Stands in for the real trainer: a candidate's progress lives in a file (so a second process
    or a second call sees it), every trained epoch is logged, and one Ctrl-C can be simulated."""

    def __init__(self, root: Path, curves: dict, interrupt: tuple[str, int] | None = None, delay: float = 0.0):
        self.root, self.curves, self.interrupt, self.delay = Path(root), curves, interrupt, delay
        self.root.mkdir(parents=True, exist_ok=True)

    def _state(self, cand) -> dict:
        p = self.root / f"{cand.key}.json"
        return json.loads(p.read_text()) if p.exists() else {"curve": [], "status": None, "message": None}

    def progress(self, cand):
        s = self._state(cand)
        return tune.Progress(s["curve"], s["status"], s["message"], float(len(s["curve"])), str(self.root / cand.key))

    def advance(self, cand, epochs):
        import time

        s = self._state(cand)
        assert s["status"] != "diverged", "a diverged candidate must not be trained again"
        for e in range(len(s["curve"]) + 1, epochs + 1):
            time.sleep(self.delay)
            with open(self.root / "log.txt", "a") as f:
                f.write(f"{cand.key} {e} {os.getpid()}\n")
            v = self.curves[cand.key][e - 1]
            if math.isnan(v):
                s.update(status="diverged", message=f"the loss became non-finite at epoch {e}, step 3")
                break
            s["curve"].append(v)
            if self.interrupt == (cand.key, e):
                self.interrupt = None
                s.update(status="interrupted", message=f"interrupted after epoch {e}")
                break
        else:
            s.update(status="complete", message=None)
        (self.root / f"{cand.key}.json").write_text(json.dumps(s))
        return self.progress(cand)

    def log(self) -> list[tuple[str, int, int]]:
        p = self.root / "log.txt"
        return [(k, int(e), int(pid)) for k, e, pid in (ln.split() for ln in p.read_text().splitlines())] if p.exists() else []


def _profile(path: Path, **update) -> str:
    p = Profile(
        dataset="tiny", modalities=["audio", "visual"], performance_dominant="visual", optimization_dominant="audio",
        optimization_criterion="manual",
        provenance=Provenance(tool_version="test", created="2025-01-01T00:00:00+00:00", source="manual"),
    )  # fmt: skip
    return str(p.model_copy(update=update).save(path))


def _plan(tmp_path, tiny_manifest, profile=None, flags=None, **kw):
    prof = profile or _profile(tmp_path / "profile.json")
    base = sweep.base_spec(prof, dataset=str(tiny_manifest), flags={"runs_root": str(tmp_path / "runs"), **(flags or {})})
    kw.setdefault("values", {"gamma_p": [1, 2, 5, 10, 15, 20]})
    kw.setdefault("budget", 8)
    kw.setdefault("min_epochs", 2)
    return tune.make_plan(base, tmp_path / "tune", **kw)


def _states(result) -> dict:
    return {r.candidate.key: (r.state, len(r.curve)) for r in result.candidates}


def test_successive_halving_keeps_and_drops_the_right_candidates(tmp_path, tiny_manifest):
    plan = _plan(tmp_path, tiny_manifest)
    assert plan.rungs() == [2, 4] and plan.targets() == [2, 4, 8]
    trainer = FileTrainer(tmp_path / "fake", CURVES)
    result = tune.run(plan, trainer=trainer)
    assert _states(result) == EXPECTED
    assert result.choice.candidate.params == {"gamma_p": 5.0} and result.choice.value == 0.80
    assert result.spent_epochs == 8 + 2 + 8 + 4 + 2 + 2 and result.full_epochs == 6 * 8
    dropped = {r.candidate.key: r.note for r in result.candidates}["gamma_p-15"]
    assert dropped == "dropped: diverged (the loss became non-finite at epoch 3, step 3)"
    assert "not in the top 1/2 of the 3 candidates that had reached epoch 4" in {r.candidate.key: r.note for r in result.candidates}["gamma_p-10"]
    # the spec file pdmp train --spec takes: the choice for the whole run
    chosen = json.loads((plan.tune_dir / tune.CHOSEN).read_text())
    assert chosen["gamma_p"] == 5.0 and chosen["epochs"] == plan.base.epochs and "run_dir" not in chosen
    summary = json.loads((plan.tune_dir / tune.SUMMARY).read_text())
    assert summary["choice"] == "gamma_p-5" and summary["spent_epochs"] == 26
    # every epoch trained once; a second call trains nothing and gives the same answer
    assert len(trainer.log()) == len(set((k, e) for k, e, _ in trainer.log())) == 27  # + the diverging epoch 3
    again = tune.run(plan, trainer=trainer)
    assert len(trainer.log()) == 27 and _states(again) == EXPECTED


def test_resume_after_interrupt_repeats_no_epoch(tmp_path, tiny_manifest):
    plan = _plan(tmp_path, tiny_manifest)
    trainer = FileTrainer(tmp_path / "fake", CURVES, interrupt=("gamma_p-5", 6))
    first = tune.run(plan, trainer=trainer)
    assert first.stopped.startswith("interrupted after epoch 6") and first.choice is None
    assert not (plan.tune_dir / tune.CHOSEN).exists()
    assert {r.candidate.key: r.state for r in first.candidates}["gamma_p-5"] == "interrupted"
    second = tune.run(plan, trainer=trainer)  # the same call continues
    assert second.stopped is None and _states(second) == EXPECTED
    assert second.choice.candidate.key == "gamma_p-5"
    log = [(k, e) for k, e, _ in trainer.log()]
    assert len(log) == len(set(log)) == 27  # the same epochs as without the interrupt, each once


def _worker(plan, root, delay):
    tune.run(plan, trainer=FileTrainer(root, CURVES, delay=delay))


def test_two_processes_share_one_sqlite_storage(tmp_path, tiny_manifest):
    plan = _plan(tmp_path, tiny_manifest)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(plan, tmp_path / "fake", 0.05)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = FileTrainer(tmp_path / "fake", CURVES).log()
    assert len({pid for _, _, pid in log}) == 2  # both worked
    assert len({(k, e) for k, e, _ in log}) == len(log)  # no epoch twice, no candidate in two workers
    for key in CURVES:
        assert len({pid for k, _, pid in log if k == key}) == 1
    # the study is settled and the last worker wrote the choice: any later call reads it
    result = tune.run(plan, trainer=FileTrainer(tmp_path / "fake", CURVES))
    assert all(r.state in ("complete", "stopped", "dropped") for r in result.candidates)
    assert json.loads((plan.tune_dir / tune.SUMMARY).read_text())["choice"] == result.choice.candidate.key


class DyingTrainer(FileTrainer):
    """A worker killed (a preempted node) in the middle of a candidate: no Ctrl-C, no tell."""

    def advance(self, cand, epochs):
        if cand.key == "gamma_p-5" and epochs == 4:
            super().advance(cand, 3)  # epoch 3 done and saved, then the process dies in epoch 4
            os._exit(1)
        return super().advance(cand, epochs)


def test_a_dead_workers_candidate_is_resumed_after_the_heartbeat_grace(tmp_path, tiny_manifest, monkeypatch):
    import time

    monkeypatch.setattr(tune, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(tune, "GRACE_SECONDS", 2)
    plan = _plan(tmp_path, tiny_manifest)
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=lambda: tune.run(plan, trainer=DyingTrainer(tmp_path / "fake", CURVES)))
    p.start()
    p.join(60)
    assert p.exitcode == 1  # died holding γp 5 (its trial still RUNNING in the storage)
    time.sleep(3)  # past the grace period: the next worker fails that trial and takes γp 5 over
    trainer = FileTrainer(tmp_path / "fake", CURVES)
    result = tune.run(plan, trainer=trainer)
    assert _states(result) == EXPECTED and result.choice.candidate.key == "gamma_p-5"
    log = [(k, e) for k, e, _ in trainer.log()]
    assert len(log) == len(set(log)) == 27  # γp 5 went on from epoch 4: nothing trained twice


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
    plan = _plan(tmp_path, tiny_manifest, values={"ogm-ge.alpha": [0.1, 0.8]})
    specs = [plan.spec_for(c) for c in plan.candidates]
    assert [s.method_args["ogm-ge"]["alpha"] for s in specs] == [0.1, 0.8]
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
    # the first candidate's run was continued past the rung (resumed), not restarted
    first = result.candidates[0]
    assert first.state == "complete" and json.loads((Path(first.run_dir) / "summary.json").read_text())["epochs_done"] == 2
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
    assert "γp 5 * │ complete │ 8 │ 0.8000 (8) │ 0.50 0.60 0.62 0.65 0.70" in out  # the curve (wraps at 80 columns)
    assert "γp 15: dropped: diverged (the loss became non-finite at epoch 3, step 3)" in out
    assert "choice: γp 5: the best validation accuracy, 0.8000 at epoch 8 of 8; next γp 1 0.7000 (complete)" in out
    assert "compute: 26 of 48 epochs (54% of a full sweep of 6 candidates x 8 epochs)" in out
    spec = tmp_path / "t" / "tiny-pdmp-s0" / "chosen.json"
    assert f"pdmp train --spec {spec}" in out and json.loads(spec.read_text())["gamma_p"] == 5.0
    # bad input: one line, exit 2, nothing trained
    r = CliRunner().invoke(app, ["tune", "--profile", prof, "--dataset", str(tiny_manifest), "--values", "ogm-ge.alpha"])
    assert r.exit_code == 2 and "--values needs FIELD=v1,v2" in r.output
    r = CliRunner().invoke(app, ["tune", "--dataset", str(tiny_manifest)])
    assert r.exit_code == 2 and "--profile is required" in r.output
