"""One id, one sample, one split: duplicate ids in a list, and ids shared by two splits
(leakage: a test clip seen in training), and the manifest's ``duplicates`` rule.

``duplicates = "refuse"`` (the default): every duplicate is a problem, ``duplicate id`` (the
same id twice in one split, whatever the labels) or ``leakage`` (an id in two splits, reported
on the copy in the split that is not evaluated: train, else val); ``pdmp datasets check``
lists them and training refuses the data (``--skip-bad`` leaves those samples out).

``"first"`` / ``"last"``: within a split, keep the first / last row of an id (PMR keeps the
first of AVE's duplicate annotations, OGM-GE the last); ``"drop"``: leave out every row of a
duplicated id. With any of the three, an id in two splits stays only in the evaluation split
(test before val before train), so the official test list stays whole and nothing leaks.
What a rule left out is reported (``Index.dropped``, shown by ``pdmp datasets check``).
"""

from __future__ import annotations

from pathlib import Path

from pdmp_cli.data.base import Problem

RULES = ("refuse", "first", "last", "drop")
EVALUATED_FIRST = ("test", "val", "train")  # who keeps a clip listed in two splits


def resolve(rows: dict[str, list], lists: dict[str, Path], rule: str) -> tuple[dict[str, list], list[Problem], list[Problem]]:
    """``rows``: split -> [(line, fields)]. -> (rows kept, problems, dropped)."""
    problems: list[Problem] = []
    dropped: list[Problem] = []
    kept: dict[str, list] = {}
    for split, split_rows in rows.items():
        by_id: dict[str, list] = {}
        for row in split_rows:
            by_id.setdefault(row[1]["id"], []).append(row)
        out = []
        for row in split_rows:
            same = by_id[row[1]["id"]]
            if len(same) == 1:
                out.append(row)
                continue
            n, r = row
            labels = sorted({x[1]["label"] for x in same})
            what = f"id {r['id']} is listed {len(same)} times (lines {', '.join(str(x[0]) for x in same)})"
            what += f" with labels {', '.join(labels)}" if len(labels) > 1 else ""
            if rule == "refuse":
                if row is not same[0]:
                    problems.append(Problem("duplicate id", split, lists[split], r["id"], what, n))
                out.append(row)
            elif (rule == "first" and row is same[0]) or (rule == "last" and row is same[-1]):
                out.append(row)
            else:
                dropped.append(Problem("dropped", split, lists[split], r["id"], f"duplicate: {what} (duplicates = {rule!r})", n))
        kept[split] = out

    order = [s for s in EVALUATED_FIRST if s in kept]
    owner: dict[str, str] = {}
    for split in order:
        for _, r in kept[split]:
            owner.setdefault(r["id"], split)
    for split in order:
        out = []
        for row in kept[split]:
            n, r = row
            home = owner[r["id"]]
            if home == split:
                out.append(row)
            elif rule == "refuse":
                problems.append(Problem("leakage", split, lists[split], r["id"], f"id {r['id']} is also in the {home} split", n))
                out.append(row)
            else:
                dropped.append(Problem("dropped", split, lists[split], r["id"],
                                       f"also in the {home} split, kept there (duplicates = {rule!r})", n))
        kept[split] = out
    return kept, problems, dropped
