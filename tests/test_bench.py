"""The benchmark (``make bench``) at its tiny size: every figure runs end to end and lands in
well-formed JSON. Nothing here asserts a time: timings belong to the benchmark, not the suite."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import run as bench  # noqa: E402
from benchmarks.common import finite_positive, interleaved  # noqa: E402
from benchmarks.table import rows  # noqa: E402


def _numbers(obj, path=""):
    """(path, value) of every number in a JSON tree (booleans are not numbers here)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}" if path else k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    import torch

    threads = torch.get_num_threads()
    code = bench.main(["--tiny", "--out", str(out)])
    return code, out, threads


@pytest.mark.slow  # the whole tiny benchmark: a release check (make test-slow)
def test_tiny_benchmark_writes_every_figure(tiny):
    code, out, _ = tiny
    data = json.loads(out.read_text())
    assert code == 0, data.get("errors")
    assert "errors" not in data
    assert data["schema"] == bench.SCHEMA and data["mode"] == "tiny"
    # no demo in --tiny; the GPU throughput figure runs its code on the CPU
    assert set(data["figures"]) == {"step_time", "method_cost", "features_cache", "packed_loader", "analyze_cache",
                                    "peak_memory", "throughput"}
    pk = data["figures"]["packed_loader"]
    assert pk["read_ratio"] == pytest.approx(pk["ms_per_sample"]["packed_read"] / pk["ms_per_sample"]["today"])
    assert pk["cpu_path_ratio"] == pytest.approx(pk["ms_per_sample"]["packed_cpu"] / pk["ms_per_sample"]["today"])
    m = data["machine"]
    assert m["torch_threads"] == 1 and m["cpu_count"] >= 1 and m["python"].count(".") == 2
    assert len(data["load_average_start"]) == 3 and len(data["load_average_end"]) == 3

    f = data["figures"]
    s = f["step_time"]["small"]
    assert set(s) >= {"ratio", "target", "vanilla_step_ms", "pdmp_step_ms", "pdmp_hook_ms", "config"}
    assert s["ratio"] == pytest.approx(s["pdmp_step_ms"] / s["vanilla_step_ms"])
    assert s["target"] == 1.02 and s["config"]["batch_size"] == 16 and s["config"]["encoder"] == "small"

    fc = f["features_cache"]
    for key in ("data_epoch", "train_epoch"):
        e = fc[key]
        assert e["ratio"] == pytest.approx(e["cached_s"] / e["recompute_s"])
    assert fc["target"] == 0.5
    assert fc["config"]["train_clips"] == 8 and fc["config"]["test_clips"] == 4
    assert fc["config"]["input_shapes"] == {"audio": [1, 33, 63], "visual": [3, 32, 32]}

    a = f["analyze_cache"]
    assert a["first_cache_hit"] is False and a["second_cache_hit"] is True  # the second run trained nothing
    assert a["ratio"] == pytest.approx(a["second_s"] / a["first_s"]) and a["target_s"] == 3.0

    tp = f["throughput"]
    assert set(tp["samples_per_s"]) == {"vanilla/fp32", "vanilla/bf16", "pdmp/fp32", "pdmp/bf16"}
    assert tp["config"]["device"] == "cpu" and tp["config"]["autocast"] == "bf16"
    sps = tp["samples_per_s"]
    assert tp["pdmp_over_vanilla"]["bf16"] == pytest.approx(sps["pdmp/bf16"] / sps["vanilla/bf16"])
    assert tp["autocast_speedup"]["pdmp"] == pytest.approx(sps["pdmp/bf16"] / sps["pdmp/fp32"])

    pm = f["peak_memory"]
    for key, batch in (("synthetic", 16), ("cremad_layout", 8)):
        assert pm[key]["epochs_done"] == 1
        assert pm[key]["config"]["batch_size"] == batch and pm[key]["config"]["encoder"] == "small"
        assert pm[key]["peak_rss_mb"] > 50  # a Python process with torch loaded, in MiB (not KiB or bytes)


@pytest.mark.slow  # the whole tiny benchmark: a release check (make test-slow)
def test_every_number_is_finite_and_positive(tiny):
    _, out, _ = tiny
    data = json.loads(out.read_text())
    numbers = list(_numbers(data["figures"]))
    assert len(numbers) > 30
    # measurements must be > 0; settings (config), spreads (equal timings) and load averages
    # (an idle machine) may be 0
    may_be_zero = ("config.", "_spread", "load_average")
    bad = [(p, v) for p, v in numbers
           if not (math.isfinite(v) and (v >= 0 if any(k in p for k in may_be_zero) else v > 0))]
    assert bad == []


