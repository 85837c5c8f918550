"""Figure: wall time of a second identical ``pdmp analyze`` (target < 3 s) and its ratio to the first.

Both are run as a user runs them: the ``pdmp`` console script in a child process, with a cache
directory of their own that starts empty. The first trains one unimodal model per modality;
the second must be a cache hit, which its output says ("served from the analysis cache, no
training"): the figure records whether it was, so a broken cache cannot pass for a fast one.
Wall time is start to exit, so it includes starting Python and importing torch.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import child_env, pdmp_command, run_child

HIT = "served from the analysis cache"


def measure(dataset: str, workdir: Path, threads: int | None, extra: list[str] | None = None) -> dict:
    cache = workdir / "cache"
    env = child_env(cache, threads)
    args = pdmp_command() + ["analyze", "--dataset", dataset, "--out", str(workdir / "profile.json"), *(extra or [])]
    first = run_child(args, env)
    second = run_child(args, env)
    return {
        "second_s": second.seconds,
        "first_s": first.seconds,
        "ratio": second.seconds / first.seconds,
        "target_s": 3.0,
        "first_cache_hit": HIT in first.stdout,
        "second_cache_hit": HIT in second.stdout,
        "config": {"command": " ".join(["pdmp", *args[len(pdmp_command()):]]), "dataset": dataset},
    }
