"""Shared fixtures of the wheel's tests. They run in the virtual environment the built wheel
is installed into (scripts/test.sh: .venv-wheel/), so `import cbr` and the `cbr` command are
the installed ones, never the source tree's. Images are the set-up's real photos
(scripts/fixtures.py, $CBR_FIXTURES): a missing fixture folder fails, it does not skip."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]


def fixtures_dir() -> Path:
    d = Path(os.environ.get("CBR_FIXTURES", REPO / ".fixtures"))
    if not (d / "VERSION").is_file():
        pytest.fail(f"no test fixtures in {d}: run scripts/setup.sh (or set CBR_FIXTURES)")
    return d


def cbr_command() -> str:
    """The installed wheel's `cbr`, beside this interpreter."""
    exe = Path(sys.executable).parent / "cbr"
    if not exe.is_file():
        pytest.fail(f"no {exe}: the wheel's `cbr` command is not installed in this environment")
    return str(exe)


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([cbr_command(), *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"cbr {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return p


def cli_error(*args: str) -> str:
    """The message `cbr ARGS` fails with (its stderr's `error: ...` line, without the prefix)."""
    p = run_cli(*args, check=False)
    assert p.returncode != 0, f"cbr {' '.join(args)} did not fail"
    lines = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert lines, p.stderr
    start = p.stderr.index("error: ") + len("error: ")
    return p.stderr[start:].rstrip("\n")


def scene_images(classes: int, per_class: int) -> Tuple[List[str], List[str]]:
    """(paths, labels): the first `per_class` JPEG crops of the first `classes` scenes."""
    root = fixtures_dir() / "scenes"
    paths, labels = [], []
    for c in sorted(p for p in root.iterdir() if p.is_dir())[:classes]:
        for f in sorted(c.iterdir())[:per_class]:
            paths.append(str(f))
            labels.append(c.name)
    return paths, labels


def write_manifest(path: Path, paths: List[str], labels: List[str]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(zip(paths, labels))
    return path


@pytest.fixture(scope="session")
def scenes(tmp_path_factory) -> dict:
    """4 classes x 8 colour photos, as a manifest and as lists."""
    d = tmp_path_factory.mktemp("scenes")
    paths, labels = scene_images(4, 8)
    return {"paths": paths, "labels": labels, "manifest": write_manifest(d / "m.csv", paths, labels)}


@pytest.fixture(scope="session")
def cli_model(scenes, tmp_path_factory) -> Path:
    """The model `cbr build` writes for `scenes`."""
    out = tmp_path_factory.mktemp("cli") / "cli.onnx"
    run_cli("build", str(scenes["manifest"]), "-o", str(out), "-q")
    return out


def cli_classify(model: Path, images: List[str], *extra: str) -> List[dict]:
    p = run_cli("classify", str(model), *images, "--json", *extra, check=False)
    return [json.loads(line) for line in p.stdout.splitlines()]


def query_photos() -> List[str]:
    """Held-out queries: the scikit-image photographs (PNG and JPEG) and Fashion-MNIST (grey)."""
    d = fixtures_dir()
    photos = sorted(str(p) for p in (d / "photos").iterdir())
    fashion = sorted(str(p) for p in (d / "fashion-mnist" / "bag").iterdir())[:2]
    return photos + fashion
