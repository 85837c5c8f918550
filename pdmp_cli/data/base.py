"""What every dataset loader returns, and the loader registry."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from pdmp_cli.registry import Registry

# loader name -> class with a pydantic ``Manifest`` model and ``build(manifest, data_root) -> DatasetBundle``
LOADERS: Registry = Registry("dataset loader")
register_loader = LOADERS.register


def manifest_dir() -> Path:
    """``$PDMP_MANIFESTS``, else the built-in manifests (``data_manifests/``, shipped in the
    package: :mod:`pdmp_cli.resources`)."""
    from pdmp_cli import resources

    env = os.environ.get("PDMP_MANIFESTS")
    return Path(env) if env else resources.manifests_dir() or Path(__file__).resolve().parents[2] / "data_manifests"


def check_command(manifest, data_root: str | os.PathLike | None = None) -> str:
    """The ``pdmp datasets check`` command for this manifest, as a user can paste it: by name for
    a manifest of :func:`manifest_dir`, else by its path (a custom ``my-data/manifest.toml``)."""
    import shlex

    path = getattr(manifest, "_path", None)
    ref = manifest.name if path is None or Path(path).resolve().parent == manifest_dir().resolve() else str(path)
    return shlex.join(["pdmp", "datasets", "check", ref, *(["--data-root", str(data_root)] if data_root else [])])


# A dataset problem, found by `pdmp datasets check` (:mod:`pdmp_cli.data.check`) or by a loader.
KINDS = [
    "missing list", "bad row", "empty split", "unknown label", "duplicate id", "leakage",
    "missing file", "unreadable file", "truncated file", "non-finite file",
]
FATAL = {"missing list", "empty split"}  # skipping samples cannot fix these


@dataclass
class Problem:
    kind: str  # one of KINDS
    split: str | None = None
    path: Path | None = None  # the file at fault
    sample: str | None = None  # sample id, when one sample is at fault
    detail: str = ""
    line: int | None = None  # line of the list file

    def describe(self) -> str:
        where = str(self.path) if self.path else ""
        if self.line is not None:
            where += f":{self.line}"
        sample = self.sample
        if sample is not None and any(ord(c) < 32 or ord(c) == 127 for c in sample):
            sample = repr(sample)  # a newline in an id from a list never breaks the line
        bits = [self.kind, f"[{self.split}]" if self.split else "", where, f"(sample {sample})" if sample else ""]
        text = " ".join(b for b in bits if b)
        return f"{text}: {self.detail}" if self.detail else text


@dataclass
class DatasetBundle:
    """A dataset ready for training: splits of ``({modality: tensor}, label)`` samples.

    ``train`` and ``test`` always; ``val`` is the dataset's *own* validation split (a
    manifest's ``[splits.val]``: AVE's ``valSet.txt``, CeFA's dev list, ...) or ``None`` when
    the dataset ships none (then :mod:`pdmp_cli.data.split` carves one from ``train``).
    ``val`` is evaluated like ``test`` (no augmentation). ``val_labels`` mirrors
    ``train_labels`` (``None`` without ``val``). No sample id is in two splits.

    ``identity`` is a content hash (manifest, generator or file list, ``val`` included): it keys
    caches and is written into profiles, so a profile from other data is recognised.
    """

    name: str
    identity: str
    modalities: list[str]
    in_channels: dict[str, int]
    class_names: list[str]
    train: Any  # torch.utils.data.Dataset
    test: Any
    train_labels: list[int]
    defaults: dict[str, Any] = field(default_factory=dict)  # per-dataset training defaults
    val: Any = None  # torch.utils.data.Dataset | None: the dataset's own validation split
    val_labels: list[int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class TrainDefaults(BaseModel):
    """Per-dataset defaults a manifest may set; command-line flags and spec files override them."""

    model_config = ConfigDict(extra="forbid")

    encoder: str | None = None
    epochs: int | None = Field(None, gt=0)
    early_epochs: int | None = Field(None, gt=0)
    batch_size: int | None = Field(None, gt=0)
    lr: float | None = Field(None, gt=0)
    subset: float | None = Field(None, gt=0, le=1)
    gamma_p: float | None = Field(None, gt=0, description="the paper's best gamma_p for this dataset (Table V)")
    num_workers: int | None = Field(None, ge=0, description="DataLoader workers (decoding real files pays off)")
    method_args: dict[str, dict[str, Any]] | None = Field(
        None, description="method -> its hyperparameters for this dataset ([defaults.method_args.ogm-ge] alpha = ...)"
    )

    def as_overrides(self) -> dict:
        return self.model_dump(exclude_none=True)


class ManifestBase(BaseModel):
    """Fields every manifest has; each loader extends it with its own sections."""

    model_config = ConfigDict(extra="forbid")

    name: str
    loader: str
    description: str = ""
    defaults: TrainDefaults = TrainDefaults()
    _path: Path | None = PrivateAttr(None)
