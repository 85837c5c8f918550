"""--lr-schedule: the lr of every epoch against hand-computed values, and across a resume."""

import json
import math

import pytest
from conftest import TINY_SYNTHETIC

from pdmp_cli.errors import PdmpError
from pdmp_cli.specs import TrainSpec, resolve_spec
from pdmp_cli.train import run
from pdmp_cli.train.setup import resume_spec
from conftest import make_profile as _profile


@pytest.fixture
def spec(tmp_path):
    manifest = tmp_path / "tiny.toml"
    manifest.write_text(TINY_SYNTHETIC)
    profile = _profile().save(tmp_path / "tiny-profile.json")

    def make(name, **kw) -> TrainSpec:
        base = dict(profile=str(profile), dataset=str(manifest), encoder="small", batch_size=16, lr=0.1,
                    run_dir=str(tmp_path / name))  # fmt: skip
        return TrainSpec(**{**base, **kw})

    return make


def lrs(run_dir) -> list[float]:
    return [json.loads(line)["lr"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_default_is_the_papers_constant_lr():
    assert TrainSpec(profile="p.json").lr_schedule == "none"


def test_step_schedule_per_epoch_and_across_a_resume(spec):
    # StepLR(step_size=2, gamma=0.5) from 0.1: epochs 1..5 train with 0.1, 0.1, 0.05, 0.05, 0.025
    expected = [0.1, 0.1, 0.05, 0.05, 0.025]
    part = run(spec("part", lr_schedule="step", lr_step_size=2, lr_step_gamma=0.5, epochs=3), quiet=True)
    assert lrs(part.run_dir) == pytest.approx(expected[:3], rel=1e-12)
    resumed = run(resume_spec(part.run_dir, {"epochs": 5}), resume=True, quiet=True)  # the drop after epoch 4 too
    assert lrs(resumed.run_dir) == pytest.approx(expected, rel=1e-12)


def test_cosine_keeps_its_length_across_a_resume_that_adds_epochs(spec):
    # cosine from 0.1 to 0.01 over the run's first 3 epochs (fixed when it started):
    # lr_e = 0.01 + 0.09 * (1 + cos(pi e / 3)) / 2 -> 0.1, 0.0775, 0.0325; then it stays at 0.01
    s = spec("cos", lr_schedule="cosine", lr_min=0.01, epochs=3)
    assert s.lr_cosine_epochs == 3
    first = run(s, quiet=True)
    assert json.loads((first.run_dir / "spec.json").read_text())["lr_cosine_epochs"] == 3
    resumed = run(resume_spec(first.run_dir, {"epochs": 5}), resume=True, quiet=True)
    hand = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    assert hand == pytest.approx([0.1, 0.0775, 0.0325])
    assert lrs(resumed.run_dir) == pytest.approx(hand + [0.01, 0.01], rel=1e-12)


def test_schedule_settings_are_checked():
    with pytest.raises(PdmpError, match=r"lr_schedule must be one of"):
        resolve_spec(TrainSpec, {"profile": "p.json", "lr_schedule": "linear"})
    with pytest.raises(PdmpError, match=r"lr_min \(0.5\) must be < lr \(0.1\)"):
        resolve_spec(TrainSpec, {"profile": "p.json", "lr": 0.1, "lr_schedule": "cosine", "lr_min": 0.5})
