"""scripts/releases.py: which transformers releases CI tests (floor, newest inside the range, canary above the cap),
resolved by pip against a local index of empty wheels, and the canary's one line from a real pytest run."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("releases", REPO / "scripts" / "releases.py")
releases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(releases)


def fake_wheel(folder: Path, version: str) -> None:
    """An installable wheel named transformers with nothing in it but its metadata."""
    dist_info = f"transformers-{version}.dist-info"
    with zipfile.ZipFile(folder / f"transformers-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: transformers\nVersion: {version}\n")
        wheel.writestr(
            f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{dist_info}/RECORD", "")


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A package index holding only the wheels the test makes; pip's own configuration is ignored."""
    folder = tmp_path / "index"
    folder.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)

    def publish(*versions: str) -> None:
        for version in versions:
            fake_wheel(folder, version)

    return publish


def test_newest_inside_the_range_and_the_canary_above_the_cap(index):
    index("5.16.1", "5.17.0", "5.24.0", "5.25.0", "5.25.1", "5.26.0rc1", "5.26.0")
    spec = "transformers>=5.17,<5.26"
    assert releases.resolve(spec) == "5.25.1"
    assert releases.canary(spec) == "5.26.0"


def test_no_canary_when_nothing_is_above_the_cap(index):
    index("5.17.0", "5.25.0", "5.26.0rc1")  # pre-releases do not count
    spec = "transformers>=5.17,<5.26"
    assert releases.canary(spec) == ""
    assert releases.report(spec) == "canary: none above the cap (<5.26)"


def test_an_unresolvable_range_is_one_clear_error(index):
    index("5.17.0")
    with pytest.raises(SystemExit, match=r"pip could not resolve transformers>=5.30: .*transformers>=5.30"):
        releases.resolve("transformers>=5.30")


def run_pytest(folder: Path, source: str) -> Path:
    (folder / "test_sample.py").write_text(source)
    junit = folder / "junit.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", str(folder)]
    subprocess.run(command, cwd=folder, capture_output=True, check=False)
    return junit


def test_canary_line_counts_failures_and_errors(tmp_path):
    junit = run_pytest(
        tmp_path,
        "import pytest\n"
        "@pytest.fixture\ndef broken():\n    raise RuntimeError\n"
        "def test_ok(): pass\n"
        "def test_a(): assert False\n"
        "def test_b(): assert False\n"
        "def test_c(broken): pass\n",
    )
    assert releases.report("transformers>=5.17,<5.26", "5.26.0", junit) == (
        "canary: transformers 5.26.0: 2 failed, 1 errors — fix before raising the cap"
    )


def test_canary_line_when_it_passes_or_never_ran(tmp_path):
    junit = run_pytest(tmp_path, "def test_ok(): pass\ndef test_also(): pass\n")
    spec = "transformers>=5.17,<5.26"
    assert releases.report(spec, "5.26.0", junit) == (
        "canary: transformers 5.26.0: 2 tests passed — the cap can be raised (README, Install)"
    )
    assert releases.report(spec, "5.26.0", tmp_path / "absent.xml") == (
        "canary: transformers 5.26.0: not tested (installing it or starting pytest failed, see above)"
    )


def test_range_is_declared_once_and_the_docs_follow_it():
    """pyproject.toml declares the range; the floor pin and the README's Install paragraph must agree with it."""
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "releases.py"), "spec"], capture_output=True, text=True, check=True
    )
    spec = result.stdout.strip()
    assert spec == releases.declared_spec()
    floor, cap = re.fullmatch(r"transformers>=([\d.]+),<([\d.]+)", spec).groups()
    assert f"transformers=={floor}.0\n" in (REPO / "constraints.txt").read_text()
    assert f"(`{spec}`)" in (REPO / "README.md").read_text()
    assert cap == releases.cap(spec)[1:]
