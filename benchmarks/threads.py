"""Figure: training step time against intra-op threads (``--threads``), per encoder.

What it decides: the default ``--threads`` of each encoder (:func:`pdmp_cli.runtime.default_threads`)
and so how many runs ``--jobs`` puts side by side (free cores ÷ threads). For every thread count
T it times the real training step of ``pdmp train`` (vanilla, concat fusion; forward, loss,
backward, optimizer step) on random inputs of the dataset's shapes, and prints

- ``speedup``: step time at 1 thread ÷ step time at T (what one run gains from T threads);
- ``efficiency``: speedup ÷ T (1.0: every extra core is fully used; what a grid of runs loses by
  giving each run T threads instead of running T one-thread runs side by side).

Thread counts alternate every round (1, 2, 4, 4, 2, 1, ...) in one process and the medians are
compared, so a burst of load lands on every count alike. Run it on an idle machine:

    python -m benchmarks.threads --encoder resnet18 --threads 1,2,4,8 --json threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import interleaved, load_average, machine, median, spread  # noqa: E402

# input shapes per encoder: the synthetic preset's for `small` (its default; batch 64), CREMA-D's for
# ResNet-18 (the paper's: 1 x 257 x 188 spectrogram, one 3 x 224 x 224 frame)
SHAPES = {
    "small": {"audio": (1, 33, 32), "visual": (3, 32, 32)},
    "resnet18": {"audio": (1, 257, 188), "visual": (3, 224, 224)},
}


def measure(encoder: str, threads: list[int], batch_size: int, steps: int, rounds: int, shapes: dict | None = None) -> dict:
    import torch
    import torch.nn.functional as F

    from pdmp_cli.models.multimodal import build_multimodal
    from pdmp_cli.runtime import place_input, place_model

    shapes = shapes or SHAPES[encoder]
    before = torch.get_num_threads()
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = place_model(build_multimodal(encoder, "concat", {m: s[0] for m, s in shapes.items()}, 6), device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = {m: place_input(torch.randn(batch_size, *s), device) for m, s in shapes.items()}
    y = torch.randint(0, 6, (batch_size,))

    def rounds_at(t: int):
        def one() -> float:
            torch.set_num_threads(t)
            t0 = time.perf_counter()
            for _ in range(steps):
                loss = F.cross_entropy(model(x, with_branches=False).logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return (time.perf_counter() - t0) / steps

        return one

    try:
        variants = {str(t): rounds_at(t) for t in threads}
        for v in variants.values():  # warm-up: allocator, oneDNN primitives for each pool size
            v()
        times = interleaved(variants, rounds)
    finally:
        torch.set_num_threads(before)
    base = median(times[str(threads[0])]) * threads[0]  # seconds per step at 1 thread when threads[0] == 1
    rows = {}
    for t in threads:
        step = median(times[str(t)])
        rows[str(t)] = {
            "step_ms": step * 1e3,
            "spread": spread(times[str(t)]),
            "speedup": base / step,
            "efficiency": base / step / t,
        }
    return {
        "encoder": encoder,
        "shapes": {m: list(s) for m, s in shapes.items()},
        "batch_size": batch_size,
        "steps_per_round": steps,
        "rounds": rounds,
        "threads": rows,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="small,resnet18", help="comma-separated encoders")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts; the first should be 1")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    out = {"machine": machine(threads[0]), "load_average_start": load_average(), "cpu_count": os.cpu_count(), "figures": {}}
    for enc in args.encoder.split(","):
        r = measure(enc, threads, args.batch_size, args.steps, args.rounds)
        out["figures"][enc] = r
        for t, row in r["threads"].items():
            print(f"{enc:<9} threads {t:>2}: step {row['step_ms']:8.1f} ms (spread {row['spread']:.2f}) "
                  f"speedup {row['speedup']:.2f}x  efficiency {row['efficiency']:.2f}", flush=True)
    out["load_average_end"] = load_average()
    print(f"load average {out['load_average_start']} -> {out['load_average_end']} on {os.cpu_count()} cores")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
