"""``loader = "files"``: a dataset of files on disk, described by a manifest.

A manifest names the classes, the splits (train and test, optionally val: a list file each, in one of the list formats
below), and per modality a ``kind`` (see :mod:`pdmp_cli.data.modalities`), a ``path`` pattern
and its ``preprocessing``. Patterns are filled with each list row's fields: ``{id}`` always,
plus what the format gives (``{label}``; AVE ``{start}``/``{end}``; CEFA ``{rgb}``...).

List formats (``[splits.<train|val|test>] format``):

  ``csv``       header row with ``id`` and ``label`` columns (others become fields); labels are
                class names or integer indices
  ``cremad``    OGM-GE's CREMA-D ``train.csv``/``test.csv``: rows ``clip_id,EMOTION``, no header
  ``ave``       AVE's ``&``-separated lines ``Category&VideoID&Quality&StartTime&EndTime``
  ``kinetics``  Kinetics csv with header ``label,youtube_id,time_start,time_end[,split]``;
                id = ``<youtube_id>_<time_start:06d>_<time_end:06d>`` (the usual clip name)
  ``vggsound``  VGGSound's ``vggsound.csv``: rows ``youtube_id,start_seconds,label,split``,
                no header; id = ``<youtube_id>_<start:06d>``
  ``ucf101``    ``trainlist01.txt`` / ``testlist01.txt`` lines ``Class/v_Class_g08_c01.avi [k]``;
                id = the video's stem, label = its class folder
  ``cefa``      CASIA-SURF-style protocol lines ``<rgb> <depth> <ir> <label>`` (paths relative
                to the data root, label 1 live / 0 spoof); id = the rgb path

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from torch.utils.data import Dataset

from pdmp_cli.cache import stable_hash
from pdmp_cli.data.base import DatasetBundle, ManifestBase, register_loader
from pdmp_cli.data.check import Problem
from pdmp_cli.data.modalities import MODALITIES, BadFile, Modality
from pdmp_cli.errors import PdmpError

Format = Literal["csv", "cremad", "ave", "kinetics", "vggsound", "ucf101", "cefa"]
_SPLIT_COLUMN = {"csv", "kinetics", "vggsound"}  # formats that can carry a split column


class SplitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    list: str = Field(description="list file, relative to the data root")
    format: Format = "csv"
    select: str | None = Field(None, description="keep rows whose split column equals this")

    @model_validator(mode="after")
    def _select(self):
        if self.select is not None and self.format not in _SPLIT_COLUMN:
            raise ValueError(f"select works with formats {sorted(_SPLIT_COLUMN)}, got format {self.format!r}")
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
        """What of the splits enters the dataset identity (no ``val`` key when there is none,
        so identities of manifests written before ``[splits.val]`` existed do not change)."""
        return self.model_dump(exclude={"val"} if self.val is None else set())


class ModalitySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="modality kind: audio, frames, image, flow, npy")
    path: str = Field(description="path pattern under the data root, e.g. 'audio/{id}.wav'")
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    _modality: Modality | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _build(self):
        from pdmp_cli.specs import _one

        if self.kind not in MODALITIES:
            raise ValueError(f"kind must be one of {', '.join(MODALITIES.names())}, got {self.kind!r}")
        cls = MODALITIES.get(self.kind)
        try:
            prep = cls.Preprocessing.model_validate(self.preprocessing)
        except ValidationError as e:
            errs = [{**err, "loc": ("preprocessing", *err["loc"])} for err in e.errors()]
            raise ValueError("; ".join(_one(err) for err in errs)) from None
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
    from pdmp_cli.data.manifest import manifest_dir

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


# --------------------------------------------------------------------------- list formats

Row = tuple[int, dict[str, str]]  # (line number, fields)


def _csv_rows(path: Path, problems: list[Problem], split: str, select: str | None) -> list[Row]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        if "id" not in cols or "label" not in cols:
            problems.append(Problem("bad row", split, path, line=1, detail=f"needs a header row with id,label columns, got {cols}"))
            return []
        rows = []
        for rec in reader:
            rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items()}
            if not rec.get("id") or rec.get("label", "") == "":
                problems.append(Problem("bad row", split, path, line=reader.line_num, detail="empty id or label"))
                continue
            if select is not None and rec.get("split") != select:
                continue
            rows.append((reader.line_num, rec))
    return rows


def _plain_rows(path: Path, problems, split, select, fmt: str) -> list[Row]:
    rows = []
    with open(path, newline="") as f:
        lines = list(csv.reader(f)) if fmt in ("cremad", "vggsound") else [ln.rstrip("\n") for ln in f]
    for n, raw in enumerate(lines, start=1):
        if fmt in ("cremad", "vggsound"):
            cells = [c.strip() for c in raw]
            if not any(cells):
                continue
        else:
            if not raw.strip():
                continue
            cells = [c.strip() for c in raw.split("&")] if fmt == "ave" else raw.split()

        def bad(msg):
            problems.append(Problem("bad row", split, path, line=n, detail=msg))

        if fmt == "cremad":
            if len(cells) < 2:
                bad(f"expected clip_id,EMOTION, got {raw}")
                continue
            rows.append((n, {"id": cells[0], "label": cells[1]}))
        elif fmt == "ave":
            if len(cells) != 5:
                bad(f"expected Category&VideoID&Quality&StartTime&EndTime, got {raw!r}")
                continue
            if cells[1] == "VideoID":  # Annotations.txt header
                continue
            rows.append((n, dict(zip(["label", "id", "quality", "start", "end"], cells))))
        elif fmt == "vggsound":
            if len(cells) < 4 or not cells[1].isdigit():
                bad(f"expected youtube_id,start_seconds,label,split, got {raw}")
                continue
            if select is not None and cells[3] != select:
                continue
            yt, start = cells[0], int(cells[1])
            rows.append((n, {"id": f"{yt}_{start:06d}", "youtube_id": yt, "start_seconds": str(start),
                             "label": cells[2], "split": cells[3]}))
        elif fmt == "ucf101":
            if len(cells) not in (1, 2) or "/" not in cells[0]:
                bad(f"expected 'Class/v_Class_gXX_cXX.avi [k]', got {raw!r}")
                continue
            video = cells[0]
            rows.append((n, {"id": Path(video).stem, "label": video.split("/")[0], "video": video}))
        elif fmt == "cefa":
            if len(cells) != 4:
                bad(f"expected '<rgb> <depth> <ir> <label>', got {raw!r}")
                continue
            rows.append((n, {"id": cells[0], "rgb": cells[0], "depth": cells[1], "ir": cells[2], "label": cells[3]}))
    return rows


def _kinetics_rows(path: Path, problems, split, select) -> list[Row]:
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"label", "youtube_id", "time_start", "time_end"}
        cols = set(reader.fieldnames or [])
        if not need <= cols:
            problems.append(Problem("bad row", split, path, line=1, detail=f"needs header columns {sorted(need)}, got {sorted(cols)}"))
            return []
        for rec in reader:
            try:
                ts, te = int(float(rec["time_start"])), int(float(rec["time_end"]))
            except (TypeError, ValueError):
                problems.append(Problem("bad row", split, path, line=reader.line_num, detail="time_start/time_end are not numbers"))
                continue
            if select is not None and rec.get("split") != select:
                continue
            rec = {k: (v or "").strip() for k, v in rec.items() if k}
            rec["id"] = f"{rec['youtube_id']}_{ts:06d}_{te:06d}"
            rows.append((reader.line_num, rec))
    return rows


def read_list(spec: SplitSpec, path: Path, problems: list[Problem], split: str) -> list[Row]:
    if spec.format == "csv":
        return _csv_rows(path, problems, split, spec.select)
    if spec.format == "kinetics":
        return _kinetics_rows(path, problems, split, spec.select)
    return _plain_rows(path, problems, split, spec.select, spec.format)


def read_classes_file(path: Path) -> list[str]:
    """``classInd.txt`` (``1 ApplyEyeMakeup``) or one name per line."""
    entries = []
    for n, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        tok = line.split(maxsplit=1)
        entries.append((int(tok[0]), tok[1].strip()) if len(tok) == 2 and tok[0].isdigit() else (n, line.strip()))
    return [name for _, name in sorted(entries)]


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


def index_dataset(manifest: FilesManifest, data_root=None) -> Index:
    """Read the manifest's lists -> :class:`Index`. Raises PdmpError if the data root is missing
    or a path pattern names a field the list format does not give."""
    root, source = resolve_root(manifest, data_root)
    if not root.is_dir():
        raise PdmpError(
            f"data root {root} of dataset {manifest.name} does not exist (from {source}); put the data there "
            f"(see the comments in its manifest), or pass --data-root DIR, or set {root_env_var(manifest.name)}", 2)
    problems: list[Problem] = []
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
        rows[split] = read_list(spec, path, problems, split)

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
    for split in manifest.splits.names():
        spec = getattr(manifest.splits, split)
        out = []
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
            paths = {}
            for m, mspec in manifest.modalities.items():
                try:
                    paths[m] = root / mspec.path.format_map(r)
                except (KeyError, IndexError, ValueError) as e:
                    raise PdmpError(
                        f"manifest {manifest.name}: modalities.{m}.path {mspec.path!r} uses a field the "
                        f"{spec.format} lists do not give ({e}); available: {', '.join('{' + k + '}' for k in r)}", 2
                    ) from None
            out.append(Sample(r["id"], y, paths, n, r))
        if not out and not any(p.kind == "missing list" and p.split == split for p in problems):
            problems.append(Problem("empty split", split, root / spec.list, detail=f"no usable {split} samples"))
        splits[split] = out
    return Index(manifest.name, root, source, class_names, mods, splits, problems, list_files)


# --------------------------------------------------------------------------- torch side


class FilesSplit(Dataset):
    """A torch Dataset: ``(inputs: {modality: float tensor}, label: int)`` per sample.

    Each modality's file goes through the features cache (decode once), then the modality's
    ``finish`` (random crop/flip/frame choice when ``train``). Safe with DataLoader workers.
    """

    def __init__(self, dataset: str, samples: list[Sample], modalities: dict[str, Modality], train: bool, features):
        self.dataset = dataset
        self.samples = samples
        self.modalities = modalities
        self.train = train
        self.features = features

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
                raise PdmpError(f"{e}; run `pdmp datasets check {self.dataset}` to list every bad file, "
                                "or pass --skip-bad") from None
            out[m] = mod.finish(decoded, self.train)
        return out, s.label


def _file_sizes(samples: list[Sample], root: Path) -> list:
    out = []
    for s in samples:
        for m, p in s.paths.items():
            try:
                size = len(os.listdir(p)) if p.is_dir() else p.stat().st_size
            except OSError:
                size = -1
            out.append((str(p.relative_to(root)) if p.is_relative_to(root) else str(p), size))
    return out


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
                            f"(`pdmp datasets check {manifest.name}` shows everything)")
        labels_bad = [p for p in idx.problems if p.kind in ("unknown label", "bad row")]
        if labels_bad and not skip_bad:
            raise PdmpError(f"dataset {manifest.name}: {len(labels_bad)} list rows are unusable, first: "
                            f"{labels_bad[0].describe()}; fix the lists or the manifest's classes, or pass --skip-bad")
        exclude = set(exclude)
        splits = {sp: [s for s in v if (sp, s.id) not in exclude] for sp, v in idx.splits.items()}
        for sp, v in splits.items():
            if not v:
                raise PdmpError(f"dataset {manifest.name}: the {sp} split is empty after leaving out bad samples; "
                                f"fix the data (`pdmp datasets check {manifest.name}`)")

        features = features or FeatureCache()
        in_channels = {}
        for m, mod in idx.modalities.items():
            try:
                in_channels[m] = mod.channels(example=splits["train"][0].paths[m])
            except BadFile as e:
                raise PdmpError(f"{e}; run `pdmp datasets check {manifest.name}`") from None

        lists = []
        for p in idx.list_files:
            lists.append(stable_hash(p.read_bytes().decode("utf-8", "replace")) if p.is_file() else None)
        identity = stable_hash({
            "loader": "files",
            "classes": idx.class_names,
            "splits": manifest.splits.identity(),
            "modalities": {m: [s.kind, s.path, s.modality.prep.model_dump()] for m, s in manifest.modalities.items()},
            "lists": lists,
            "files": {sp: _file_sizes(v, idx.root) for sp, v in splits.items()},
        })

        train = FilesSplit(manifest.name, splits["train"], idx.modalities, True, features)
        test = FilesSplit(manifest.name, splits["test"], idx.modalities, False, features)
        val = FilesSplit(manifest.name, splits["val"], idx.modalities, False, features) if "val" in splits else None
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
