"""Finding, reading and validating dataset manifests (TOML)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import ValidationError

from pdmp_cli.data.base import manifest_dir
from pdmp_cli.errors import PdmpError, format_validation_error


def list_manifests() -> list[str]:
    d = manifest_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def manifest_path(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise PdmpError(f"manifest file {p} does not exist; give a dataset name or a path to a .toml manifest", 2)
        return p
    cand = manifest_dir() / f"{name_or_path}.toml"
    if not cand.is_file():
        raise PdmpError(
            f"unknown dataset {str(name_or_path)!r}; choose one of: {', '.join(list_manifests())} "
            "(or give the path to your own manifest .toml)",
            exit_code=2,
        )
    return cand


def _nonfinite(obj, where: str = "") -> tuple[str, float] | None:
    """The first (dotted key, value) of ``obj`` (nested tables and lists) that is an inf or nan."""
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        return where, obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        if found := _nonfinite(v, f"{where}.{k}" if where else str(k)):
            return found
    return None


def load_manifest(name_or_path: str | os.PathLike):
    """Read and validate a manifest with its loader's pydantic model."""
    import pdmp_cli.data.loaders  # noqa: F401  (registers the loaders)
    from pdmp_cli.data.base import LOADERS

    path = manifest_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise PdmpError(f"manifest {path} is not valid TOML ({e}); fix the file", exit_code=2) from None
    loader_name = raw.get("loader")
    if loader_name is None:
        raise PdmpError(f"manifest {path} has no 'loader' key; add loader = one of {LOADERS.names()}", 2)
    if not isinstance(loader_name, str) or loader_name not in LOADERS:
        raise PdmpError(f"manifest {path}: loader must be one of {LOADERS.names()}, got {loader_name!r}", 2)
    if bad := _nonfinite(raw):  # TOML has inf and nan; no manifest setting is one
        raise PdmpError(f"manifest {path}: {bad[0]} must be a finite number, got {bad[1]!r}", 2)
    loader = LOADERS.get(loader_name)
    # no name = ...: the file's stem, but a folder laid out as docs/datasets.md shows (my-data/manifest.toml)
    # is named by its folder, so two custom datasets do not share profiles/manifest.json
    raw.setdefault("name", path.resolve().parent.name if path.stem == "manifest" else path.stem)
    try:
        manifest = loader.Manifest.model_validate(raw)
    except ValidationError as e:
        raise PdmpError(f"manifest {path}: {format_validation_error(e)}", exit_code=2) from None
    manifest._path = path  # where relative data paths resolve from
    return manifest


def load_dataset(name_or_path: str | os.PathLike, data_root: str | os.PathLike | None = None):
    """Manifest name or path -> :class:`~pdmp_cli.data.base.DatasetBundle`."""
    from pdmp_cli.data.base import LOADERS

    manifest = load_manifest(name_or_path)
    return LOADERS.get(manifest.loader).build(manifest, data_root=data_root)