@pytest.mark.slow  # the whole tiny benchmark: a release check (make test-slow)
def test_table_has_one_row_per_measured_line(tiny):
    _, out, _ = tiny
    data = json.loads(out.read_text())
    lines = rows(data)
    cost = [r for r in lines if r[0].startswith("method cost ")]  # one per method: test_method_cost_*
    lines = [r for r in lines if r not in cost]
    assert len(cost) == len(data["figures"]["method_cost"]["methods"])
    assert [r[0].split(" (")[0] for r in lines] == [
        "step time PDMP ÷ vanilla",
        "epoch with features cache ÷ decoding every epoch",
        "epoch with features cache ÷ decoding every epoch",
        "loader per sample, packed store ÷ today's",
        "loader per sample, packed store ÷ today's",
        "second identical `pdmp analyze`",
        "peak RSS of `pdmp train`",
        "peak RSS of `pdmp train`",
        "samples/s PDMP ÷ vanilla",
        "samples/s PDMP ÷ vanilla",
        "samples/s bf16 autocast ÷ fp32",
        "samples/s bf16 autocast ÷ fp32",
    ]
    verdicts = [r[3] for r in lines]
    targeted = verdicts[:2] + verdicts[3:6] + verdicts[8:10]
    assert all(v in ("[green]met[/]", "[red]missed[/]") for v in targeted)
    # CPU training epoch, memory and autocast speed-up: figures without a target
    assert verdicts[2] == "" and verdicts[6:8] == ["", ""] and verdicts[10:] == ["", ""]


@pytest.mark.slow  # the whole tiny benchmark: a release check (make test-slow)
def test_method_cost_has_every_method_against_vanilla(tiny):
    from benchmarks.method_cost import rows as method_rows
    from pdmp_cli.methods import METHODS

    _, out, _ = tiny
    mc = json.loads(out.read_text())["figures"]["method_cost"]
    assert sorted(mc["methods"]) == METHODS.names()  # the tiny data has two modalities: every method runs
    order = list(mc["methods"])
    assert order[0] == "vanilla" and order[-1] == "pdmp"  # the comparison order of the method classes
    v = mc["methods"]["vanilla"]["step_ms"]
    for m in mc["methods"].values():
        assert m["step_ratio"] == pytest.approx(m["step_ms"] / v)
    assert mc["methods"]["vanilla"]["step_ratio"] == 1.0
    # peak memory lines (child RSS per method in `make bench`; not measured at the tiny size)
    mc = {"config": {**mc["config"], "memory": "child RSS"},
          "methods": {"vanilla": {**mc["methods"]["vanilla"], "peak_mb": 400.0, "peak_ratio": 1.0},
                      "mla": {**mc["methods"]["mla"], "peak_mb": 420.0, "peak_ratio": 1.05}}}  # fmt: skip
    assert [r[0].split(" (")[0] for r in method_rows(mc)] == ["method cost vanilla ÷ vanilla", "method cost mla ÷ vanilla"]
    assert "peak 420 MiB (1.05 x vanilla, child RSS)" in method_rows(mc)[1][4]


