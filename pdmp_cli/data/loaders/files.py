"""``loader = "files"``: a dataset of files on disk, described by a manifest.

A manifest names the classes, the splits (train and test, optionally val: a list file each, in one of the list formats
below), and per modality a ``kind`` (see :mod:`pdmp_cli.data.modalities`), a ``path`` pattern
and its ``preprocessing``. Patterns are filled with each list row's fields: ``{id}`` always,
plus what the format gives (``{label}``; AVE ``{start}``/``{end}``; CEFA ``{rgb}``...).

List formats (``[splits.<train|val|test>] format``): see :mod:`pdmp_cli.data.lists` (csv,
cremad, ave, kinetics, kslist, vggsound, ucf101, cefa). Duplicate ids and ids in two splits:
the manifest's ``duplicates`` rule, :mod:`pdmp_cli.data.duplicates`. A path pattern must name
a per-sample field (every sample its own file); a ``flow`` path may hold ``{axis}`` for
separate x/y trees (TSN's ``u/`` and ``v/``, see :mod:`pdmp_cli.data.modalities.flow`).

``select`` keeps only rows whose ``split`` column equals it (one csv holding every split).

The data root: ``--data-root`` (``data_root=``) > ``$PDMP_DATA_ROOT_<NAME>`` (name upper-cased,
other characters as ``_``) > the manifest's ``data_root``. A relative ``data_root`` resolves
against ``$PDMP_DATA_ROOT`` (default ``./data``) for the manifests shipped in
``data_manifests/``, and against the manifest's own folder for a manifest you wrote.
"""

from __future__ import annotations

import csv
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from torch.utils.data import Dataset

from pdmp_cli.cache import stable_hash
from pdmp_cli.data.base import DatasetBundle, ManifestBase, Problem, check_command, manifest_dir, register_loader
from pdmp_cli.data import duplicates as dup
from pdmp_cli.data.confine import UNSAFE_TAIL, UnsafePath, confine
from pdmp_cli.data.lists import SPLIT_COLUMN, Row, read_classes_file, read_labels, read_rows
from pdmp_cli.data.modalities import MODALITIES, BadFile, Modality
from pdmp_cli.data.store import PackedSpec
from pdmp_cli.errors import PdmpError, format_error

Format = Literal["csv", "cremad", "ave", "kinetics", "kslist", "vggsound", "ucf101", "cefa"]


class SplitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    list: str = Field(description="list file, relative to the data root")
    format: Format = "csv"
    select: str | None = Field(None, description="keep rows whose split column equals this")
    labels: str | None = Field(None, description="cefa: '<video> <label>' file labelling an unlabelled list")
    ids: Literal["auto", "padded", "plain"] = Field(
        "auto", description="vggsound/kinetics: clip names <yt>_<start:06d>... (padded) or <yt>_<start> (plain)")

    @model_validator(mode="after")
    def _select(self):
        if self.select is not None and self.format not in SPLIT_COLUMN:
            raise ValueError(f"select works with formats {sorted(SPLIT_COLUMN)}, got format {self.format!r}")
        if self.labels is not None and self.format != "cefa":
            raise ValueError(f"labels works with format 'cefa', got format {self.format!r}")
        return self


class Splits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: SplitSpec
    test: SplitSpec
    val: SplitSpec | None = Field(None, description="the dataset's own validation split (optional)")

    def names(self) -> list[str]:
        """The splits this manifest has, in reading order: train, [val,] test."""
        return ["train"] + (["val"] if self.val is not None else []) + ["test"]

    def identity(self) -> dict:
        """What of the splits enters the dataset identity. Keys added later (``val``, a split's
        ``labels`` and ``ids``) enter only when set, so older manifests keep their identity."""
        out = {}
        for name in self.names():
            spec = getattr(self, name)
            out[name] = spec.model_dump(exclude={k for k in ("labels", "ids") if k not in spec.model_fields_set})
        return out


_FIELD = re.compile(r"\{(?!axis\})[^{}]+\}")  # a {field} of the list rows ({axis} is flow's, not a row's)


class ModalitySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="modality kind: audio, frames, image, flow, npy")
    path: str = Field(description="path pattern under the data root, e.g. 'audio/{id}.wav'")
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    _modality: Modality | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _build(self):
        if not _FIELD.search(self.path):
            raise ValueError(f"path {self.path!r} names no per-sample field, so every sample would read the same "
                             "file; put {id} in it (e.g. 'audio/{id}.wav')")
        parts = self.path.replace("\\", "/").split("/")
        if self.path.startswith(("/", "\\")) or ".." in parts:
            raise ValueError(f"path {self.path!r} leads outside the data root; write it relative to the root "
                             "(e.g. 'audio/{id}.wav') and point data_root (or --data-root) at the folder above")
        if self.kind not in MODALITIES:
            raise ValueError(f"kind must be one of {', '.join(MODALITIES.names())}, got {self.kind!r}")
        cls = MODALITIES.get(self.kind)
        try:
            prep = cls.Preprocessing.model_validate(self.preprocessing)
        except ValidationError as e:
            errs = [{**err, "loc": ("preprocessing", *err["loc"])} for err in e.errors()]
            raise ValueError("; ".join(format_error(err) for err in errs)) from None
        self._modality = cls(prep)
        return self

    @property
    def modality(self) -> Modality:
        return self._modality


class PrepareSpec(BaseModel):
    """How ``pdmp prepare`` turns raw videos into this manifest's files."""

    model_config = ConfigDict(extra="forbid")

    video: str = Field("{id}.mp4", description="each clip's video, relative to --videos")
    fps: float = Field(1.0, gt=0, description="frames written per second of video")
    start: str | None = Field(None, description="row field with the segment start in seconds (AVE)")
    end: str | None = Field(None, description="row field with the segment end in seconds")
    frame_format: Literal["jpg", "png"] = "jpg"
    short_side: int | None = Field(None, ge=8, description="resize frames so the short side is this (default: keep)")


class FilesManifest(ManifestBase):
    data_root: str = Field(".", description="where the files are (see the module docstring)")
    classes: list[str] | None = Field(None, description="class names in label order; default: sorted train labels")
    classes_file: str | None = Field(None, description="file of class names ('<k> <name>' or '<name>' per line)")
    splits: Splits
    modalities: dict[str, ModalitySpec] = Field(min_length=1)
    prepare: PrepareSpec | None = None
    duplicates: Literal["refuse", "first", "last", "drop"] = Field(
        "refuse", description="duplicate ids and ids in two splits: see pdmp_cli.data.duplicates")
    packed: PackedSpec = Field(default_factory=PackedSpec, description="the packed store (pdmp_cli.data.store)")

    @model_validator(mode="after")
    def _classes(self):
        if self.classes is not None and self.classes_file is not None:
            raise ValueError("give classes or classes_file, not both")
        if self.classes is not None:
            if len(self.classes) < 2:
                raise ValueError(f"classes needs at least 2 names, got {self.classes}")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"classes has duplicate names, got {self.classes}")
        return self


# --------------------------------------------------------------------------- data root


def is_builtin(manifest) -> bool:
    p = manifest._path
    return p is not None and p.resolve().parent == manifest_dir().resolve()


def root_env_var(name: str) -> str:
    return "PDMP_DATA_ROOT_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def resolve_root(manifest, data_root=None) -> tuple[Path, str]:
    """(data root, where it came from)."""
    if data_root:
        return Path(data_root).expanduser(), "--data-root"
    env = root_env_var(manifest.name)
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser(), f"${env}"
    root = Path(manifest.data_root).expanduser()
    if root.is_absolute():
        return root, "manifest"
    if is_builtin(manifest) or manifest._path is None:
        base = os.environ.get("PDMP_DATA_ROOT")
        return (Path(base).expanduser() if base else Path("data")) / root, ("$PDMP_DATA_ROOT" if base else "./data")
    return manifest._path.parent / root, "manifest folder"


def _int_like(s: str) -> bool:
    return bool(re.fullmatch(r"[+-]?\d+", s.strip()))


# --------------------------------------------------------------------------- index


@dataclass
class Sample:
    id: str
    label: int
    paths: dict[str, Path]  # modality -> file or folder
    line: int = 0
    fields: dict[str, str] = field(default_factory=dict)  # the list row (pdmp prepare reads start/end)


@dataclass
class Index:
    """A dataset's lists read and checked for structure (no sample file is opened)."""

    name: str
    root: Path
    root_source: str
    class_names: list[str]
    modalities: dict[str, Modality]
    splits: dict[str, list[Sample]]
    problems: list[Problem] = field(default_factory=list)
    list_files: list[Path] = field(default_factory=list)
    dropped: list[Problem] = field(default_factory=list)  # rows left out on purpose (kind "dropped")
    unsafe: list[Problem] = field(default_factory=list)  # rows whose paths would leave the data root (also in problems)


