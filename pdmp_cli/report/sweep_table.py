"""The sweep table (the paper's Table V: accuracy against gamma_p)."""

from __future__ import annotations

import json

from pdmp_cli.report.render import column_title, fmt_stat
from pdmp_cli.report.stats import Row


def sweep_grid(rows: list[Row], col: str = "selected_accuracy") -> tuple[list[float], list[tuple[Row | None, dict]]]:
    """γp values (sorted) and, per (dataset, method, fusion, variant), the row of each γp.

    Methods that ignore γp (vanilla, ogm-ge) map under the key ``None``.
    """
    gps = sorted({w.gamma_p for w in rows if w.gamma_p is not None and w.status == "complete"})
    lines: dict[tuple, dict] = {}
    for w in rows:
        if w.status != "complete":
            continue
        key = (w.dataset, w.method, w.fusion, json.dumps(w.variant, sort_keys=True, default=str))
        lines.setdefault(key, {})[w.gamma_p] = w
    return gps, [(next(iter(cells.values())), cells) for cells in lines.values()]


def sweep_table(rows: list[Row], col: str = "selected_accuracy", title: str | None = None):
    """A rich table: one line per (dataset, method, fusion), one column per γp; best per line bold.
    ``col``: the report's headline by default (test accuracy at the epoch chosen on validation)."""
    from rich.markup import escape
    from rich.table import Table

    gps, lines = sweep_grid(rows, col)
    t = Table(title=title or f"{column_title(col)} against γp (mean ± std over seeds, n in brackets)")
    for h in ("dataset", "method", "fusion"):
        t.add_column(h)
    if any(w.variant for _, cells in lines for w in cells.values()):
        t.add_column("settings")
    for g in gps:
        t.add_column(f"γp {g:g}", justify="right")
    if any(None in cells for _, cells in lines):
        t.add_column("no γp", justify="right")
    show_settings = len(t.columns) > 3 and t.columns[3].header == "settings"
    for w0, cells in lines:
        means = {g: w.stats[col].mean for g, w in cells.items() if col in w.stats and w.stats[col].mean is not None}
        top = max(means.values()) if len(means) > 1 else None

        def cell(g):
            w = cells.get(g)
            if w is None:
                return ""
            text = f"{fmt_stat(w.stats.get(col), col)} ({w.n})"
            return f"[bold green]{escape(text)}[/]" if top is not None and means.get(g) == top else escape(text)

        fixed = [w0.dataset, w0.method, w0.fusion]
        if show_settings:
            fixed.append(", ".join(f"{k}={v}" for k, v in w0.variant.items()) or "-")
        extra = [cell(None)] if any(None in c for _, c in lines) else []
        t.add_row(*(escape(x) for x in fixed), *(cell(g) for g in gps), *extra)
    return t
