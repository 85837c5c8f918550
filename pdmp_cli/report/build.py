"""``pdmp report``'s model: find and read runs and profiles, filter, aggregate -> :class:`Report`.

Only a path that does not exist, a runs directory with no runs, or a filter value no run has
stops with a :class:`PdmpError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pdmp_cli.errors import PdmpError
from pdmp_cli.report.read import ProfileRow, RunRecord, find_run_dirs, read_profiles, read_run
from pdmp_cli.report.stats import Row, aggregate, compare_to


@dataclass
class Report:
    sources: list[Path]
    records: list[RunRecord]  # after the filters
    rows: list[Row]
    profiles: list[ProfileRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compare: str | None = None  # the method every row was compared with (--compare)


def _values(s: str | list[str] | None) -> list[str] | None:
    if s is None:
        return None
    items = s if isinstance(s, list) else s.split(",")
    items = [x.strip() for x in items if x.strip()]
    return items or None


def _filter(records: list[RunRecord], attr: str, wanted: list[str] | None, flag: str, sources) -> list[RunRecord]:
    if wanted is None:
        return records
    present = sorted({getattr(r.summary, attr) for r in records})
    unknown = [w for w in wanted if w not in present]
    if unknown:
        where = ", ".join(str(s) for s in sources)
        raise PdmpError(
            f"no run has {flag} {', '.join(unknown)} under {where}; "
            f"{attr}s present: {', '.join(present) if present else 'none'}",
            exit_code=2,
        )
    return [r for r in records if getattr(r.summary, attr) in wanted]


def build(
    runs: list[str | os.PathLike] | None = None,
    *,
    dataset: str | list[str] | None = None,
    method: str | list[str] | None = None,
    fusion: str | list[str] | None = None,
    profiles: list[str | os.PathLike] | None = None,
    require_runs: bool = True,
    compare: str | None = None,
) -> Report:
    """Read every run below ``runs`` (default ``["runs"]``; none when only ``profiles`` are
    given) and the ``profiles``, apply the filters (comma-separated values allowed) and aggregate.

    ``compare``: a method; every complete row gets its paired difference against that method's
    row with the same dataset, fusion and settings (``row.compare``, :func:`~pdmp_cli.report.stats.paired`).

    Raises PdmpError: a path that does not exist, no run found (when ``require_runs``), or a
    filter value (or ``compare`` method) that no run has (the message lists the values present).
    """
    notes: list[str] = []
    # exit codes, as grep's: 2 = a wrong argument (a path that is not there, a filter no run has),
    # 1 = nothing to report (no runs under a folder, or no runs/ yet when no folder was given)
    default = runs is None and not profiles
    if runs is None:
        runs = [] if profiles else ["runs"]
    sources = [Path(r) for r in runs]
    for s in sources:
        if default and not s.exists():
            raise PdmpError("no runs found: there is no runs/ folder here yet; train one with "
                            "`pdmp train --profile P` or run `pdmp demo`, or give the runs directory", 1)
        if not s.exists():
            raise PdmpError(f"{s} does not exist; give the runs directory `pdmp train` wrote to (default runs/)", 2)
        if not s.is_dir():
            raise PdmpError(f"{s} is not a directory; give a runs directory or one run directory", 2)
    records: list[RunRecord] = []
    seen: set[Path] = set()
    for s in sources:
        for d in find_run_dirs(s):
            if d.resolve() in seen:
                continue
            seen.add(d.resolve())
            rec = read_run(d, notes)
            if rec is not None:
                records.append(rec)
    if sources and not records and require_runs:
        where = ", ".join(str(s) for s in sources)
        hint = f" ({len(notes)} unreadable: {notes[0]})" if notes else ""
        raise PdmpError(
            f"no runs found under {where}{hint}; train one with `pdmp train --profile P` or run `pdmp demo`", 1
        )
    prows = read_profiles(list(profiles or []), notes)
    if sources:
        records = _filter(records, "dataset", _values(dataset), "--dataset", sources)
        records = _filter(records, "method", _values(method), "--method", sources)
        records = _filter(records, "fusion", _values(fusion), "--fusion", sources)
        if not records and require_runs:
            raise PdmpError("no run matches all of the filters together; drop one of --dataset, --method, --fusion", 2)
    if _values(dataset) and prows:
        kept = [p for p in prows if p.profile.dataset in _values(dataset)]
        if not kept and not sources:
            present = sorted({p.profile.dataset for p in prows})
            raise PdmpError(f"no profile has --dataset {dataset}; datasets present: {', '.join(present)}", 2)
        prows = kept
    for r in records:
        if not r.complete:
            notes.append(_status_note(r))
    rows = aggregate(records, notes)
    if compare:
        present = sorted({w.method for w in rows if w.status == "complete"})
        if compare not in present:
            raise PdmpError(
                f"--compare {compare}: no complete run of that method here; methods present: {', '.join(present) or 'none'}",
                2,
            )
        notes.extend(compare_to(rows, compare))
    return Report(sources=sources, records=records, rows=rows, profiles=prows, notes=notes, compare=compare)


def _status_note(r: RunRecord) -> str:
    s = r.summary
    planned = f" of {r.epochs_planned}" if r.epochs_planned else ""
    what = {
        "running": f"is marked running ({s.epochs_done}{planned} epochs); if no `pdmp train` is running it, "
        f"it was killed: continue it with `pdmp train --resume {r.path}`",
        "interrupted": f"was interrupted after {s.epochs_done}{planned} epochs; continue it with `pdmp train --resume {r.path}`",
        "diverged": f"diverged after {s.epochs_done}{planned} epochs" + (f": {s.message}" if s.message else ""),
        "unknown": f"has no summary ({s.epochs_done}{planned} epochs in metrics.jsonl)",
    }.get(r.status, f"has status {r.status}")
    return f"{r.path} {what}; shown on its own row, not averaged"