def _fill(manifest: FilesManifest, m: str, r: dict, root: Path, fmt: str) -> Path:
    """The file of modality ``m`` for list row ``r``. Raises :class:`UnsafePath` if the row's
    fields would lead outside the data root (see :func:`confine`)."""
    mspec = manifest.modalities[m]
    fields = {**r, "axis": "{axis}"} if mspec.kind == "flow" else r
    try:
        rel = mspec.path.format_map(fields)
    except (KeyError, IndexError, ValueError) as e:
        raise PdmpError(
            f"manifest {manifest.name}: modalities.{m}.path {mspec.path!r} uses a field the "
            f"{fmt} lists do not give ({e}); available: {', '.join('{' + k + '}' for k in r)}", 2
        ) from None
    confine(root, rel.replace("{axis}", "x"))
    return root / rel


def _unsafe_row(split: str, list_path: Path, n: int, r: dict, m: str, why: str) -> Problem:
    return Problem("bad row", split, list_path, line=n,
                   detail=f"id {r.get('id', '')!r} gives the {m} path {why}; {UNSAFE_TAIL}")


def _exists(p: Path) -> bool:
    return p.exists() if "{axis}" not in str(p) else p.parent.parent.is_dir()


def _pick_ids(manifest: FilesManifest, split_rows: list[Row], root: Path, spec: SplitSpec) -> None:
    """Rows with an ``id_plain`` (vggsound, kinetics): use the clip name the files on disk have."""
    if not split_rows or "id_plain" not in split_rows[0][1] or spec.ids == "padded":
        return
    plain = spec.ids == "plain"
    if spec.ids == "auto":
        m = next(iter(manifest.modalities))
        for _, r in split_rows[:50]:
            try:
                if _exists(_fill(manifest, m, r, root, spec.format)):
                    break
                if _exists(_fill(manifest, m, {**r, "id": r["id_plain"]}, root, spec.format)):
                    plain = True
                    break
            except UnsafePath:  # reported when the rows are indexed; never looked at
                continue
    if plain:
        for _, r in split_rows:
            r["id_padded"], r["id"] = r["id"], r["id_plain"]


