"""Files pdmp ships: the built-in dataset manifests and the paper's reference profiles.

In a checkout they are the top-level folders ``data_manifests/`` and ``profiles/`` (where
users asked for them). A wheel or a non-editable ``pip install .`` carries the same files as
the resource packages ``pdmp_cli._manifests`` and ``pdmp_cli._profiles``: ``pyproject.toml``
maps those package names onto the two folders (setuptools ``package-dir``), so nothing is
copied or moved in the source tree. They are found through :mod:`importlib.resources`, and,
when that package is absent (a checkout on ``PYTHONPATH``, an editable install made before
the mapping existed), in the checkout's folder.

Only the reference profiles (``*.paper.json``) are shipped: ``profiles/`` is also where
``pdmp analyze`` writes its own.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from pdmp_cli.errors import PdmpError

MANIFESTS_PACKAGE = "pdmp_cli._manifests"
PROFILES_PACKAGE = "pdmp_cli._profiles"
REFERENCE_SUFFIX = ".paper.json"
_CHECKOUT = Path(__file__).resolve().parents[1]


def _folder(package: str, checkout_folder: str) -> Path | None:
    """The folder holding ``package``'s files on disk, else the checkout's ``checkout_folder``."""
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        root = None
    if root is not None:
        # an installed resource package has no __init__.py (it is the plain folder), so
        # importlib gives a namespace path; pip installs it as a real folder on disk
        for p in getattr(root, "_paths", [root]):
            if Path(str(p)).is_dir():
                return Path(str(p))
    local = _CHECKOUT / checkout_folder
    return local if local.is_dir() else None


def manifests_dir() -> Path | None:
    """Where the built-in manifests are (None: this installation has none)."""
    return _folder(MANIFESTS_PACKAGE, "data_manifests")


def profiles_dir() -> Path | None:
    """Where the reference profiles are (None: this installation has none)."""
    return _folder(PROFILES_PACKAGE, "profiles")


def reference_profiles() -> list[str]:
    """Names of the shipped reference profiles (``cremad.paper``, ...)."""
    d = profiles_dir()
    return sorted(p.name.removesuffix(".json") for p in d.glob(f"*{REFERENCE_SUFFIX}")) if d else []


def profile_path(name_or_path: str | os.PathLike) -> Path:
    """A profile path as given, or a reference profile's name (``cremad.paper``) -> its file.

    A name without ``.json`` and without a folder is looked up among the shipped reference
    profiles, so ``--profile cremad.paper`` works wherever pdmp is installed.
    """
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists() or len(p.parts) != 1:
        return p
    d = profiles_dir()
    cand = d / f"{p.name}.json" if d else None
    if cand is None or not cand.name.endswith(REFERENCE_SUFFIX) or not cand.is_file():
        names = ", ".join(reference_profiles()) or "none in this installation"
        raise PdmpError(
            f"profile {str(name_or_path)!r} is neither a file nor a reference profile ({names}); "
            "give the path to a profile .json (from `pdmp analyze` or `pdmp profile new`)",
            2,
        )
    return cand
