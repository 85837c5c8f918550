"""``make bench``: what PDMP and the data pipeline cost on top of the model, measured side by side.

    .venv/bin/python benchmarks/run.py                  # every figure (about 10-15 minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --tiny           # the test suite's size (seconds; figures not meaningful)
    .venv/bin/python benchmarks/run.py --skip-demo --out bench-results/mine.json
    .venv/bin/python benchmarks/run.py --hot-path       # also the hot-path study (profile + knobs)

Figures, one module each: ``step_time`` (PDMP ÷ vanilla), ``method_cost`` (step time and peak
memory of every method ÷ vanilla), ``features_cache`` (epoch with the
features cache ÷ decoding every epoch), ``analyze_cache`` (a second identical ``pdmp
analyze``), ``demo_time`` (``pdmp demo``), ``peak_memory`` (``pdmp train``), ``throughput``
(GPU samples/s, PDMP vs vanilla, with and without autocast; skipped without CUDA); ``hot_path``
is the profiling study behind the performance fixes. Timings that are compared are taken in
alternating rounds in this one run and reported as ratios of medians, so load from other
processes lands on both sides. Everything runs on the CPU with ``--threads`` intra-op threads
(default 1: on a shared 2-core machine torch's pool of 2 waits for a time slice on every
parallel op, which makes timings swing tenfold); child processes get it as OMP_NUM_THREADS.

Writes ``bench-results/bench.json`` (``--out``) and prints one table. Every cache, dataset and
run directory lives in a temporary folder that is removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/run.py` puts benchmarks/ first, not the repo
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402

SCHEMA = 1

# sizes: "full" is what `make bench` reports; "tiny" only proves every figure runs end to end
SIZES = {
    "full": {
        "step": [  # (label, dataset, encoder, batch, steps per round, rounds[, fusion: default concat])
            ("small", "synthetic", "small", 64, 5, 21),
            ("resnet18", "synthetic", "resnet18", 64, 1, 7),
            ("small-se", "synthetic", "small", 64, 5, 21, "se"),  # fusions inside the encoders (Table IV)
            ("small-mmformer", "synthetic", "small", 64, 5, 21, "mmformer"),
        ],
        "cremad": {"train": 96, "test": 32, "seconds": 2.5, "frame_size": (480, 360)},
        "features": {"batch_size": 64, "repeats": 3, "train_repeats": 2, "encoder": "small"},
        "packed": {"batch_size": 64, "repeats": 7},  # packed store ÷ today's loader (benchmarks/packed_loader.py)
        "analyze": "synthetic",
        "memory": {"synthetic": "synthetic", "cremad_encoder": "resnet18", "cremad_batch": 64},
        # every method ÷ vanilla: the synthetic preset at its defaults; peak RSS of one epoch per method
        "method_cost": {"dataset": "synthetic", "encoder": "small", "batch_size": 64, "steps": 5, "repeats": 11,
                        "memory": "all"},
        "throughput": {"encoder": "resnet18", "batch_size": 64, "steps": 10, "rounds": 5, "device": "cuda",
                       "precisions": ("fp32", "bf16", "fp16"), "layouts": ("nchw", "channels_last")},
        # the GPU data-pipeline figure: enough clips that an epoch is many batches
        "pipeline": {"train": 640, "test": 8, "seconds": 2.5, "frame_size": (480, 360),
                     "batch_size": 64, "workers": (0, 4, 8, 14), "epochs": 3},
    },
    "tiny": {
        "step": [("small", "@tiny", "small", 16, 2, 2)],
        "cremad": {"train": 8, "test": 4, "seconds": 0.5, "frame_size": (64, 48)},
        "features": {"batch_size": 4, "repeats": 2, "train_repeats": 2, "encoder": "small"},
        "packed": {"batch_size": 4, "repeats": 2},
        "analyze": "@tiny",
        "memory": {"synthetic": "@tiny", "cremad_encoder": "small", "cremad_batch": 8, "cremad_select_on_test": True},
        "method_cost": {"dataset": "@tiny", "encoder": "small", "batch_size": 16, "steps": 2, "repeats": 2,
                        "memory": None},  # peak RSS children: the peak_memory figure covers them here
        "throughput": {"encoder": "small", "batch_size": 4, "steps": 2, "rounds": 2, "device": "cpu",
                       "shapes": {"audio": (1, 16, 16), "visual": (3, 16, 16)}},  # the GPU figure's code, on the CPU
    },
}


def parse(argv):
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="test-suite size: seconds, not meaningful figures")
    p.add_argument("--out", type=Path, default=ROOT / "bench-results" / "bench.json", help="JSON output path")
    p.add_argument("--skip-demo", action="store_true", help="leave out the `pdmp demo` figure (always left out with --tiny)")
    p.add_argument("--hot-path", action="store_true", help="also run the hot-path study (profiler table, knobs)")
    p.add_argument("--only", default=None,
                   help="comma-separated figures to run: step_time,method_cost,features_cache,analyze_cache,demo,"
                        "peak_memory,throughput,hot_path")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads here and in child processes (default 1)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (caches, data, runs)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Run the benchmark; 0 when every figure was measured, 1 when one failed (its error is in the JSON)."""
    import torch

    args = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="pdmp-bench-"))
    saved = os.environ.get("PDMP_CACHE_DIR"), torch.get_num_threads()
    os.environ["PDMP_CACHE_DIR"] = str(work / "cache")  # this process's caches: fresh, thrown away
    torch.set_num_threads(args.threads)
    try:
        return _main(args, work)
    finally:  # called in-process (the test suite): leave the process as it was
        if saved[0] is None:
            os.environ.pop("PDMP_CACHE_DIR", None)
        else:
            os.environ["PDMP_CACHE_DIR"] = saved[0]
        torch.set_num_threads(saved[1])
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _main(args, work: Path) -> int:
    import torch
    from rich.console import Console

    mode = "tiny" if args.tiny else "full"
    size = SIZES[mode]

    console = Console(stderr=True)
    wanted = set(args.only.split(",")) if args.only else {
        "step_time", "method_cost", "features_cache", "packed_loader", "analyze_cache", "demo", "peak_memory",
        "throughput"}
    if args.hot_path:
        wanted.add("hot_path")
    if args.tiny or args.skip_demo:
        wanted.discard("demo")

    tiny_manifest = work / "tiny.toml"
    tiny_manifest.write_text(common.TINY_SYNTHETIC)
    # the CREMA-D layout is read through the shipped manifest; --tiny through a copy with small settings
    cremad_manifest = "cremad"
    if args.tiny:
        (work / "manifests").mkdir()
        cremad_manifest = str(work / "manifests" / "cremad.toml")  # named cremad: the paper profile fits it
        Path(cremad_manifest).write_text(common.TINY_CREMAD)

    def ds(name: str) -> str:
        return str(tiny_manifest) if name == "@tiny" else name

    cremad_root = None

    def cremad():
        nonlocal cremad_root
        if cremad_root is None:
            c = size["cremad"]
            cremad_root = common.make_cremad_layout(work / "cremad", c["train"], c["test"], c["seconds"],
                                                    frame_size=c["frame_size"])
        return cremad_root

    t_start = time.monotonic()
    result = {
        "schema": SCHEMA,
        "mode": mode,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": common.machine(args.threads),
        "load_average_start": common.load_average(),
        "figures": {},
        "errors": {},
    }
    figures = result["figures"]

    def figure(name: str, fn):
        if name not in wanted:
            return
        console.print(f"[bold]measuring {name}[/] (load average {common.load_average()})", highlight=False)
        t0 = time.monotonic()
        try:
            out = fn()
        except Exception as e:  # one broken figure must not lose the others
            result["errors"][name] = f"{type(e).__name__}: {e}"
            console.print(f"[red]{name} failed:[/] {e}", highlight=False)
            traceback.print_exc()
            return
        out["load_average"] = common.load_average()
        out["wall_s"] = time.monotonic() - t0
        figures[name] = out

    from benchmarks import analyze_cache, demo_time, features_cache, method_cost, peak_memory, step_time, throughput

    figure("step_time", lambda: {
        label: step_time.measure(ds(d), enc, b, steps, rounds, fusion=(fu or ["concat"])[0])
        for label, d, enc, b, steps, rounds, *fu in size["step"]
    })
    mc = size["method_cost"]
    figure("method_cost", lambda: method_cost.measure(
        ds(mc["dataset"]), mc["encoder"], mc["batch_size"], mc["steps"], mc["repeats"], workdir=_fresh(work, "method_cost"),
        threads=args.threads, memory=mc["memory"],
        device="cuda" if torch.cuda.is_available() and not args.tiny else "cpu",  # a GPU: its time and memory
    ))
    figure("features_cache", lambda: features_cache.measure(cremad(), manifest=cremad_manifest, **size["features"]))
    from benchmarks import packed_loader

    figure("packed_loader", lambda: packed_loader.measure(cremad(), manifest=cremad_manifest, **size["packed"]))
    figure("analyze_cache", lambda: analyze_cache.measure(ds(size["analyze"]), _fresh(work, "analyze"), args.threads))
    figure("demo", lambda: demo_time.measure(_fresh(work, "demo"), args.threads))
    mem = size["memory"]
    figure("peak_memory", lambda: peak_memory.measure(
        _fresh(work, "memory"), cremad(), args.threads, cremad_manifest=cremad_manifest, synthetic=ds(mem["synthetic"]),
        cremad_encoder=mem["cremad_encoder"], cremad_batch=mem["cremad_batch"], cremad_select_on_test=mem.get("cremad_select_on_test", False),
    ))
    tp = size["throughput"]
    if tp["device"] == "cuda" and not torch.cuda.is_available():
        if "throughput" in wanted:
            figures["throughput"] = {"skipped": "no CUDA device on this machine"}
    else:
        figure("throughput", lambda: throughput.measure(**tp))
    pl = size.get("pipeline")
    if pl and "throughput" in wanted and torch.cuda.is_available():  # part of the GPU figure: only where CUDA is
        wanted.add("gpu_pipeline")
        from benchmarks import gpu_pipeline

        def pipeline():
            root = common.make_cremad_layout(work / "cremad-pipeline", pl["train"], pl["test"], pl["seconds"],
                                             frame_size=pl["frame_size"])
            return gpu_pipeline.measure(root, manifest=cremad_manifest, batch_size=pl["batch_size"],
                                        workers=pl["workers"], epochs=pl["epochs"])

        figure("gpu_pipeline", pipeline)
    if "hot_path" in wanted:
        from benchmarks import hot_path

        figure("hot_path", lambda: hot_path.measure(
            cremad(), manifest=cremad_manifest, synthetic=ds(size["step"][0][1]), tiny=args.tiny, threads=args.threads))

    result["load_average_end"] = common.load_average()
    result["seconds"] = time.monotonic() - t_start
    if not result["errors"]:
        del result["errors"]
    common.write_json(args.out, result)

    from benchmarks.table import render

    Console().print(render(result))
    console.print(f"wrote {args.out}", highlight=False)
    if args.keep:
        console.print(f"kept {work}", highlight=False)
    return 1 if result.get("errors") else 0


def _fresh(work: Path, name: str) -> Path:
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    return d


if __name__ == "__main__":
    sys.exit(main())
