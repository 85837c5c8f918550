"""Check for refactors: are a run's numbers bit-identical before and after a change?

    python -m benchmarks.bit_identity OUT.json                       # every method and fusion, small data
    python -m benchmarks.bit_identity OUT.json --data synthetic      # the built-in preset, 2 epochs
    git stash; python -m benchmarks.bit_identity before.json; git stash pop
    python -m benchmarks.bit_identity after.json && cmp before.json after.json

Trains every method on concat, PDMP on every other fusion, and PDMP and PMR cut after one epoch
and resumed (seed 0, 1 thread, a manual profile: visual performance-dominant, audio
optimization-dominant), then writes one JSON of what a change must not move: every epoch's
metrics but its time, the summary but its wall time and command, and a sha256 of the weights in
``last.pt`` and ``best.pt``. Two checkouts give the same file exactly when their runs are
bit-identical (``cmp``). ``--data tiny`` (default): a 160-clip synthetic manifest, 3 epochs, about
15 s on 2 cores; ``--data synthetic``: the preset, 2 epochs, about 35 s. Issue 26's refactor was
checked this way (CHANGELOG).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TINY = """
loader = "synthetic"
description = "bit-identity check"
classes = 4
train_size = 160
test_size = 60
seed = 3
[audio]
reliability = 0.6
[visual]
reliability = 0.9
image_size = 16
"""
DATA = {"tiny": dict(epochs=3, batch_size=16), "synthetic": dict(epochs=2, batch_size=64)}


def _digest(root: Path, name: str) -> dict:
    import torch

    from pdmp_cli import rundir

    metrics = [m.model_dump(mode="json", exclude={"epoch_seconds"}) for m in rundir.read_metrics(root)[0]]
    summary = json.loads((root / rundir.SUMMARY).read_text())
    for k in ("wall_seconds", "command"):
        summary.pop(k, None)
    weights = {}
    for ck in ("last.pt", "best.pt"):
        state = torch.load(root / rundir.CHECKPOINTS / ck, weights_only=False)["model"]
        weights[ck] = hashlib.sha256(b"".join(v.cpu().numpy().tobytes() for v in state.values())).hexdigest()
    return {"run": name, "metrics": metrics, "summary": summary, "weights": weights}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the JSON to write")
    ap.add_argument("--data", choices=sorted(DATA), default="tiny")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    args = ap.parse_args(argv)

    from pdmp_cli.methods import METHODS
    from pdmp_cli.models.fusions import FUSIONS
    from pdmp_cli.profile import Profile, Provenance
    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.train import run
    try:
        from pdmp_cli.train.setup import resume_spec
    except ImportError:  # a checkout from before the recipe (issue 26): the "before" of a comparison
        from pdmp_cli.train.loop import resume_spec

    root = Path(tempfile.mkdtemp(prefix="pdmp-bit-identity-"))
    dataset = "synthetic"
    if args.data == "tiny":
        (root / "bit.toml").write_text(TINY)
        dataset = str(root / "bit.toml")
    Profile(  # fixed, to the byte: its sha256 is in every summary
        dataset=Path(dataset).stem, modalities=["audio", "visual"], performance_dominant="visual",
        optimization_dominant="audio", optimization_criterion="manual",
        provenance=Provenance(tool_version="bit-identity", created="2025-01-01T00:00:00+00:00", source="manual"),
    ).save(root / "p.json")
    methods = args.methods.split(",") if args.methods else METHODS.names()
    size = DATA[args.data]

    def spec(method: str, fusion: str, name: str, epochs: int) -> TrainSpec:
        return TrainSpec(profile=str(root / "p.json"), dataset=dataset, method=method, fusion=fusion, gamma_p=4,
                         epochs=epochs, batch_size=size["batch_size"], lr=0.01, encoder="small",
                         run_dir=str(root / name), threads=1)

    out = []
    cases = [(m, "concat") for m in methods]
    cases += [("pdmp", f) for f in FUSIONS.names() if f != "concat" and "pdmp" in methods]
    for method, fusion in cases:
        name = f"{method}-{fusion}"
        r = run(spec(method, fusion, name, size["epochs"]), quiet=True)
        out.append(_digest(r.run_dir, name) if r.status == "complete" else
                   {"run": name, "status": r.status, "message": r.summary.message})
        print(f"{name}: {r.status}", file=sys.stderr)
    for method in [m for m in ("pdmp", "pmr") if m in methods]:  # cut after one epoch, resumed
        name = f"resume-{method}"
        run(spec(method, "concat", name, size["epochs"] - 1), quiet=True)
        r = run(resume_spec(root / name, {"epochs": size["epochs"]}), resume=True, quiet=True)
        out.append(_digest(r.run_dir, name))
        print(f"{name}: {r.status}", file=sys.stderr)
    Path(args.out).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out} ({len(out)} runs; compare two with cmp)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
