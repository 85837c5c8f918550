"""Figure: wall time of ``pdmp demo`` from an empty cache (target < 3 minutes on this machine).

Run as a user runs it (the console script, a child process) into a fresh output folder and
cache directory, so the analysis and the three runs all train. The figure also records that
the demo finished its work: the comparison table (``report.md``) and the three run summaries.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import child_env, pdmp_command, run_child


def measure(workdir: Path, threads: int | None, extra: list[str] | None = None) -> dict:
    out = workdir / "demo-output"
    res = run_child(pdmp_command() + ["demo", "--out", str(out), *(extra or [])], child_env(workdir / "cache", threads),
                    memory=True)
    summaries = sorted(out.glob("runs/*/summary.json"))
    statuses = [json.loads(p.read_text())["status"] for p in summaries]
    return {
        "seconds": res.seconds,
        "target_s": 180.0,
        "peak_rss_mb": res.peak_rss_mb,
        "complete_runs": statuses.count("complete"),
        "report_written": (out / "report.md").is_file(),
        "config": {"command": " ".join(["pdmp", "demo", *(extra or [])]), "cache": "empty at start"},
    }
