"""Mixed precision: the modulation sees unscaled gradients (fp16), skipped fp16 steps, bf16
autocast, the CPU policy. On CPU: torch's GradScaler and fp16/bf16 autocast run there too, so
the loop's order of calls is checked here; speed on a GPU is not."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import make_profile
from typer.testing import CliRunner

from pdmp_cli.errors import PdmpError
from pdmp_cli.methods import build_method
from pdmp_cli.models.multimodal import build_multimodal
from pdmp_cli.profile import Profile
from pdmp_cli.specs import TrainSpec
from pdmp_cli.train import amp, checkpoint, run
from pdmp_cli.signals import GracefulInterrupt
from pdmp_cli.train.loop import train_one_epoch
from pdmp_cli.train.setup import Run, build_model, resume_spec
from pdmp_cli.train.state import EpochStats

def _profile(tmp_path: Path) -> Path:
    return make_profile().save(tmp_path / "p.json")


def _one_step(kind: str, tmp_path: Path):
    """One PDMP step (gamma_p 10) of a fresh seeded model on a fixed batch, in ``kind`` precision."""
    torch.manual_seed(0)
    model = build_multimodal("small", "concat", {"audio": 1, "visual": 3}, 3)
    spec = SimpleNamespace(gamma_p=10.0, profile=str(tmp_path / "p.json"), method_args={}, grad_clip=None)
    method = build_method("pdmp", model, spec, Profile.load(_profile(tmp_path)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(1)
    batch = ({"audio": torch.randn(8, 1, 16, 16, generator=g), "visual": torch.randn(8, 3, 16, 16, generator=g)},
             torch.randint(0, 3, (8,), generator=g))  # fmt: skip
    stats = EpochStats(model.modalities, torch.device("cpu"))
    precision = amp.Precision(kind, torch.device("cpu"))
    seen = {}

    def record(out, labels, epoch, original=method.after_backward):  # the grads the method is given
        seen.update({m: torch.cat([p.grad.flatten() for p in enc.parameters()]).clone() for m, enc in model.encoders.items()})
        return original(out, labels, epoch)

    method.after_backward = record
    with GracefulInterrupt() as stop:
        run = Run(spec, torch.device("cpu"), model, method, opt, precision=precision)
        outcome = train_one_epoch(run, [batch], stats, epoch=0, start_step=0, stop=stop)
    assert outcome is None
    return SimpleNamespace(model=model, means=stats.means(), seen=seen, precision=precision)


def test_fp16_modulation_acts_on_unscaled_gradients(tmp_path):
    fp32, fp16 = _one_step("fp32", tmp_path), _one_step("fp16", tmp_path)
    assert fp16.precision.scaler.get_scale() == 2.0**16  # backward ran on loss x 65536 ...
    for m in ("audio", "visual"):  # ... yet PDMP and the norms saw true-scale gradients
        a, b = fp16.seen[m], fp32.seen[m]
        assert (a - b).norm() / b.norm() < 0.05  # fp16 rounding (measured 0.019 and 0.004); unscaled: 65535
        assert fp16.means["grad_norm_before"][m] == pytest.approx(fp32.means["grad_norm_before"][m], rel=0.02)
        gamma = {"audio": 0.1, "visual": 10.0}[m]
        assert fp16.means["grad_norm_after"][m] == pytest.approx(gamma * fp16.means["grad_norm_before"][m], rel=1e-5)
    # and the step applied those gradients: the weights moved as in fp32
    for (name, a), b in zip(fp16.model.state_dict().items(), fp32.model.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=0.02, atol=1e-3, msg=name)  # lr 0.01 x fp16 rounding


def test_bf16_autocast_on_cpu_trains_and_evaluates_in_fp32(tmp_path, tiny_manifest, monkeypatch):
    from pdmp_cli.train import setup

    dtypes = []

    def hooked(spec, bundle, device):
        model = build_model(spec, bundle, device)
        model.fusion.register_forward_hook(lambda mod, args, out: dtypes.append((mod.training, out.dtype)))
        return model

    monkeypatch.setattr(setup, "build_model", hooked)
    spec = TrainSpec(profile=str(_profile(tmp_path)), dataset=str(tiny_manifest), encoder="small", epochs=1,
                     batch_size=16, lr=0.01, device="cpu", precision="bf16", run_dir=str(tmp_path / "run"))  # fmt: skip
    r = run(spec, quiet=True)
    assert r.status == "complete"
    assert {d for training, d in dtypes if training} == {torch.bfloat16}  # the training forward: autocast
    assert {d for training, d in dtypes if not training} == {torch.float32}  # evaluation: fp32
    m = r.metrics[0]
    assert math.isfinite(m.train_loss) and all(v > 0 for v in m.grad_norm_before.values())
    assert json.loads((tmp_path / "run" / "spec.json").read_text())["precision"] == "bf16"


def test_fp16_skipped_steps_and_grad_scaler_state_survive_resume(tmp_path, tiny_manifest, monkeypatch):
    """A loss scale so large that every fp16 step overflows: the GradScaler skips every step and
    halves the scale each time; the run stays finite and the scale carries over a resume."""

    def huge_scale(kind, device):
        p = amp.Precision(kind, device)  # fp16 on CPU: allowed to the class, refused by amp.resolve
        p.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)
        return p

    monkeypatch.setattr(amp, "resolve", huge_scale)
    spec = TrainSpec(profile=str(_profile(tmp_path)), dataset=str(tiny_manifest), encoder="small", epochs=1,
                     batch_size=16, lr=0.01, device="cpu", precision="fp16", run_dir=str(tmp_path / "run"))  # fmt: skip
    first = run(spec, quiet=True)
    last = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["amp"]["scale"] == 2.0**123  # 4 steps (60 samples / 16), each skipped and halved
    second = run(resume_spec(tmp_path / "run", {"epochs": 2}), resume=True, quiet=True)
    assert checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")["amp"]["scale"] == 2.0**119  # restored, not reset
    assert first.status == second.status == "complete"
    for m in second.metrics:  # skipped steps are left out of the grad-norm means: finite, not inf
        assert math.isfinite(m.train_loss)
        assert m.grad_norm_before == m.grad_norm_after == {"audio": 0.0, "visual": 0.0}
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    # no step was taken: the weights are still the seeded initial ones
    from pdmp_cli.data import load_dataset
    from pdmp_cli.runtime import seed_everything

    seed_everything(0)
    init = build_model(spec, load_dataset(str(tiny_manifest)), torch.device("cpu")).state_dict()
    final = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    for k, v in init.items():
        if "running" not in k and "num_batches" not in k:  # BatchNorm statistics do move in forward
            assert torch.equal(final[k], v), k


def test_precision_policy_on_cpu():
    cpu = torch.device("cpu")
    with pytest.raises(PdmpError) as e:
        amp.resolve("fp16", cpu)
    assert str(e.value) == (
        "precision fp16 needs a CUDA GPU (its loss scaling and speed-up are for GPUs), and the device is cpu; "
        "use --precision bf16 (CPU autocast) or fp32"
    )
    assert e.value.exit_code == 2
    assert amp.resolve("bf16", cpu).dtype is torch.bfloat16 and amp.resolve("bf16", cpu).scaler is None
    assert amp.resolve("fp32", cpu).dtype is None


def test_cli_refuses_fp16_on_cpu_before_writing_anything(tmp_path, tiny_manifest):
    from pdmp_cli.cli.app import app

    args = ["train", "--profile", str(_profile(tmp_path)), "--dataset", str(tiny_manifest), "--device", "cpu",
            "--run-dir", str(tmp_path / "run")]  # fmt: skip
    res = CliRunner().invoke(app, [*args, "--precision", "fp16"])
    assert res.exit_code == 2 and "precision fp16 needs a CUDA GPU" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run").exists()
    res = CliRunner().invoke(app, [*args, "--precision", "fp8"])
    assert res.exit_code == 2
    assert "precision must be one of 'fp32', 'bf16' or 'fp16', got 'fp8'" in res.output
