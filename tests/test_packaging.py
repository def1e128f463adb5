"""The distribution installs one import package, ``clusterstore``, and nothing else.

A wheel and an editable install are each put into a fresh virtualenv (without dependencies:
the running interpreter's site-packages are lent by a ``.pth`` line that sorts last, so they
come after the fresh venv's own entries); what they add to site-packages is compared with a
bare virtualenv's.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ["audit", "benchmarks", "cli", "clustering", "eventstore", "legacy", "projections"]

# pip builds in the checkout (build/, *.egg-info): one worker, one build at a time
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("packaging")]


LEND = "zzz_lend_dependencies.pth"


def _venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    python = path / "bin" / "python"
    (_site_packages(python) / LEND).write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def _site_packages(python: Path) -> Path:
    out = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def _pip(python: Path, *args: str) -> None:
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            *args,
        ],
        check=True,
        cwd=REPO_ROOT,
    )


def _run(python: Path, code: str, cwd: Path) -> str:
    """Run ``code`` in the fresh venv (away from the checkout, no ``PYTHONPATH``)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=cwd, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _added(python: Path, bare: set[str]) -> set[str]:
    return {p.name for p in _site_packages(python).iterdir()} - bare - {"__pycache__"}


@pytest.fixture(scope="module")
def bare_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    python = _venv(tmp_path_factory.mktemp("bare") / "venv")
    return {p.name for p in _site_packages(python).iterdir()}


IMPORT_CHECK = """
import importlib, importlib.util, clusterstore
names = {SUBS}
for n in names:
    importlib.import_module("clusterstore." + n)
print("top-level:", sorted(n for n in names if importlib.util.find_spec(n) is not None))
print("file:", clusterstore.__file__)
"""


def test_wheel_installs_one_top_level_package(tmp_path: Path, bare_names: set[str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp_path, "."],
        check=True,
        cwd=REPO_ROOT,
    )
    (wheel,) = tmp_path.glob("clusterstore-*.whl")
    python = _venv(tmp_path / "venv")
    _pip(python, str(wheel))

    assert _added(python, bare_names) == {
        "clusterstore",
        f"{wheel.name.split('-py3')[0]}.dist-info",
    }
    site_pkg = _site_packages(python)
    inside = {p.name for p in (site_pkg / "clusterstore").iterdir() if p.is_dir()}
    assert inside - {"__pycache__"} == set(SUBPACKAGES)
    # the report's template is package data
    assert (site_pkg / "clusterstore" / "audit" / "templates" / "report.html").is_file()
    out = _run(python, IMPORT_CHECK.replace("{SUBS}", repr(SUBPACKAGES)), cwd=tmp_path)
    assert "top-level: []" in out
    assert f"file: {site_pkg / 'clusterstore' / '__init__.py'}" in out
    version = _run(
        python,
        "import sys; sys.argv = ['clusterstore', '--version']; import runpy; "
        "runpy.run_module('clusterstore', run_name='__main__')",
        cwd=tmp_path,
    )
    assert version.startswith("clusterstore, version ")


def test_editable_install_maps_the_source_folders(tmp_path: Path, bare_names: set[str]) -> None:
    python = _venv(tmp_path / "venv")
    _pip(python, "-e", ".")

    added = _added(python, bare_names)
    assert not {n for n in added if not n.startswith(("__editable__", "clusterstore-"))}, added
    out = _run(python, IMPORT_CHECK.replace("{SUBS}", repr(SUBPACKAGES)), cwd=tmp_path)
    assert "top-level: []" in out  # `import eventstore`, `import cli`, ... find nothing
    code = "import clusterstore.eventstore.codec as m; print(m.__file__)"
    assert _run(python, code, cwd=tmp_path).strip().startswith(str(REPO_ROOT))
