"""pdmp sweep as a library: the grid, skipping what exists (counted with a stand-in for
pdmp_cli.train.run), resuming what was interrupted, and one tiny real sweep run twice."""

from __future__ import annotations

from pathlib import Path

import re

import pytest

import pdmp_cli.train
from conftest import FakeTrain
from conftest import profile_file as _profile
from pdmp_cli import rundir, sweep
from pdmp_cli.errors import PdmpError
from pdmp_cli.fsutil import write_json
from pdmp_cli.models.fusions import FUSIONS


@pytest.fixture
def fake(monkeypatch):
    f = FakeTrain()
    monkeypatch.setattr(pdmp_cli.train, "run", f)
    return f


@pytest.fixture
def base(tmp_path, tiny_manifest):
    prof = _profile(tmp_path / "profile.json")
    return sweep.base_spec(prof, dataset=str(tiny_manifest), flags={"runs_root": str(tmp_path / "runs")})


def test_base_spec_layers_manifest_defaults_and_flags(base, tiny_manifest, tmp_path):
    assert (base.dataset, base.epochs, base.batch_size, base.encoder, base.lr) == (str(tiny_manifest), 2, 16, "small", 0.01)
    s = sweep.base_spec(base.profile, dataset=str(tiny_manifest), file_layer={"epochs": 5}, flags={"epochs": 3, "lr": None})
    assert (s.epochs, s.lr) == (3, 0.01)  # flags win over the file, None means "not given"
    with pytest.raises(PdmpError, match="not a built-in dataset name; pass --dataset"):
        sweep.base_spec(base.profile)  # the profile's dataset "tiny" is no built-in name


def test_grid_runs_methods_without_gamma_p_once_per_fusion_and_seed(base):
    specs = sweep.grid(base, gamma_p=[1, 5, 10], seeds=[0, 1], fusions=["concat", "sum"], methods=["pdmp", "vanilla"])
    pd = [(s.fusion, s.gamma_p, s.seed) for s in specs if s.method == "pdmp"]
    van = [(s.fusion, s.seed) for s in specs if s.method == "vanilla"]
    assert len(pd) == 12 and len(set(pd)) == 12
    assert van == [("concat", 0), ("concat", 1), ("sum", 0), ("sum", 1)]
    assert all(s.runs_root == base.runs_root and s.run_dir is None for s in specs)
    # defaults: the base spec's single values
    (only,) = sweep.grid(base)
    assert (only.method, only.fusion, only.gamma_p, only.seed) == ("pdmp", "concat", 10.0, 0)


def test_bad_grid_values_fail_before_anything_trains(base, fake):
    with pytest.raises(PdmpError, match=re.escape(f"fusion: unknown fusion; choose one of {sorted(FUSIONS.names())}")) as e:
        sweep.run(base, fusions=["concat", "nope"], quiet=True)
    assert e.value.exit_code == 2
    with pytest.raises(PdmpError, match="gamma_p must be > 0, got -1"):
        sweep.run(base, gamma_p=[5, -1], quiet=True)
    with pytest.raises(PdmpError, match="method: unknown method; choose one of"):
        sweep.run(base, methods=["pdmp", "nope"], quiet=True)
    assert fake.calls == []


def test_parse_list():
    assert sweep.parse_list("1,5, 10,5", float, "--gamma-p") == [1.0, 5.0, 10.0]
    assert sweep.parse_list("0,1,2", int, "--seeds") == [0, 1, 2]
    assert sweep.parse_list(None, int, "--seeds") is None
    with pytest.raises(PdmpError, match="--gamma-p must be comma-separated numbers, got 'a,5'"):
        sweep.parse_list("a,5", float, "--gamma-p")
    with pytest.raises(PdmpError, match="--seeds must be comma-separated integers, got '1.5'"):
        sweep.parse_list("1.5", int, "--seeds")
    with pytest.raises(PdmpError, match="--fusion is empty"):
        sweep.parse_list(",", str, "--fusion")


