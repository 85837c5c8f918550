"""Check: PDMP at γp 1 against vanilla on the ``synthetic`` preset, field by field.

    python -m benchmarks.gamma_one              # 20 epochs at 1 thread, 3 epochs at 2 threads

Trains vanilla and PDMP γp 1 (the preset's other settings, seed 0, a manual profile: visual
performance-dominant, audio optimization-dominant) and prints whether every field of their
``metrics.jsonl`` but the epoch time and γ is the same. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from pdmp_cli.analysis import manual_profile
    from pdmp_cli.sweep import base_spec
    from pdmp_cli.train import run

    root = Path(tempfile.mkdtemp(prefix="pdmp-gamma-one-"))
    p = manual_profile("synthetic", "visual", "audio", modalities=["audio", "visual"])
    p.save(root / "p.json")
    same_everywhere = True
    for threads, epochs in ((1, 20), (2, 3)):
        res = {}
        for m in ("vanilla", "pdmp"):
            flags = {"method": m, "gamma_p": 1.0, "epochs": epochs, "threads": threads, "run_dir": str(root / f"{m}-{threads}")}
            spec = base_spec(str(root / "p.json"), flags=flags)
            res[m] = [x.model_dump(exclude={"epoch_seconds", "gamma"}) for x in run(spec, quiet=True).metrics]
        same = res["vanilla"] == res["pdmp"]
        same_everywhere &= same
        print(f"threads {threads}, {epochs} epochs: vanilla == pdmp γp 1 (every metric but time and γ): {same}; "
              f"final test accuracy {res['vanilla'][-1]['test_accuracy']:.4f} / {res['pdmp'][-1]['test_accuracy']:.4f}")
    return 0 if same_everywhere else 1


if __name__ == "__main__":
    raise SystemExit(main())
