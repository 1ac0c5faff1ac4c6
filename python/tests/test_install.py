"""The wheel installs as a package should: `import cbr` and the `cbr` command, from the
installed files, with numpy as the only dependency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import cbr
from conftest import run_cli


def test_the_installed_package_is_the_one_imported():
    # Not the source tree's python/cbr/: the tests must exercise what pip installed.
    assert Path(cbr.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), cbr.__file__
    assert (Path(cbr.__file__).parent / "py.typed").is_file()
    assert (Path(cbr.__file__).parent / "_cbr.pyi").is_file()


def test_cbr_command_is_the_same_version():
    out = run_cli("--version").stdout.strip()
    assert out == f"cbr {cbr.__version__}", out
    assert "classify" in run_cli("--help").stdout


def test_fresh_environment_gets_numpy_and_nothing_else(tmp_path):
    wheel = os.environ.get("CBR_WHEEL")
    if not wheel:
        pytest.fail("CBR_WHEEL is not set: scripts/test.sh sets it to scripts/wheel.sh's wheel")
    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = [str(py), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", wheel], check=True)
    listed = json.loads(
        subprocess.run([*pip, "list", "--format=json"], check=True, capture_output=True).stdout
    )
    names = {p["name"].lower() for p in listed} - {"pip", "setuptools", "wheel"}
    assert names == {"classification-by-retrieval", "numpy"}, names
    version = subprocess.run(
        [str(env_dir / "bin" / "cbr"), "--version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert version == f"cbr {cbr.__version__}"
    imported = subprocess.run(
        [str(py), "-c", "import cbr; print(cbr.__version__, cbr.__file__)"],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    ).stdout.split()
    assert imported[0] == cbr.__version__ and str(env_dir) in imported[1], imported
