"""A built wheel is complete and its ``pdmp`` works outside the checkout (issue 15, item 1).

The wheel is built from a copy of the source (so the checkout gets no build/ or egg-info),
installed with ``pip install --no-deps --target`` into a temporary folder, and run from
another temporary folder with only that folder on ``PYTHONPATH``: nothing can come from the
checkout.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pdmp_cli", "data_manifests", "profiles", "pyproject.toml", "setup.py", "README.md", "LICENSE"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(p, src / name)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(dist), "."],
        cwd=src, check=True, capture_output=True,
    )
    [whl] = dist.glob("pdmp-*.whl")
    return whl


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "pdmp_cli").rglob("__init__.py")}
    missing = sorted(p for p in packages if f"{p}/__init__.py" not in names)
    assert not missing, f"code packages left out of the wheel: {missing}"
    manifests = {f"pdmp_cli/_manifests/{p.name}" for p in (ROOT / "data_manifests").glob("*.toml")}
    assert manifests and manifests <= names
    shipped_profiles = {n for n in names if n.startswith("pdmp_cli/_profiles/")}
    # only the reference profiles: profiles/ is also where `pdmp analyze` writes a user's own
    assert shipped_profiles == {f"pdmp_cli/_profiles/{p.name}" for p in (ROOT / "profiles").glob("*.paper.json")}
    assert len(shipped_profiles) >= 4

    [meta_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = email.message_from_bytes(zipfile.ZipFile(wheel).read(meta_name))
    from pdmp_cli import __version__

    assert meta["Version"] == __version__
    assert meta["License-Expression"] == "MIT"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "Intended Audience :: Science/Research" in meta.get_all("Classifier")
    assert any(u.startswith("Paper, https://arxiv.org/abs/2604.05773") for u in meta.get_all("Project-URL"))
    assert "pyyaml>=6" in meta.get_all("Requires-Dist")
    assert any("tensorboard" in r and 'extra == "tensorboard"' in r for r in meta.get_all("Requires-Dist"))


@pytest.mark.slow  # installs the wheel and runs the demo from it: a release check (make test-slow)
def test_installed_wheel_runs_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        check=True, capture_output=True,
    )
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("PDMP_MANIFESTS", None)

    def pdmp(*args):  # the installed console script
        r = subprocess.run([str(site / "bin" / "pdmp"), *args], cwd=cwd, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout

    from pdmp_cli import __version__

    assert pdmp("--version").strip() == f"pdmp {__version__}"
    # one interpreter: where everything comes from, then `pdmp datasets` and `pdmp profile show`
    probe = """
import pdmp_cli, pdmp_cli.resources as r
from typer.testing import CliRunner
from pdmp_cli.cli.app import app
print(pdmp_cli.__file__); print(r.manifests_dir()); print(r.profiles_dir())
for args in (["datasets"], ["profile", "show", "cremad.paper"]):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    print(res.output)
"""
    out = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    where = out.stdout.splitlines()[:3]
    assert all(Path(w).is_relative_to(site) for w in where), where  # nothing from the checkout
    for name in ("synthetic", "synthetic-ave", "cremad", "ucf101", "cefa"):
        assert f" {name} " in out.stdout
    assert "performance-dominant   visual" in out.stdout

    demo = pdmp("demo", "--epochs", "1", "--out", "demo")
    assert (cwd / "demo" / "profiles" / "synthetic.json").is_file()
    assert len(list((cwd / "demo" / "runs").glob("*/summary.json"))) == 3
    assert "vanilla" in demo and "pdmp" in demo
