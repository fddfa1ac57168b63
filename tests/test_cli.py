"""The command line, run through click's CliRunner with the fake model: exact output, one-line errors."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url
from test_store import postgres_server, postgres_url  # noqa: F401 - fixtures

from inspector import __version__
from inspector.cli import cli
from inspector.discovery import discover


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def write_answers(path: Path, answers: list) -> str:
    path.write_text(json.dumps(answers))
    return f"fake:{path}"


def test_scan_prints_summary_and_writes_db_and_report(runner, tmp_path, sample_dir):
    n_images = len(discover([sample_dir]))
    model = write_answers(tmp_path / "answers.json", ['{"brand": "Acme", "price": 10, "currency": "USD"}'] * n_images)
    db, report = tmp_path / "results.db", tmp_path / "report.html"
    result = runner.invoke(
        cli,
        ["scan", str(sample_dir), "--truth", str(sample_dir / "truth.csv"), "--model", model,
         "--db", str(db), "--report", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(rf"Run 1: {n_images} images answered, 0 failed \([0-9.]+ images/s\)", lines[0])
    assert lines[1] == f"Truth: {n_images} of {n_images} images matched a row, 0 of {n_images} rows matched no image"
    assert f"Database: {db}" in lines
    assert lines[-1] == f"Report: {report}"
    assert "Per-field results" in result.stdout
    assert report.read_text().lower().startswith("<!doctype html>")
    with sqlite3.connect(db) as connection:
        assert connection.execute("select count(*) from predictions where brand = 'Acme'").fetchone()[0] == n_images

    # the same command again resumes the same run: nothing new to do, nothing stored twice
    again = runner.invoke(
        cli,
        ["scan", str(sample_dir), "--truth", str(sample_dir / "truth.csv"), "--model", model,
         "--db", str(db), "--report", str(report)],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert re.fullmatch(
        rf"Run 1: 0 images answered, 0 failed, {n_images} already done \([0-9.]+ images/s\)",
        again.stdout.splitlines()[0],
    )
    with sqlite3.connect(db) as connection:
        assert connection.execute("select count(*) from predictions").fetchone()[0] == n_images

    runs = runner.invoke(cli, ["runs", "--db", str(db)])
    assert runs.exit_code == 0
    assert "completed" in runs.stdout and model in runs.stdout

    other = tmp_path / "again.html"
    rendered = runner.invoke(cli, ["report", "1", "--db", str(db), "--out", str(other)])
    assert rendered.exit_code == 0, rendered.output
    assert rendered.stdout == f"Report: {other}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "/no/such/folder", "--model", "fake:x"], "/no/such/folder"),
        (["scan", "{samples}", "--model", "fake:/no/answers.json"], "fake model answers file /no/answers.json"),
        (["scan", "{samples}", "--model", "fake:{answers}", "--truth", "/no/truth.csv"], "/no/truth.csv"),
        (["scan", "{samples}", "--model", "fake:{answers}", "--prompt", "nope"], "nope"),
        (["scan", "{samples}", "--model", "fake:{answers}", "--price-tolerance", "cheap"], "cheap"),
        (["scan", "{samples}", "--model", "fake:{answers}", "--truth", "{samples}/truth.csv", "--truth-columns", ""],
         "--truth-columns is empty"),
        (["report", "--db", "{tmp}/missing.db"], "no database at {tmp}/missing.db; run `inspector scan` first"),
        # a report path that is a folder: refused before the scan runs, not a traceback after it
        (["scan", "{samples}", "--model", "fake:{answers}", "--report", "{tmp}"], "{tmp}"),
    ],
)
def test_bad_input_is_a_one_line_error(runner, tmp_path, sample_dir, args, message):
    answers = tmp_path / "answers.json"
    answers.write_text("[]")
    values = {"samples": str(sample_dir), "answers": str(answers), "tmp": str(tmp_path)}
    args = [a.format(**values) for a in args]
    result = runner.invoke(cli, [*args, "--db", str(tmp_path / "r.db")] if args[0] == "scan" else args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result.output
    assert message.format(**values) in error_lines[0]
    assert "Traceback" not in result.output


def test_report_to_a_folder_is_a_one_line_error(runner, tmp_path, sample_dir):
    answers = tmp_path / "answers.json"
    answers.write_text("[]")
    db = tmp_path / "r.db"
    scanned = runner.invoke(cli, ["scan", str(sample_dir), "--model", f"fake:{answers}", "--db", str(db), "--no-report"])
    assert scanned.exit_code == 0, scanned.output
    result = runner.invoke(cli, ["report", "--db", str(db), "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error:") and len(result.output.splitlines()) == 1, result.output


@pytest.mark.parametrize("tokenizer_args", [[], ["--tokenizer-dir", "{tmp}/nowhere"], ["--tokenizer-dir", "{tmp}"]])
def test_tiny_phi3v_without_tokenizer_files_is_a_one_line_error(runner, tmp_path, tokenizer_args):
    """Without the tokenizer and processor files the folder could not be scanned: refuse instead of writing it."""
    folder = tmp_path / "tiny"
    args = [a.format(tmp=tmp_path) for a in tokenizer_args]
    result = runner.invoke(cli, ["tiny-model", str(folder), "--family", "phi3v", *args])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: --family phi3v needs --tokenizer-dir"), result.output
    assert not folder.exists()


def test_truth_with_missing_mapped_column_lists_the_columns(runner, tmp_path, sample_dir):
    answers = tmp_path / "answers.json"
    answers.write_text("[]")
    result = runner.invoke(
        cli,
        ["scan", str(sample_dir), "--model", f"fake:{answers}", "--db", str(tmp_path / "r.db"),
         "--truth", str(sample_dir / "truth.csv"), "--truth-columns", "brand=Marque"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "Marque" in result.output and "full_price" in result.output


def test_scan_summary_counts_malformed_rows_and_unparseable_cells(runner, tmp_path, sample_dir):
    """Issue 8: an unquoted comma in the first data row shifted the whole catalogue (0 of 36 images matched)."""
    n_images = len(discover([sample_dir]))
    header, first, second, *rest = (sample_dir / "truth.csv").read_text(encoding="utf-8").splitlines()
    first = first.replace(",", ", Retro,", 2).replace(", Retro,", ",", 1)  # an extra cell inside the title
    second = re.sub(r",[0-9.]+,([A-Z]{3}),", r",cheap,\1,", second)  # a price cell that is not a price
    truth = tmp_path / "truth.csv"
    truth.write_text("\n".join([header, first, second, *rest]) + "\n", encoding="utf-8")
    model = write_answers(tmp_path / "answers.json", ["{}"] * n_images)
    result = runner.invoke(
        cli,
        ["scan", str(sample_dir), "--truth", str(truth), "--model", model, "--db", str(tmp_path / "r.db"),
         "--report", str(tmp_path / "report.html")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == (
        f"Truth: {n_images - 1} of {n_images} images matched a row, 0 of {n_images - 1} rows matched no image "
        "(1 unparseable cells, 1 malformed rows skipped: line 2)"
    )
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    for key, value in (("truth.malformed_rows", "1"), ("truth.malformed_at_lines", "2"), ("truth.unparseable_cells", "1")):
        assert f"<th>{key}</th><td>{value}</td>" in report


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "inspector", "--help"], capture_output=True, text=True, check=True
    )
    assert "scan" in result.stdout and "report" in result.stdout


@pytest.mark.postgres  # its fixture is asked for by name below: CI must fail, not skip, without a server
def test_scan_never_shows_the_database_password(runner, tmp_path, sample_dir, request):
    """Issue 15: `scan` printed a Postgres password in its settings echo (db=...) and its Database: line."""
    url = make_url(request.getfixturevalue("postgres_url")).set(password="s3cr3t-pw").render_as_string(hide_password=False)
    shown = make_url(url).render_as_string(hide_password=True)
    assert ":***@" in shown
    model = write_answers(tmp_path / "answers.json", ["{}"] * len(discover([sample_dir])))
    result = runner.invoke(
        cli, ["scan", str(sample_dir), "--model", model, "--db", url, "--no-report", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    echo = (  # wrapped at 80 columns on stderr, where a line break may take the place of a space
        f"inspector {__version__} · scan config: model={model}, db={shown}, batch_size=0, max_new_tokens=256, "
        f"device=cpu, dtype=auto\nloading {model} …\n"
    )
    assert "".join(result.stderr.split()) == "".join(echo.split()), result.stderr
    assert f"Database: {shown}" in result.stdout.splitlines()

    for command in (["runs"], ["report", "--out", str(tmp_path / "r.html")], ["export", "1", "--out", str(tmp_path / "e.csv")]):
        listed = runner.invoke(cli, [*command, "--db", url])
        assert listed.exit_code == 0, listed.output
        assert "s3cr3t-pw" not in listed.output
    assert "s3cr3t-pw" not in (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "s3cr3t-pw" not in "".join(result.output.split())


@pytest.mark.parametrize(
    ("db", "error"),
    [
        ("postgresql://u:s3cr3t-pw@h:xx/db",
         "Error: --db 'postgresql://u:***@h:xx/db' is neither a file path nor a valid SQLAlchemy URL (e.g. results.db "
         "or postgresql+psycopg://user:password@host/dbname)"),
        ("nodialect://u:s3cr3t-pw@h/db",
         "Error: cannot use database nodialect://u:***@h/db: Can't load plugin: sqlalchemy.dialects:nodialect; "
         "install the database driver named in the URL"),
    ],
)  # fmt: skip
def test_a_bad_database_url_is_one_line_without_its_password(runner, tmp_path, sample_dir, db, error):
    model = write_answers(tmp_path / "answers.json", [])
    for command in (["runs"], ["scan", str(sample_dir), "--model", model, "--no-report"]):
        result = runner.invoke(cli, [*command, "--db", db])
        assert result.exit_code == 1, result.output
        assert result.output == error + "\n"


@pytest.fixture()
def scanned_db(runner, tmp_path, sample_dir) -> Path:
    """A database with one run (run 1) of the fake model over the samples."""
    db = tmp_path / "r.db"
    model = write_answers(tmp_path / "answers.json", ["{}"] * len(discover([sample_dir])))
    result = runner.invoke(cli, ["scan", str(sample_dir), "--model", model, "--db", str(db), "--no-report"])
    assert result.exit_code == 0, result.output
    return db


@pytest.mark.parametrize("ref", ["²", "١", "9" * 5000, str(2**63)])
def test_a_run_id_that_is_no_number_is_a_missing_run(runner, tmp_path, scanned_db, ref):
    """Issue 15: `²` passed str.isdigit() and int("²") raised a traceback (also an over-long or 64-bit-overflowing
    id). A run reference that is not ASCII digits is a run name; either way, an unknown run is one line."""
    out = str(tmp_path / "out.html")
    missing = f"Error: no run {ref!r} in sqlite:///{scanned_db}; pass a run id or name, e.g. one of the latest: 1\n"
    for command in (["report", ref, "--out", out], ["report", "1", "--compare", ref, "--out", out],
                    ["export", ref, "--out", str(tmp_path / "out.csv")]):  # fmt: skip
        result = runner.invoke(cli, [*command, "--db", str(scanned_db)])
        assert result.exit_code == 1, result.output
        assert result.output == missing


LONG = "a" * 256  # one byte more than a file name may have on ext4, xfs, btrfs, tmpfs, ...


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["scan", "{samples}", "--model", "{model}", "--db", "{tmp}/{long}", "--no-report"], "--db"),
        (["scan", "{samples}", "--model", "{model}", "--db", "{tmp}/{long}/r.db", "--no-report"], "--db"),
        (["scan", "{samples}", "--model", "{model}", "--db", "sqlite:///{tmp}/{long}", "--no-report"], "--db"),
        (["scan", "{samples}", "--model", "{model}", "--db", "{db}", "--report", "{tmp}/{long}"], "--report"),
        (["scan", "{samples}", "--model", "{model}", "--db", "{db}", "--report", "{tmp}/{long}/r.html"], "--report"),
        (["scan", "{samples}", "--model", "{model}", "--db", "{db}", "--no-report", "--fields", "{tmp}/{long}"],
         "--fields"),
        (["report", "--db", "{db}", "--out", "{tmp}/{long}"], "--out"),
        (["report", "--db", "{db}", "--out", "{tmp}/r.html", "--fields", "{long}"], "--fields"),
        (["report", "--db", "{tmp}/{long}"], "--db"),
        (["export", "1", "--db", "{db}", "--out", "{tmp}/{long}/e.csv"], "--out"),
        (["runs", "--db", "{long}"], "--db"),
        (["scan", "{samples}", "--model", "{tmp}/{long}", "--db", "{db}", "--no-report"], "--model"),
    ],
)  # fmt: skip
def test_a_path_name_too_long_for_the_file_system_is_one_line(runner, tmp_path, sample_dir, scanned_db, args, option):
    """Issue 15: a path component over 255 bytes was an OSError (File name too long) traceback."""
    model = write_answers(tmp_path / "more.json", ["{}"] * len(discover([sample_dir])))
    values = {"samples": sample_dir, "model": model, "tmp": tmp_path, "long": LONG, "db": scanned_db}
    result = runner.invoke(cli, [arg.format(**values) for arg in args])
    assert result.exit_code == 1, result.output
    assert result.output == (
        f"Error: {option}: the name {LONG[:24]}… in it is 256 bytes long, more than the 255 bytes a file or folder "
        "name may have; pass a shorter path\n"
    )
    assert not list(tmp_path.glob("aaaa*")) and not (tmp_path / "r.html").exists()
