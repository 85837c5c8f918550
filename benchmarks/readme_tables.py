"""The measured tables of the README and docs/, regenerated from committed results (run directories and benchmark JSON).

    # 1. measure (writes run directories / JSON), e.g. the demo and the thread benchmark:
    pdmp demo --out /tmp/demo
    python -m benchmarks.threads --encoder small,resnet18 --threads 1,2 --json /tmp/threads.json
    # 2. keep the results in the repository (run directories without checkpoints, with how and where)
    python -m benchmarks.readme_tables collect-demo /tmp/demo --command "make demo" --wall-s 97 --load "2.1 1.9 1.4"
    python -m benchmarks.readme_tables collect-threads /tmp/threads.json
    # 3. rewrite the tables from them, in whichever document holds each (check: exit 1 when one differs)
    python -m benchmarks.readme_tables write
    python -m benchmarks.readme_tables check

Each table sits in one document, README.md or a page of docs/ (``demo`` in docs/demo.md, ``threads``
in docs/scaling.md, ``tuned`` in docs/tuning.md), between ``<!-- table:NAME -->`` and
``<!-- /table:NAME -->``, and is rendered only from ``docs/results/``: ``demo/`` (the demo's run directories, as
``pdmp report`` reads them, and ``demo/meta.json``: machine, threads, jobs, load, wall time, the
command) and ``threads.json`` (``benchmarks/threads.py``). ``tests/test_readme_numbers.py`` fails
when a table in any of those documents is not what this script makes from those files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "docs" / "results"
README = ROOT / "README.md"
RUN_FILES = ("spec.json", "summary.json", "profile.json", "split.json", "metrics.jsonl")


def machine_line(meta: dict) -> str:
    m = meta.get("machine", {})
    where = f"{m.get('cpu_count', '?')} CPU cores" + (f", {m['gpu']}" if m.get("gpu") else ", no GPU")
    parts = [
        (f"`{meta['command']}` " if meta.get("command") else "") + f"on {where} ({m.get('platform', '?')}, torch {m.get('torch', '?')})",
        f"{meta['threads']} thread(s) per run" if meta.get("threads") else None,
        f"--jobs {meta['jobs']}" if meta.get("jobs") else None,
        f"load average {meta['load']} when it started" if meta.get("load") else None,
        f"wall time {meta['wall_s']:.0f} s" if meta.get("wall_s") is not None else None,
        f"measured {meta['date']}" if meta.get("date") else None,
    ]
    return "Measured: " + "; ".join(p for p in parts if p) + "."


def demo_table(results: Path = RESULTS) -> str:
    """The demo's comparison table (``pdmp report --format markdown`` of its runs) and how it was measured."""
    from pdmp_cli import report

    d = results / "demo"
    rep = report.build([d / "run-dirs"])  # not "runs": .gitignore ignores every runs/
    meta = json.loads((d / "meta.json").read_text())
    return report.markdown(rep).rstrip("\n") + "\n\n" + machine_line(meta) + "\n"


def threads_table(results: Path = RESULTS) -> str:
    """Step time against threads per encoder (benchmarks/threads.py)."""
    data = json.loads((results / "threads.json").read_text())
    lines = ["| encoder | input (batch) | threads | step ms | speedup | efficiency |", "|---|---|---|---|---|---|"]
    for enc, fig in data["figures"].items():
        shapes = " + ".join("×".join(map(str, s)) for s in fig["shapes"].values())
        for t, row in fig["threads"].items():
            lines.append(
                f"| {enc} | {shapes} ({fig['batch_size']}) | {t} | {row['step_ms']:.0f} | {row['speedup']:.2f} | {row['efficiency']:.2f} |"
            )
    m = data["machine"]
    lines += ["", f"Measured: `{data.get('command', 'python -m benchmarks.threads')}` on {m.get('cpu_count')} CPU cores "
              f"({m.get('platform')}, torch {m.get('torch')}); load average {data.get('load_average_start')} at the "
              f"start, {data.get('load_average_end')} at the end."]
    return "\n".join(lines) + "\n"


def tuned_table(results: Path = RESULTS) -> str:
    """The tuned Table I (``pdmp tune --method paper``: each method's choice, ``tuned.json``) beside
    the tunable methods at their own defaults, as ``pdmp report --compare vanilla`` shows them."""
    from pdmp_cli import report

    d = results / "tuned-table"
    rep = report.build([d / "run-dirs"], compare="vanilla")
    meta = json.loads((d / "meta.json").read_text())
    return report.markdown(rep).rstrip("\n") + "\n\n" + machine_line(meta) + "\n"


