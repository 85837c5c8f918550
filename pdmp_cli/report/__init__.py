"""``pdmp report``: run directories and profiles -> tables (terminal, Markdown, CSV, JSON).

    from pdmp_cli.report import build, render
    rep = build(["runs"], method="pdmp,vanilla")
    for row in rep.rows:                       # one row per configuration, seeds aggregated
        row.method, row.gamma_p, row.n, row.stats["accuracy"].mean, row.stats["accuracy"].std
    print(render(rep, "markdown"))

The package, one concern per module:

- :mod:`~pdmp_cli.report.read`: one run directory -> :class:`RunRecord` (without torch),
  profiles -> :class:`ProfileRow`; a broken run is noted, never raised on.
- :mod:`~pdmp_cli.report.stats`: complete runs of one configuration averaged over seeds
  (:class:`Stat`, :class:`Row`, :func:`aggregate`); unfinished runs on their own rows.
- :mod:`~pdmp_cli.report.build`: find, read, filter, aggregate -> :class:`Report` (:func:`build`).
- :mod:`~pdmp_cli.report.render`: terminal, Markdown, CSV and JSON renderings (:func:`render`).
- :mod:`~pdmp_cli.report.sweep_table`: the paper's Table V (accuracy against gamma_p).
"""

from pdmp_cli.report.build import Report, build
from pdmp_cli.report.read import (
    NOT_SETTINGS,
    ProfileRow,
    RunRecord,
    _dataset_name,
    find_run_dirs,
    is_run_dir,
    read_profiles,
    read_run,
    settings_key,
    spec_with_defaults,
)
from pdmp_cli.report.render import (
    FORMATS,
    column_title,
    fmt_gamma,
    fmt_stat,
    fmt_status,
    markdown,
    profile_cells,
    render,
    rich_tables,
    row_dict,
    table_cells,
    to_csv,
    to_json,
)
from pdmp_cli.report.stats import (
    HEADLINE,
    HIGHER_IS_BETTER,
    Paired,
    Row,
    Stat,
    aggregate,
    compare_to,
    metric_columns,
    paired,
)
from pdmp_cli.report.sweep_table import sweep_grid, sweep_table

__all__ = [
    "FORMATS", "HEADLINE", "HIGHER_IS_BETTER", "Paired", "compare_to", "paired", "NOT_SETTINGS",
    "ProfileRow", "Report", "Row", "RunRecord", "Stat", "_dataset_name", "aggregate", "build",
    "column_title", "find_run_dirs", "fmt_gamma", "fmt_stat", "fmt_status", "is_run_dir", "markdown",
    "metric_columns", "profile_cells", "read_profiles", "read_run", "render", "rich_tables", "row_dict",
    "settings_key", "spec_with_defaults", "sweep_grid", "sweep_table", "table_cells", "to_csv", "to_json",
]  # fmt: skip
