"""Which transformers releases CI tests, as pip resolves them against the configured package index.

CI gates on the floor (constraints.txt) and on the newest release inside pyproject.toml's declared range; the newest
release above the range's cap, when the index has one, runs as a canary that never changes CI's exit status.

    python scripts/releases.py spec               # the declared requirement: transformers>=5.17,<5.26
    python scripts/releases.py canary             # the newest release above the cap, or nothing
    python scripts/releases.py report [VERSION [JUNIT_XML]]   # the canary's one line for the end of CI's output

Standard library only; pip options (index, find-links, constraints) come from pip's own configuration.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: inspector itself depends on tomli there
    import tomli as tomllib

PACKAGE = "transformers"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def declared_spec(pyproject: Path = PYPROJECT) -> str:
    """The transformers requirement of pyproject.toml's dependencies, e.g. `transformers>=5.17,<5.26`."""
    dependencies = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    found = [dep.replace(" ", "") for dep in dependencies if re.match(PACKAGE + r"\s*[<>=!~]", dep)]
    if len(found) != 1:
        raise SystemExit(f"{pyproject}: expected one '{PACKAGE}>=...,<...' dependency, found {found or 'none'}")
    return found[0]


def cap(spec: str) -> str:
    """The upper bounds of a requirement (`<5.26`), or '' when it has none."""
    bounds = spec[len(PACKAGE) :].split(";")[0].split(",")
    return ",".join(bound for bound in bounds if bound.startswith("<"))


def resolve(requirement: str) -> str:
    """The version pip would install for `requirement` (newest matching, no pre-releases), ignoring what is
    installed."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps", "--ignore-installed"]
    command += ["--disable-pip-version-check", "--report", "-", requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"pip could not resolve {requirement}: {detail}")
    (item,) = json.loads(result.stdout)["install"]
    return item["metadata"]["version"]


def canary(spec: str) -> str:
    """The newest release on the index when it lies above the declared range's cap, else ''."""
    newest = resolve(PACKAGE)
    return "" if newest == resolve(spec) else newest


def report(spec: str, version: str = "", junit: Path | None = None) -> str:
    """The canary's one line: no release above the cap, could not be installed, passed, or how many failed."""
    if not version:
        return f"canary: none above the cap ({cap(spec) or 'no cap'})"
    head = f"canary: {PACKAGE} {version}"
    if junit is None or not junit.is_file() or junit.stat().st_size == 0:
        return f"{head}: not tested (installing it or starting pytest failed, see above)"
    root = ElementTree.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(suite.get(key, 0)) for suite in suites) for key in ("tests", "failures", "errors")}
    if counts["failures"] or counts["errors"]:
        parts = [f"{counts['failures']} failed"] + [f"{counts['errors']} errors"] * bool(counts["errors"])
        return f"{head}: {', '.join(parts)} — fix before raising the cap"
    return f"{head}: {counts['tests']} tests passed — the cap can be raised (README, Install)"


def main(argv: list[str]) -> None:
    spec = declared_spec()
    if argv == ["spec"]:
        print(spec)
    elif argv == ["canary"]:
        print(canary(spec))
    elif argv[:1] == ["report"] and len(argv) <= 3:
        print(report(spec, *argv[1:2], *(Path(path) for path in argv[2:3])))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