TABLES = {"demo": demo_table, "threads": threads_table, "tuned": tuned_table}


def _block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- table:{name} -->\n)(.*?)(<!-- /table:{name} -->)", re.S)


def render_readme(text: str, results: Path = RESULTS) -> str:
    """``text`` with every ``<!-- table:NAME -->`` block replaced by its table from ``results``."""
    for name, make in TABLES.items():
        pat = _block(name)
        if pat.search(text):
            table = make(results)
            text = pat.sub(lambda m: m.group(1) + table + m.group(3), text)
    return text


def documents(root: Path = ROOT) -> list[Path]:
    """The documents that may hold tables: README.md and every page of docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def stale(root: Path = ROOT, results: Path = RESULTS) -> list[Path]:
    """The documents whose tables differ from what ``results`` makes of them."""
    return [p for p in documents(root) if render_readme(p.read_text(), results) != p.read_text()]


def collect_demo(out: Path, command: str, wall_s: float | None, load: str | None, jobs: str | None) -> Path:
    """Copy the demo's run directories (no checkpoints) into docs/results/demo/ with meta.json."""
    return collect_runs("demo", sorted((out / "runs").iterdir()), command, wall_s, load, jobs=jobs)


def collect_runs(name: str, dirs: list[Path], command: str, wall_s: float | None, load: str | None,
                 jobs: str | None = None) -> Path:
    """Copy run directories (no checkpoints; with ``tuned.json`` where pdmp tune wrote one) into
    docs/results/<name>/runs/ with meta.json (the tuned Table I: ``collect-runs tuned-table ...``)."""
    import torch

    dest = RESULTS / name
    shutil.rmtree(dest, ignore_errors=True)
    threads = set()
    for run in dirs:
        if not (run / "spec.json").is_file():
            continue
        (dest / "run-dirs" / run.name).mkdir(parents=True)
        for f in (*RUN_FILES, "tuned.json"):
            if (run / f).is_file():
                shutil.copy(run / f, dest / "run-dirs" / run.name / f)
        threads.add(json.loads((run / "spec.json").read_text()).get("threads"))
    meta = {
        "command": command, "wall_s": wall_s, "load": load, **({"jobs": jobs} if jobs is not None else {}),
        "threads": ",".join(str(t) for t in sorted(threads, key=str)),
        "date": __import__("time").strftime("%Y-%m-%d"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(terse=True), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }  # fmt: skip
    (dest / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("collect-demo", help="keep a demo's runs in docs/results/demo/")
    c.add_argument("out", type=Path, help="the demo's --out folder")
    c.add_argument("--command", default="make demo")
    c.add_argument("--wall-s", type=float)
    c.add_argument("--load", help="`uptime`'s load averages when it started")
    c.add_argument("--jobs", help="the --jobs it ran with, e.g. '1 (the default at that load)'")
    t = sub.add_parser("collect-threads", help="keep benchmarks/threads.py's JSON in docs/results/threads.json")
    t.add_argument("json", type=Path)
    t.add_argument("--command", default="python -m benchmarks.threads")
    r = sub.add_parser("collect-runs", help="keep run directories in docs/results/NAME/runs/ (e.g. tuned-table)")
    r.add_argument("name")
    r.add_argument("runs", type=Path, nargs="+", help="run directories")
    r.add_argument("--command", required=True)
    r.add_argument("--wall-s", type=float)
    r.add_argument("--load", help="`uptime`'s load averages when it started")
    sub.add_parser("write", help="rewrite the tables of README.md and docs/*.md from docs/results/")
    sub.add_parser("check", help="exit 1 when a table in README.md or docs/*.md differs from docs/results/")
    args = ap.parse_args(argv)
    if args.what == "collect-demo":
        print(collect_demo(args.out, args.command, args.wall_s, args.load, args.jobs))
    elif args.what == "collect-runs":
        print(collect_runs(args.name, args.runs, args.command, args.wall_s, args.load))
    elif args.what == "collect-threads":
        data = json.loads(args.json.read_text())
        data["command"] = args.command
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "threads.json").write_text(json.dumps(data, indent=2) + "\n")
    elif args.what == "write":
        for path in stale():
            path.write_text(render_readme(path.read_text()))
            print(f"rewrote {path.relative_to(ROOT)}")
    else:
        differ = stale()
        for path in differ:
            print(f"{path.relative_to(ROOT)}'s tables differ from docs/results/; run: python -m benchmarks.readme_tables write")
        if differ:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
