"""``pdmp analyze --jobs N``: each modality in its own spawned process, the same curves as with --jobs 1."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from pdmp_cli import analysis
from pdmp_cli.errors import PdmpError
from pdmp_cli.specs import AnalyzeSpec, dataset_defaults, resolve_spec


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # one torch thread (conftest): the sequential run and each worker alike


def _spec(manifest, tmp_path, **kw) -> AnalyzeSpec:
    base = {"dataset": str(manifest), "device": "cpu", "out": str(tmp_path / "p.json"), "cache": False}
    return resolve_spec(AnalyzeSpec, dataset_defaults(str(manifest), AnalyzeSpec), base, kw)


def test_parallel_curves_equal_the_sequential_ones(tiny_manifest, tmp_path, monkeypatch):
    # fork spares the workers re-importing torch (seconds on this shared 2-core machine); one CPU
    # thread and no CUDA make it safe here. The failure test below runs the default, spawn.
    from pdmp_cli import pool

    monkeypatch.setattr(pool, "START_METHOD", "fork")
    steps0 = analysis.training_steps.value
    [seq] = analysis.run(_spec(tiny_manifest, tmp_path, epochs=2, early_epochs=1, jobs=1), progress=False)
    steps_seq = analysis.training_steps.value - steps0
    [par] = analysis.run(_spec(tiny_manifest, tmp_path, epochs=2, early_epochs=1, jobs=2), progress=False)
    steps_par = analysis.training_steps.value - steps0 - steps_seq
    for m in ("audio", "visual"):
        assert par.profile.results[m].curve == seq.profile.results[m].curve
        assert len(par.profile.results[m].curve) == 2
    assert (par.profile.performance_dominant, par.profile.optimization_dominant) == (
        seq.profile.performance_dominant, seq.profile.optimization_dominant,
    )  # fmt: skip
    # the workers' steps are counted: 2 models x 2 epochs x 60/16, and the probe's (1 epoch, in this process)
    assert steps_par == steps_seq == 2 * 2 * 4 + 4
    assert par.cache_key == seq.cache_key  # one measurement, one cache entry
    assert par.profile.settings == seq.profile.settings and "jobs" not in par.profile.settings
    assert par.profile.settings["threads"] == 1  # the small encoder's default, recorded


def test_a_failing_worker_names_its_modality(tiny_manifest, tmp_path):
    from pdmp_cli.data import load_dataset

    from pdmp_cli import pool

    assert pool.START_METHOD == "spawn"  # the library's default: a fresh interpreter per worker
    spec = _spec(tiny_manifest, tmp_path)
    bundle = load_dataset(str(tiny_manifest))
    tiny_manifest.unlink()  # the workers load the dataset themselves: now they cannot
    only_visual = SimpleNamespace(modalities=["visual"], train=bundle.train)  # one worker process suffices
    with pytest.raises(PdmpError) as e:
        analysis.train_unimodal_parallel(only_visual, list(range(len(bundle.train))), spec, torch.device("cpu"))
    msg = str(e.value)
    assert msg.startswith("training the visual model in its own process failed: ")
    # a PdmpError of the worker arrives whole, with its own remedy; "--jobs 1" is advised only for an
    # unexpected exception (issue 27: advice that is true)
    assert str(tiny_manifest) in msg and msg.endswith("; give a dataset name or a path to a .toml manifest")


def test_one_gpu_per_modality_where_there_are_several(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert analysis.worker_devices(["rgb", "depth", "ir"], cuda) == ["cuda:0", "cuda:1", "cuda:0"]
    assert analysis.worker_devices(["audio", "visual"], cpu) == ["cpu", "cpu"]


def test_cli_jobs_and_threads_flags_reach_the_spec(monkeypatch):
    from pdmp_cli.cli.app import app

    seen = []
    monkeypatch.setattr(analysis, "run", lambda spec, **kw: seen.append(spec) or [])
    assert CliRunner().invoke(app, ["analyze", "--dataset", "synthetic", "--jobs", "2", "--threads", "3"]).exit_code == 0
    assert CliRunner().invoke(app, ["analyze", "--dataset", "synthetic"]).exit_code == 0
    assert [(s.jobs, s.threads) for s in seen] == [(2, 3), (None, None)]