def test_without_cuda_the_gpu_figure_says_it_was_skipped(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "b.json"
    assert bench.main(["--only", "throughput", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["figures"] == {"throughput": {"skipped": "no CUDA device on this machine"}}
    assert [r[1] for r in rows(data)] == ["skipped"]


@pytest.mark.slow  # the whole tiny benchmark: a release check (make test-slow)
def test_main_leaves_the_process_as_it_was(tiny):
    import os

    import torch

    _, _, threads = tiny
    assert torch.get_num_threads() == threads
    assert "pdmp-bench-" not in os.environ.get("PDMP_CACHE_DIR", "")


def test_interleaved_alternates_the_order():
    calls = []
    interleaved({"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}, 4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]


def test_finite_positive():
    assert finite_positive(0.5) and finite_positive(3)
    assert not finite_positive(0.0) and not finite_positive(-1)
    assert not finite_positive(float("nan")) and not finite_positive(float("inf")) and not finite_positive(True)


def test_a_failing_figure_is_reported_not_hidden(tmp_path, monkeypatch):
    from benchmarks import step_time

    def broken(*a, **k):
        raise RuntimeError("no such dataset")

    monkeypatch.setattr(step_time, "measure", broken)
    out = tmp_path / "b.json"
    assert bench.main(["--tiny", "--only", "step_time", "--out", str(out)]) == 1
    data = json.loads(out.read_text())
    assert data["errors"] == {"step_time": "RuntimeError: no such dataset"}
    assert data["figures"] == {}


# ---------------------------------------------------------------------- the hot-path fixes


def test_channels_last_by_default_with_an_opt_out(monkeypatch):
    import torch

    from pdmp_cli.models.multimodal import build_multimodal
    from pdmp_cli.runtime import channels_last, place_input, place_model, to_device

    cpu = torch.device("cpu")
    monkeypatch.delenv("PDMP_CHANNELS_LAST", raising=False)
    assert channels_last(cpu) and channels_last("cuda")  # on by default: the faster layout (issue 15)
    model = place_model(build_multimodal("small", "concat", {"audio": 1, "visual": 3}, 4), cpu)
    conv = model.encoders["visual"].backbone[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = to_device({"visual": torch.randn(2, 3, 8, 8), "clip": torch.randn(2, 3, 2, 8, 8)}, cpu)
    assert x["visual"].is_contiguous(memory_format=torch.channels_last) and not x["visual"].is_contiguous()
    assert x["clip"].is_contiguous()  # 5-D frame stacks keep their layout (the encoder folds them)
    assert not channels_last("meta") and channels_last(cpu)

    monkeypatch.setenv("PDMP_CHANNELS_LAST", "0")
    assert not channels_last(cpu)
    assert place_model(build_multimodal("small", "concat", {"audio": 1, "visual": 3}, 4), cpu).encoders[
        "visual"].backbone[0][0].weight.is_contiguous()
    assert place_input(torch.randn(2, 3, 8, 8), cpu).is_contiguous()


def test_channels_last_trains_the_same_model_up_to_rounding(monkeypatch):
    """Same initial weights and batch: the loss, the gradients and the updated weights agree."""
    import torch
    import torch.nn.functional as F

    from pdmp_cli.models.multimodal import build_multimodal
    from pdmp_cli.runtime import place_model, to_device

    g = torch.Generator().manual_seed(0)
    batch = {"audio": torch.randn(8, 1, 20, 16, generator=g), "visual": torch.randn(8, 3, 16, 16, generator=g)}
    y = torch.randint(0, 4, (8,), generator=g)
    results = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("PDMP_CHANNELS_LAST", flag)
        torch.manual_seed(0)
        model = place_model(build_multimodal("small", "concat", {"audio": 1, "visual": 3}, 4), torch.device("cpu"))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(2):
            loss = F.cross_entropy(model(to_device(batch, torch.device("cpu"))).logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        results[flag] = (loss.item(), {k: v.detach().contiguous() for k, v in model.state_dict().items()})
    (l0, w0), (l1, w1) = results["0"], results["1"]
    assert l1 == pytest.approx(l0, rel=1e-4)
    for k in w0:
        torch.testing.assert_close(w1[k], w0[k], rtol=1e-3, atol=1e-4)


@pytest.mark.slow  # a start-up-cost design check in a fresh interpreter (~3-4 s); make test-slow
def test_the_encoder_registry_does_not_import_torchvision():
    """Spec validation imports the registry; torchvision (and torch._dynamo with it) costs ~2.5 s
    of start-up, which a cached `pdmp analyze` or a `small`-encoder run never needs."""
    import subprocess

    code = ("import sys; import pdmp_cli.models.encoders as e; assert 'resnet18' in e.ENCODERS.names(); "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
    from pdmp_cli.models.encoders import build_encoder

    assert type(build_encoder("resnet18", 1).backbone).__name__ == "ResNet"  # still builds on demand


def test_workers_and_their_persistent_evaluation_loader_change_no_number(tiny_manifest, tmp_path):
    """The evaluation loader keeps its workers for the whole run (persistent_workers): a run with
    a DataLoader worker gives exactly the metrics of a run without, and the workers are the same
    processes at every epoch's evaluation."""
    import torch

    from pdmp_cli.analysis import manual_profile
    from pdmp_cli.data import load_dataset
    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.train import run
    from pdmp_cli.train.setup import eval_loader

    profile = manual_profile(str(tiny_manifest), "visual", "audio", modalities=["audio", "visual"]).save(tmp_path / "p.json")

    def spec(**kw):
        return TrainSpec(profile=str(profile), dataset=str(tiny_manifest), encoder="small", epochs=2, batch_size=16,
                         lr=0.01, device="cpu", **kw)

    runs = {w: run(spec(num_workers=w, run_dir=str(tmp_path / f"w{w}")), quiet=True) for w in (0, 1)}
    assert [m.model_dump(exclude={"epoch_seconds"}) for m in runs[1].metrics] == \
        [m.model_dump(exclude={"epoch_seconds"}) for m in runs[0].metrics]
    assert runs[1].status == "complete" and len(runs[1].metrics) == 2

    loader = eval_loader(load_dataset(str(tiny_manifest)), spec(num_workers=1), torch.device("cpu"))
    first = [y for _, y in loader]
    pids = [w.pid for w in loader._iterator._workers]
    second = [y for _, y in loader]
    assert [w.pid for w in loader._iterator._workers] == pids
    assert all(torch.equal(a, b) for a, b in zip(first, second)) and len(first) == 2