def index_dataset(manifest: FilesManifest, data_root=None) -> Index:
    """Read the manifest's lists -> :class:`Index`. Raises PdmpError if the data root is missing,
    a list is not UTF-8, or a path pattern names a field the list format does not give or gives
    two samples the same file."""
    root, source = resolve_root(manifest, data_root)
    if not root.is_dir():
        raise PdmpError(
            f"data root {root} of dataset {manifest.name} does not exist (from {source}); put the data there "
            f"(see the comments in its manifest), or pass --data-root DIR, or set {root_env_var(manifest.name)}", 2)
    problems: list[Problem] = []
    dropped: list[Problem] = []
    rows: dict[str, list[Row]] = {}
    list_files = []
    for split in manifest.splits.names():
        spec = getattr(manifest.splits, split)
        path = root / spec.list
        list_files.append(path)
        if not path.is_file():
            problems.append(Problem("missing list", split, path, detail=f"{split} list ({spec.format} format) not found"))
            rows[split] = []
            continue
        labels = None
        if spec.labels is not None:
            lpath = root / spec.labels
            list_files.append(lpath)
            if not lpath.is_file():
                problems.append(Problem("missing list", split, lpath, detail=f"{split} labels file not found"))
            else:
                labels = read_labels(lpath)
        rows[split] = read_rows(spec.format, path, root, problems, dropped, split, spec.select, labels)
        _pick_ids(manifest, rows[split], root, spec)
    rows, dup_problems, dup_dropped = dup.resolve(
        rows, {s: root / getattr(manifest.splits, s).list for s in rows}, manifest.duplicates)
    problems += dup_problems
    dropped += dup_dropped

    if manifest.classes is not None:
        class_names = list(manifest.classes)
    elif manifest.classes_file is not None:
        cpath = root / manifest.classes_file
        list_files.append(cpath)
        if not cpath.is_file():
            problems.append(Problem("missing list", None, cpath, detail="classes_file not found"))
            class_names = []
        else:
            class_names = read_classes_file(cpath)
    else:  # the labels of the training list
        labels = {r["label"] for _, r in rows["train"]}
        class_names = sorted(labels, key=int) if labels and all(map(_int_like, labels)) else sorted(labels)
    lookup = {c: k for k, c in enumerate(class_names)}

    mods = {m: spec.modality for m, spec in manifest.modalities.items()}
    splits: dict[str, list[Sample]] = {}
    no_classes = not class_names and manifest.classes is None and manifest.classes_file is None
    for split in manifest.splits.names():
        spec = getattr(manifest.splits, split)
        if no_classes and split != "train":  # an empty training list: its "empty split" is the one problem,
            splits[split] = []  # not one "unknown label" per sample of the other splits
            continue
        out = []
        owners: dict[str, dict[Path, str]] = {m: {} for m in manifest.modalities}
        for n, r in rows[split]:
            text = r["label"]
            if text in lookup:
                y = lookup[text]
            elif _int_like(text) and 0 <= int(text) < len(class_names):
                y = int(text)
            else:
                problems.append(Problem("unknown label", split, root / spec.list, r["id"], line=n,
                                        detail=f"label {text!r} is not one of the {len(class_names)} classes"))
                continue
            try:
                paths = {}
                for m in manifest.modalities:
                    paths[m] = _fill(manifest, m, r, root, spec.format)
            except UnsafePath as e:
                problems.append(_unsafe_row(split, root / spec.list, n, r, m, f"{manifest.modalities[m].path!r}, "
                                            f"which {e}"))
                continue
            for m, p in paths.items():
                other = owners[m].setdefault(p, r["id"])
                if other != r["id"]:
                    raise PdmpError(
                        f"manifest {manifest.name}: modalities.{m}.path {manifest.modalities[m].path!r} gives samples "
                        f"{other} and {r['id']} ({split}) the same file {p}; put a per-sample field such as {{id}} in it", 2)
            out.append(Sample(r["id"], y, paths, n, r))
        if not out and not any(p.kind == "missing list" and p.split == split for p in problems):
            problems.append(Problem("empty split", split, root / spec.list, detail=f"no usable {split} samples"))
        splits[split] = out
    unsafe = [p for p in problems if p.kind == "bad row" and p.detail.endswith(UNSAFE_TAIL)]
    return Index(manifest.name, root, source, class_names, mods, splits, problems, list_files, dropped, unsafe)


# --------------------------------------------------------------------------- torch side


class FilesSplit(Dataset):
    """A torch Dataset: ``(inputs: {modality: float tensor}, label: int)`` per sample.

    Each modality's file goes through the features cache (decode once), then the modality's
    ``finish`` (random crop/flip/frame choice when ``train``). Safe with DataLoader workers.
    ``mtimes``: a digest of every sample file's modification time when the lists were read (see
    :func:`_stat`); the packed store records it and repacks when it moves.
    """

    def __init__(self, dataset: str, samples: list[Sample], modalities: dict[str, Modality], train: bool, features,
                 check: str | None = None, mtimes: str | None = None):
        self.dataset = dataset
        self.check = check or f"pdmp datasets check {dataset}"  # the command that lists every bad file
        self.samples = samples
        self.modalities = modalities
        self.train = train
        self.features = features
        self.mtimes = mtimes

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        out = {}
        for m, mod in self.modalities.items():
            try:
                decoded = self.features.load(mod, s.paths[m])
            except BadFile as e:
                raise PdmpError(f"{e}; run `{self.check}` to list every bad file, "
                                "or pass --skip-bad") from None
            out[m] = mod.finish(decoded, self.train)
        return out, s.label


def _stat(p: Path, mod: Modality) -> tuple[int, list[int]]:
    """A sample's file (or folder of frames) -> (byte size or frame count, [mtime in ns] per file or
    folder stat'ed); (-1, [-1]) when it cannot be read. A folder's mtime moves when a frame is
    added, removed or renamed into it, not when one is rewritten in place."""
    axes = getattr(mod.prep, "axes", ()) if "{axis}" in str(p) else ()
    try:
        if axes:  # separate x/y flow trees: the frames of both
            folders = [str(p).replace("{axis}", a) for a in axes]
            return sum(len(os.listdir(f)) for f in folders), [os.stat(f).st_mtime_ns for f in folders]
        info = p.stat()
        return (len(os.listdir(p)) if stat.S_ISDIR(info.st_mode) else info.st_size), [info.st_mtime_ns]
    except OSError:
        return -1, [-1]


