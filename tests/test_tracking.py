"""--tensorboard: event files beside metrics.jsonl carry every scalar of it, per epoch."""

import json
import sys

import pytest
from conftest import TINY_SYNTHETIC
from typer.testing import CliRunner

from pdmp_cli.cli.app import app
from pdmp_cli.errors import PdmpError
from pdmp_cli.specs import TrainSpec
from pdmp_cli.tracking import MISSING, scalars
from pdmp_cli.train import run
from conftest import make_profile as _profile


def test_scalars_flatten_a_metrics_record():
    rec = {"epoch": 3, "train_loss": 1.5, "w": None, "lr": 0.01, "gamma": {"audio": 0.1, "visual": 10.0},
           "branch_accuracy": {"audio": 0.5}, "note": "x", "flag": True, "bad": float("nan")}  # fmt: skip
    assert scalars(rec) == {"train_loss": 1.5, "lr": 0.01, "gamma/audio": 0.1, "gamma/visual": 10.0,
                            "branch_accuracy/audio": 0.5}  # fmt: skip


@pytest.fixture
def spec(tmp_path):
    manifest = tmp_path / "tiny.toml"
    manifest.write_text(TINY_SYNTHETIC)
    profile = _profile().save(tmp_path / "p.json")
    return TrainSpec(profile=str(profile), dataset=str(manifest), encoder="small", epochs=2, batch_size=16, lr=0.01,
                     tensorboard=True, run_dir=str(tmp_path / "run"))  # fmt: skip


def test_event_file_round_trip(spec):
    pytest.importorskip("tensorboard")  # the test extra installs it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run(spec, quiet=True)
    events = list(result.run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(result.run_dir))
    acc.Reload()
    logged = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    expected: dict[str, dict[int, float]] = {}
    for rec in records:
        for tag, v in scalars(rec).items():
            expected.setdefault(tag, {})[rec["epoch"]] = v
    for must in ("test_accuracy", "test_macro_f1", "lr", "train_loss", "branch_accuracy/audio", "gamma/visual",
                 "grad_norm_before/audio", "grad_norm_after/visual"):  # fmt: skip
        assert must in expected
    assert logged.keys() == expected.keys()
    for tag, per_epoch in expected.items():
        assert logged[tag] == pytest.approx(per_epoch, rel=1e-6), tag  # float32 in the event file


def test_missing_tensorboard_is_one_line_and_writes_nothing(spec, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    with pytest.raises(PdmpError, match="pip install 'pdmp\\[tensorboard\\]'") as e:
        run(spec, quiet=True)
    assert str(e.value) == MISSING
    assert not (tmp_path / "run").exists()
    r = CliRunner().invoke(app, ["train", "--profile", spec.profile, "--dataset", spec.dataset, "--encoder", "small",
                                 "--epochs", "1", "--run-dir", str(tmp_path / "run"), "--tensorboard"])  # fmt: skip
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [f"error: {MISSING}"]
    assert not (tmp_path / "run").exists()