def test_sweep_skips_configurations_already_present(base, fake):
    grid = dict(gamma_p=[1, 5], seeds=[0, 1], methods=["pdmp", "vanilla"])
    first = sweep.run(base, **grid, quiet=True)
    assert (len(fake.calls), first.trained, first.skipped) == (6, 6, 0)
    again = sweep.run(base, **grid, quiet=True)
    assert (len(fake.calls), again.trained, again.skipped) == (6, 0, 6)
    assert sorted(o.run_dir for o in again.outcomes) == sorted(o.run_dir for o in first.outcomes)
    wider = sweep.run(base, gamma_p=[1, 5, 10], seeds=[0, 1], methods=["pdmp", "vanilla"], quiet=True)
    assert (len(fake.calls), wider.trained, wider.skipped) == (8, 2, 6)
    assert sorted((s.gamma_p, s.seed) for s, _ in fake.calls[6:]) == [(10.0, 0), (10.0, 1)]
    # the sweep's report: every configuration, over both seeds
    rows = {(w.method, w.gamma_p): w for w in wider.report.rows}
    assert set(rows) == {("vanilla", None), ("pdmp", 1.0), ("pdmp", 5.0), ("pdmp", 10.0)}
    assert all(w.n == 2 for w in rows.values())
    assert rows[("pdmp", 10.0)].stats["accuracy"].mean == pytest.approx(0.6005)


def test_a_changed_setting_or_profile_is_not_skipped(base, fake, tmp_path):
    sweep.run(base, quiet=True)
    assert len(fake.calls) == 1
    longer = base.model_copy(update={"epochs": 3})
    assert sweep.run(longer, quiet=True).trained == 1
    # the same ranking in another file (another path, another creation date) is the same run
    same = _profile(tmp_path / "elsewhere.json")
    assert sweep.run(base.model_copy(update={"profile": same}), quiet=True).skipped == 1
    flipped = _profile(tmp_path / "flipped.json", m_p="audio", m_o="audio")
    assert sweep.run(base.model_copy(update={"profile": flipped}), quiet=True).trained == 1
    assert len(fake.calls) == 3


def test_a_run_written_before_a_spec_field_existed_is_still_found(base, fake):
    import json

    (o,) = sweep.run(base, quiet=True).outcomes
    spec = json.loads((o.run_dir / rundir.SPEC).read_text())
    del spec["skip_bad"]  # an older pdmp did not write it; its default is what that run did
    write_json(o.run_dir / rundir.SPEC, spec)
    assert sweep.run(base, quiet=True).skipped == 1 and len(fake.calls) == 1


def test_interrupted_runs_are_resumed_and_stop_the_sweep(base, fake):
    fake.status = "interrupted"
    first = sweep.run(base, seeds=[0, 1], quiet=True)
    assert len(fake.calls) == 1 and first.stopped.startswith("interrupted at epoch 1, step 2")
    assert "give the same command again to continue the sweep" in first.stopped
    fake.status = "complete"
    again = sweep.run(base, seeds=[0, 1], quiet=True)
    (spec, resume), (spec2, resume2) = fake.calls[1:]
    assert resume is True and Path(spec.run_dir) == first.outcomes[0].run_dir
    assert resume2 is False and spec2.seed == 1
    assert [o.action for o in again.outcomes] == ["resumed", "trained"] and again.stopped is None


def test_diverged_runs_are_a_result_and_not_repeated(base, fake):
    fake.status = "diverged"
    first = sweep.run(base, gamma_p=[50, 60], quiet=True)
    assert first.trained == 2 and first.stopped is None  # a diverged run does not stop the sweep
    assert sweep.run(base, gamma_p=[50, 60], quiet=True).skipped == 2
    assert len(fake.calls) == 2


def test_a_real_tiny_sweep_skips_its_own_runs(base):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = base.model_copy(update={"epochs": 1})
        first = sweep.run(spec, gamma_p=[2.0], methods=["vanilla", "pdmp"], quiet=True)
        assert [(o.action, o.status) for o in first.outcomes] == [("trained", "complete")] * 2
        again = sweep.run(spec, gamma_p=[2.0], methods=["vanilla", "pdmp"], quiet=True)
        assert [o.action for o in again.outcomes] == ["skipped", "skipped"]
        assert [o.run_dir for o in again.outcomes] == [o.run_dir for o in first.outcomes]
        rows = {w.method: w for w in again.report.rows}
        assert rows["pdmp"].gamma == {"audio": 0.5, "visual": 2.0}  # Eq. 12: m_p visual != m_o audio
    finally:
        torch.set_num_threads(threads)