def _file_stats(samples: list[Sample], root: Path, mods: dict[str, Modality]) -> tuple[list, list[int]]:
    """Every sample file -> ``(relative path, size)`` for the dataset identity, and its modification
    times for the packed store (:mod:`pdmp_cli.data.store`); one ``stat()`` per file or folder."""
    sizes, mtimes = [], []
    for s in samples:
        for m, p in s.paths.items():
            size, t = _stat(p, mods[m])
            sizes.append((str(p.relative_to(root)) if p.is_relative_to(root) else str(p), size))
            mtimes += t
    return sizes, mtimes


def file_mtimes(samples: list[Sample], mods: dict[str, Modality]) -> list[int]:
    """The modification times (ns) of ``samples``' files, as :attr:`FilesSplit.mtimes` digests them."""
    return [t for s in samples for m, p in s.paths.items() for t in _stat(p, mods[m])[1]]


@register_loader("files")
class FilesLoader:
    Manifest = FilesManifest

    @staticmethod
    def build(manifest: FilesManifest, data_root=None, *, exclude=(), skip_bad: bool = False,
              features=None) -> DatasetBundle:
        """Lists -> DatasetBundle. ``exclude``: (split, sample id) pairs to leave out (from
        :func:`pdmp_cli.data.check.check_dataset`). A label outside the class list raises
        PdmpError unless ``skip_bad``. Sample files are not opened here except one per ``npy``
        modality (for its channel count); :func:`~pdmp_cli.data.check.load_checked` validates them."""
        from pdmp_cli.data.features import FeatureCache

        idx = index_dataset(manifest, data_root)
        fatal = [p for p in idx.problems if p.kind in ("missing list", "empty split")]
        if fatal:
            raise PdmpError(f"dataset {manifest.name}: {fatal[0].describe()}; fix the lists or the manifest "
                            f"(`{check_command(manifest, data_root)}` shows everything)")
        labels_bad = [p for p in idx.problems if p.kind in ("unknown label", "bad row", "duplicate id", "leakage")]
        if labels_bad and not skip_bad:
            raise PdmpError(f"dataset {manifest.name}: {len(labels_bad)} list rows are unusable, first: "
                            f"{labels_bad[0].describe()}; fix the lists or the manifest's classes, or pass --skip-bad")
        exclude = set(exclude)
        splits = {sp: [s for s in v if (sp, s.id) not in exclude] for sp, v in idx.splits.items()}
        for sp, v in splits.items():
            if not v:
                raise PdmpError(f"dataset {manifest.name}: the {sp} split is empty after leaving out bad samples; "
                                f"fix the data (`{check_command(manifest, data_root)}`)")

        features = features or FeatureCache()
        in_channels = {}
        for m, mod in idx.modalities.items():
            try:
                in_channels[m] = mod.channels(example=splits["train"][0].paths[m])
            except BadFile as e:
                raise PdmpError(f"{e}; run `{check_command(manifest, data_root)}`") from None

        stats = {sp: _file_stats(v, idx.root, idx.modalities) for sp, v in splits.items()}
        lists = []
        for p in idx.list_files:
            lists.append(stable_hash(p.read_bytes().decode("utf-8", "replace")) if p.is_file() else None)
        identity = stable_hash({
            "loader": "files",
            "classes": idx.class_names,
            "splits": manifest.splits.identity(),
            "modalities": {m: [s.kind, s.path, s.modality.prep.model_dump()] for m, s in manifest.modalities.items()},
            "lists": lists,
            "files": {sp: sizes for sp, (sizes, _) in stats.items()},
        })  # no modification time: the identity is the content's (profiles are matched on it across machines)
        mtimes = {sp: stable_hash(t) for sp, (_, t) in stats.items()}

        check = check_command(manifest, data_root)
        train = FilesSplit(manifest.name, splits["train"], idx.modalities, True, features, check, mtimes["train"])
        test = FilesSplit(manifest.name, splits["test"], idx.modalities, False, features, check, mtimes["test"])
        val = FilesSplit(manifest.name, splits["val"], idx.modalities, False, features, check,
                         mtimes["val"]) if "val" in splits else None
        return DatasetBundle(
            name=manifest.name,
            identity=identity,
            modalities=list(manifest.modalities),
            in_channels=in_channels,
            class_names=idx.class_names,
            train=train,
            test=test,
            train_labels=train.labels,
            defaults=manifest.defaults.as_overrides(),
            val=val,
            val_labels=val.labels if val is not None else None,
        )
