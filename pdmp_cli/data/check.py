"""Dataset validation: find what would break training before it starts.

Problems found (``Problem.kind``):

  ``missing list``      a split's list file (or the classes file) is not there
  ``bad row``           a list line that does not parse in the list's format
  ``empty split``       a split with no samples
  ``unknown label``     a label outside the manifest's class list
  ``duplicate id``      an id listed twice in one split (even with different labels)
  ``leakage``           an id in two splits (a clip trained on and evaluated); reported on the
                        train (else val) copy. The manifest's ``duplicates`` rule can resolve
                        both instead (:mod:`pdmp_cli.data.duplicates`); what it leaves out is
                        ``Report.dropped``, not a problem
  ``missing file``      a sample's file or frame folder is not there (or holds no frames)
  ``unreadable file``   a file that does not decode (not audio, not an image, bad array)
  ``truncated file``    a file cut short (a wav whose data chunk runs past the end, a
                        truncated jpg/png/npy, flow folders with unequal x/y counts)
  ``non-finite file``   a file that decodes to NaN or inf values (checked once, when decoded)

The deep check decodes every sample through the features cache, so it also warms the cache:
the first training epoch then decodes nothing, and a second check only re-reads changed files.

For training (``TrainSpec.skip_bad``)::

    bundle, report = load_checked("cremad", data_root, skip_bad=spec.skip_bad)
    # skip_bad=False: PdmpError (one line with counts) if anything is wrong
    # skip_bad=True:  bad samples are left out; report.skipped says how many
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pdmp_cli.data.base import FATAL, KINDS, Problem
from pdmp_cli.errors import PdmpError

def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"1 {word}"
    head, _, last = word.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + ("es" if last.endswith("s") else "s")
    return f"{n} {head + ' ' if head else ''}{last}"


@dataclass
class Report:
    dataset: str
    root: Path | None
    samples: dict[str, int] = field(default_factory=dict)  # samples listed per split
    problems: list[Problem] = field(default_factory=list)
    skipped: int = 0  # samples left out by load_checked(skip_bad=True)
    dropped: list[Problem] = field(default_factory=list)  # list rows the manifest's rules left out

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if p.kind in FATAL]

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(p.kind for p in self.problems)
        return {k: c[k] for k in KINDS if c[k]}

    @property
    def bad_samples(self) -> set[tuple[str, str]]:
        """(split, sample id) of every sample with a problem."""
        return {(p.split, p.sample) for p in self.problems if p.sample is not None and p.split}

    def counts_text(self) -> str:
        return ", ".join(_plural(n, k) for k, n in self.counts.items())

    def summary(self) -> str:
        n = sum(self.samples.values())
        sizes = ", ".join(f"{s} {c}" for s, c in self.samples.items())
        left = ""
        if self.dropped:
            per = Counter(p.split for p in self.dropped)
            left = (f"; {_plural(len(self.dropped), 'list row')} left out by the manifest's rules "
                    f"({', '.join(f'{s} {c}' for s, c in per.items())})")
        if self.ok:
            return f"{self.dataset}: {n} samples ({sizes}), no problems{left}"
        bad = len(self.bad_samples)
        return (f"{self.dataset}: {_plural(len(self.problems), 'problem')} ({self.counts_text()}) "
                f"in {n} samples ({sizes}); {bad} samples affected{left}")

    def first(self, k: int = 3) -> str:
        shown = "; ".join(p.describe() for p in self.problems[:k])
        more = len(self.problems) - k
        return shown + (f"; and {more} more" if more > 0 else "")


def _is_files(manifest) -> bool:
    return manifest.loader == "files"


def _visit(mods: dict, jobs: list, deep: bool, features) -> list[Problem]:
    """Open (``deep``: decode, through the features cache) every file of ``jobs`` = [(split, Sample)]."""
    from pdmp_cli.data.modalities import BadFile

    problems = []
    for split, s in jobs:
        for m, mod in mods.items():
            try:
                if deep:
                    features.load(mod, s.paths[m])
                else:
                    mod.sources(s.paths[m])
            except BadFile as e:
                problems.append(Problem(f"{e.problem} file", split, e.path, s.id, e.detail))
            except OSError as e:  # the file system refused the path itself (too long, an I/O error)
                problems.append(Problem("unreadable file", split, s.paths[m], s.id, f"{type(e).__name__}: {e.strerror or e}"))
    return problems


def _worker_init() -> None:
    # as DataLoader workers do: one intra-op thread per process (a forked OpenMP pool can hang)
    import torch

    torch.set_num_threads(1)


PARALLEL_FROM = 64  # fewer samples than this: worker processes cost more than they save
CHUNK = 32


def check_dataset(dataset, data_root=None, *, deep: bool = True, progress: bool = False, features=None,
                  workers: int | None = None, skip_splits=()) -> Report:
    """Validate a dataset on disk -> :class:`Report`.

    ``dataset``: a manifest name, a path to a manifest, or a loaded manifest. ``deep``: decode
    every file (through the features cache); otherwise only check that files exist.
    ``workers``: processes that decode in parallel (default: the manifest's ``num_workers``
    default, else 0); used from :data:`PARALLEL_FROM` samples on. ``skip_splits``: splits whose
    samples are not opened (``pdmp tune`` trains without reading the test split); their lists are.
    """
    from pdmp_cli.data.manifest import load_manifest

    manifest = load_manifest(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    if not _is_files(manifest):  # generated data (synthetic): nothing on disk to check
        from pdmp_cli.data.base import LOADERS

        bundle = LOADERS.get(manifest.loader).build(manifest, data_root=data_root)
        sizes = {"train": len(bundle.train), "val": len(bundle.val) if bundle.val is not None else None,
                 "test": len(bundle.test)}
        report = Report(manifest.name, None, {s: n for s, n in sizes.items() if n is not None})
        for split in report.samples:
            if report.samples[split] == 0:
                report.problems.append(Problem("empty split", split))
        return report

    from pdmp_cli.data.features import FeatureCache
    from pdmp_cli.data.loaders.files import index_dataset

    idx = index_dataset(manifest, data_root)
    report = Report(manifest.name, idx.root, {s: len(v) for s, v in idx.splits.items()}, list(idx.problems),
                    dropped=list(idx.dropped))
    features = features or FeatureCache()
    jobs = [(split, s) for split, samples in idx.splits.items() if split not in skip_splits for s in samples]
    chunks = [jobs[i:i + CHUNK] for i in range(0, len(jobs), CHUNK)]
    if workers is None:
        workers = manifest.defaults.num_workers or 0
    if not deep or len(jobs) < PARALLEL_FROM:
        workers = 0

    bar, task = None, None
    if progress and jobs:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from pdmp_cli.console import err_console

        cols = (TextColumn("checking {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        bar = Progress(*cols, console=err_console, transient=True)
        task = bar.add_task(manifest.name, total=len(jobs))
        bar.start()
    try:
        if workers > 0:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # the first chunk here: forked workers then inherit the decoders already imported
            report.problems.extend(_visit(idx.modalities, chunks[0], deep, features))
            if bar:
                bar.advance(task, len(chunks[0]))
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
                futures = {pool.submit(_visit, idx.modalities, c, deep, features): len(c) for c in chunks[1:]}
                for fut in as_completed(futures):
                    report.problems.extend(fut.result())
                    if bar:
                        bar.advance(task, futures[fut])
        else:
            for c in chunks:
                report.problems.extend(_visit(idx.modalities, c, deep, features))
                if bar:
                    bar.advance(task, len(c))
    finally:
        if bar:
            bar.stop()
    order = {k: i for i, k in enumerate(KINDS)}
    report.problems.sort(key=lambda p: (order.get(p.kind, 99), p.split or "", str(p.path or ""), p.line or 0))
    return report


def load_checked(dataset, data_root=None, *, skip_bad: bool = False, deep: bool = True, progress: bool = False,
                 workers: int | None = None, skip_splits=()):
    """Check, then build. -> ``(DatasetBundle, Report)``.

    A broken dataset raises :class:`PdmpError` naming the counts and the first problems, unless
    ``skip_bad``: then bad samples are left out and ``report.skipped`` counts them. A missing
    list file or an empty split is never skippable.
    """
    from pdmp_cli.data.base import LOADERS
    from pdmp_cli.data.base import check_command
    from pdmp_cli.data.manifest import load_manifest

    manifest = load_manifest(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    report = check_dataset(manifest, data_root, deep=deep, progress=progress, workers=workers, skip_splits=skip_splits)
    name, check = manifest.name, check_command(manifest, data_root)
    if report.fatal:
        raise PdmpError(f"dataset {name} cannot be used: {report.first()}; fix the lists "
                        f"(see `{check}`)")
    if not report.ok and not skip_bad:
        raise PdmpError(f"dataset {name} has {report.counts_text()} ({len(report.bad_samples)} samples): "
                        f"{report.first()}; fix them (`{check}` lists all) "
                        "or pass --skip-bad (pdmp analyze and pdmp train alike) to leave those samples out")
    if not _is_files(manifest):
        return LOADERS.get(manifest.loader).build(manifest, data_root=data_root), report
    from pdmp_cli.data.loaders.files import FilesLoader

    bad = report.bad_samples
    bundle = FilesLoader.build(manifest, data_root=data_root, exclude=bad, skip_bad=skip_bad)
    report.skipped = len(bad)
    return bundle, report


@dataclass
class DatasetStatus:
    name: str
    loader: str
    description: str
    classes: str  # a count, or where the classes come from
    modalities: str
    root: str  # the data root ("built-in" for generated data)
    source: str  # where the root came from (--data-root, $PDMP_DATA_ROOT_X, ./data, ...)
    status: str  # present | incomplete (lists missing) | missing | built-in | invalid
    detail: str = ""


def list_datasets(data_root=None) -> list[DatasetStatus]:
    """Every manifest in ``data_manifests/`` and whether its data is on disk (cheap: no sample is opened)."""
    from pdmp_cli.data.manifest import list_manifests, load_manifest

    out = []
    for name in list_manifests():
        try:
            m = load_manifest(name)
        except PdmpError as e:
            out.append(DatasetStatus(name, "?", "", "", "", "", "", "invalid", str(e)))
            continue
        if not _is_files(m):
            classes = str(getattr(m, "classes", "")) or "?"
            mods = ", ".join(getattr(m, "modalities", None) or []) or "?"  # a plugin loader may not say
            out.append(DatasetStatus(name, m.loader, m.description, classes, mods, "built-in", "", "built-in"))
            continue
        from pdmp_cli.data.loaders.files import resolve_root

        root, source = resolve_root(m, data_root)
        classes = (str(len(m.classes)) if m.classes is not None
                   else Path(m.classes_file).name if m.classes_file else "from lists")
        mods = ", ".join(m.modalities)
        if not root.is_dir():
            status, detail = "missing", ""
        else:
            specs = [getattr(m.splits, s) for s in m.splits.names()]
            lists = {f for sp in specs for f in (sp.list, sp.labels) if f} | ({m.classes_file} if m.classes_file else set())
            absent = sorted(f for f in lists if not (root / f).is_file())
            status, detail = ("incomplete", "missing " + ", ".join(absent)) if absent else ("present", "")
        out.append(DatasetStatus(name, m.loader, m.description, classes, mods, str(root), source, status, detail))
    return out
