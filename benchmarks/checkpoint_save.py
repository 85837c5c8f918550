"""Figure: what checkpoint integrity costs (issue 27). A ResNet-18 pair's checkpoint (model + a
momentum buffer per parameter, as SGD keeps) saved with :func:`pdmp_cli.train.checkpoint.save`
(hashed as torch writes it, ``.sha256`` record) ÷ a plain ``torch.save`` through the same atomic
file; and the :func:`~pdmp_cli.train.checkpoint.verify` a resume runs first. Interleaved rounds,
medians, one intra-op thread.

    .venv/bin/python benchmarks/checkpoint_save.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)

    import torch

    from pdmp_cli.fsutil import atomic_write
    from pdmp_cli.models.multimodal import build_multimodal
    from pdmp_cli.train import checkpoint

    torch.set_num_threads(1)
    model = build_multimodal("resnet18", "concat", {"audio": 1, "visual": 3}, 6)
    obj = {"model": model.state_dict(), "momentum": {k: v.clone() for k, v in model.state_dict().items()}}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)

        def plain():
            with atomic_write(d / "plain.pt", "wb") as f:
                torch.save({"format": checkpoint.FORMAT_VERSION, **obj}, f)

        def hashed():
            checkpoint.save(d / "hashed.pt", obj)

        def verify():
            checkpoint.verify(d / "hashed.pt")

        plain(), hashed()  # warm
        times = {"plain": [], "hashed": [], "verify": []}
        for _ in range(args.rounds):
            for name, fn in (("plain", plain), ("hashed", hashed), ("verify", verify)):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        size = (d / "hashed.pt").stat().st_size
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"checkpoint {size / 1e6:.0f} MB, median of {args.rounds} interleaved rounds, 1 thread:")
    print(f"  torch.save through the atomic file   {med['plain']:.2f} s")
    print(f"  checkpoint.save (hash + record)      {med['hashed']:.2f} s   ratio {med['hashed'] / med['plain']:.2f}")
    print(f"  checkpoint.verify (before a resume)  {med['verify']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
