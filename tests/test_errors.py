"""One exception family, and layers that point one way: the CLI imports the library, never the reverse."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import inspector
from inspector.cli import cli
from inspector.console import friendly_errors
from inspector.errors import InputError, StoreError
from inspector.store import open_store

PACKAGE = Path(inspector.__file__).parent
#: The command line's modules; everything else in the package is library.
CLI_MODULES = {
    "inspector.cli",
    "inspector.console",
    "inspector.options",
    "inspector.train_cli",
    "inspector.__main__",
    "inspector.samples.__main__",
}


def library_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="inspector.")]
    return sorted({"inspector", *names} - CLI_MODULES)


def imported_names(module: str) -> set[str]:
    """Every module an `import` anywhere in `module`'s source names, including imports inside functions."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_library_module_imports_the_command_line_even_inside_a_function():
    offenders = {m: sorted(imported_names(m) & CLI_MODULES) for m in library_modules()}
    assert {m: found for m, found in offenders.items() if found} == {}


def test_importing_every_library_module_loads_no_command_line_module():
    code = (
        "import importlib, json, sys\n"
        f"for name in {library_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(set(sys.modules) & {CLI_MODULES!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == []


@pytest.mark.parametrize("module", ["inspector.multigpu", "inspector.train_cli", "inspector.cli"])
def test_each_module_imports_on_its_own(module):
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)


@pytest.mark.parametrize(
    ("raised", "shown"),
    [
        (InputError("--sizes needs at least one size\nsecond line"), "Error: --sizes needs at least one size\n"),
        (StoreError("cannot open database x.db: disk I/O error"), "Error: cannot open database x.db: disk I/O error\n"),
    ],
)
def test_an_inspector_error_is_one_line(raised, shown):
    @click.command()
    def command():
        with friendly_errors():
            raise raised

    result = CliRunner().invoke(command)
    assert (result.exit_code, result.output) == (1, shown)


@pytest.mark.parametrize("bug", [KeyError("brand"), ValueError("bad value"), LookupError("x"), OSError(5, "EIO")])
def test_any_other_exception_is_a_bug_and_shows_as_one(bug):
    @click.command()
    def command():
        with friendly_errors():
            raise bug

    result = CliRunner().invoke(command)
    assert result.exit_code == 1
    assert "Error:" not in result.output
    assert result.exception is bug  # CliRunner caught the traceback a user would see


def test_a_bug_inside_a_scan_is_not_passed_off_as_a_user_error(tmp_path, sample_dir, monkeypatch):
    def broken(*args, **kwargs):
        return {}["brand"]

    monkeypatch.setattr("inspector.scan.commit_batch", broken)
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(["{}"] * 3))
    result = CliRunner().invoke(
        cli, ["scan", str(sample_dir), "--model", f"fake:{answers}", "--db", str(tmp_path / "r.db"), "--limit", "3"]
    )
    assert isinstance(result.exception, KeyError) and result.exit_code == 1
    assert "Error:" not in result.output


def test_a_bug_while_one_answer_is_read_is_that_images_error_and_still_looks_like_a_bug(
    tmp_path, sample_dir, monkeypatch
):
    """No answer can stop a scan (issue 15), but a bug is neither swallowed nor passed off as the user's error: it
    is recorded on the image with its type and message, and the summary counts it and asks for a report."""

    def broken(answer, fieldset=None):
        return {}["brand"]

    monkeypatch.setattr("inspector.scan.read_answer", broken)
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(["{}"] * 3))
    db = tmp_path / "r.db"
    result = CliRunner().invoke(
        cli, ["scan", str(sample_dir), "--model", f"fake:{answers}", "--db", str(db), "--limit", "3", "--no-report"]
    )
    assert result.exit_code == 0, result.output
    assert "Error:" not in result.output
    assert "Run 1: 0 images answered, 3 failed (3 by an internal error while reading the answer: please report it)" in (
        result.output
    )
    errors = {row["error"] for row in open_store(db).run_rows(1)}
    assert errors == {"internal error while reading the answer (please report it): KeyError: 'brand'"}


@pytest.mark.parametrize(
    ("db", "message"),
    [
        ("{tmp}/file.txt/r.db", "Error: cannot create the folder of database {tmp}/file.txt/r.db"),
        ("nosuchdialect://host/db", "Error: cannot use database nosuchdialect://host/db: Can't load plugin"),
        ("sqlite:///{tmp}/r.db?check_same_thread=maybe", "Error: cannot use database sqlite:///{tmp}/r.db"),
    ],
)
def test_a_bad_db_is_a_one_line_store_error(tmp_path, sample_dir, db, message):
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "answers.json").write_text("[]")
    result = CliRunner().invoke(
        cli,
        ["scan", str(sample_dir), "--model", f"fake:{tmp_path / 'answers.json'}", "--no-report",
         "--db", db.format(tmp=tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert len(result.output.splitlines()) == 1, result.output
    assert result.output.startswith(message.format(tmp=tmp_path)), result.output
