"""Where results go: --report and --db paths refused in one line before the model loads, a full disk while
writing the report, and databases in read-only folders that can still be read."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from inspector.cli import cli


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make `folder` and its files unwritable even for root (tests run as root here): `chattr +i` where the
    filesystem supports it, else permission bits, skipping the test when this user can still write there."""
    paths = [folder, *folder.iterdir()]
    immutable = shutil.which("chattr") is not None and all(
        subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode == 0 for p in paths
    )
    modes = {p: p.stat().st_mode for p in paths}
    if not immutable:
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        try:
            (folder / ".probe").touch()
        except OSError:
            pass
        else:
            (folder / ".probe").unlink()
            pytest.skip("this user can write to a read-only folder (root without chattr)")
        yield
    finally:
        for p in paths:
            if immutable:
                subprocess.run(["chattr", "-i", str(p)], check=True)
            else:
                p.chmod(modes[p])


@pytest.fixture()
def answers(tmp_path) -> str:
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(['{"brand": "Acme", "price": 10}'] * 40))
    return f"fake:{path}"


def scan(tmp_path, sample_dir, model, *args):
    return CliRunner().invoke(cli, ["scan", str(sample_dir), "--model", model, "--limit", "3", *args])


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ("", "Error: --report is empty; pass a file name such as report.html"),
        ("{tmp}", "Error: --report {tmp} is a folder; pass a file name, e.g. {tmp}/report.html"),
        ("{tmp}/notes.txt/r.html", "Error: --report {tmp}/notes.txt/r.html: {tmp}/notes.txt is a file, not a folder; "
         "pass another path"),
    ],
)  # fmt: skip
def test_an_unusable_report_path_is_one_line_before_the_model_loads(tmp_path, sample_dir, report, message):
    (tmp_path / "notes.txt").write_text("a file")
    # The model cannot load either: the report path is refused first, so this error never shows.
    result = scan(tmp_path, sample_dir, "fake:/no/such/answers.json", "--db", str(tmp_path / "r.db"),
                  "--report", report.format(tmp=tmp_path))  # fmt: skip
    assert (result.exit_code, result.output) == (1, message.format(tmp=tmp_path) + "\n")


def test_a_report_in_a_read_only_folder_is_refused_before_the_model_loads(tmp_path, sample_dir):
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        result = scan(tmp_path, sample_dir, "fake:/no/such/answers.json", "--db", str(tmp_path / "r.db"),
                      "--report", str(locked / "r.html"))  # fmt: skip
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: --report {locked}/r.html: cannot write in {locked} (")
    assert result.output.endswith("); pass another path\n") and len(result.output.splitlines()) == 1


def test_report_out_empty_is_one_line(tmp_path, sample_dir, answers):
    db = tmp_path / "r.db"
    assert scan(tmp_path, sample_dir, answers, "--db", str(db), "--no-report").exit_code == 0
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--out", ""])
    assert (result.exit_code, result.output) == (1, "Error: --out is empty; pass a file name such as report.html\n")


def test_a_full_disk_while_writing_the_report_is_one_line_and_keeps_the_results(
    tmp_path, sample_dir, answers, monkeypatch
):
    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("inspector.outputs.os.fsync", disk_full)
    db, report = tmp_path / "r.db", tmp_path / "out" / "report.html"
    result = scan(tmp_path, sample_dir, answers, "--db", str(db), "--report", str(report))
    assert (result.exit_code, result.output.splitlines()[-1]) == (
        1, f"Error: cannot write the report {report}: no space left on the device; free some space or write elsewhere"
    )  # fmt: skip
    assert list(report.parent.iterdir()) == []  # no temporary file left behind, no half report
    monkeypatch.undo()
    runs = CliRunner().invoke(cli, ["runs", "--db", str(db)])
    assert "│ 1  │" in runs.output and "│ 3      │" in runs.output  # the 3 answers are stored


def test_a_db_in_a_read_only_folder_is_refused_before_the_model_loads(tmp_path, sample_dir):
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        result = scan(tmp_path, sample_dir, "fake:/no/such/answers.json", "--db", str(locked / "r.db"),
                      "--no-report")  # fmt: skip
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1, result.output
    assert result.output.startswith(f"Error: cannot write database {locked}/r.db: ")
    assert result.output.endswith(
        "; pass --db in a folder you can write to (reading it with `inspector runs` / `inspector report` works as it is)\n"
    )


def test_runs_and_report_read_a_database_in_a_read_only_folder(tmp_path, sample_dir, answers):
    import sys

    folder = tmp_path / "results"
    db = folder / "r.db"
    subprocess.run(
        [sys.executable, "-m", "inspector", "scan", str(sample_dir), "--model", answers, "--limit", "3",
         "--db", str(db), "--no-report"],
        check=True, capture_output=True,
    )  # fmt: skip
    # The scan's process has ended, so SQLite removed its -wal and -shm files: reading now has to do without them.
    assert sorted(p.name for p in folder.iterdir()) == ["r.db"]
    before = db.read_bytes()
    with read_only(folder):
        runs = CliRunner().invoke(cli, ["runs", "--db", str(db)])
        report = CliRunner().invoke(cli, ["report", "--db", str(db), "--out", str(tmp_path / "r.html")])
        assert sorted(p.name for p in folder.iterdir()) == ["r.db"]
    assert runs.exit_code == 0, runs.output
    assert "completed" in runs.output and "│ 3      │" in runs.output
    assert (report.exit_code, report.output) == (0, f"Report: {tmp_path / 'r.html'}\n")
    assert db.read_bytes() == before


def test_reading_a_database_that_another_process_is_writing_needs_no_lock(tmp_path, sample_dir, answers):
    import sqlite3

    db = tmp_path / "r.db"
    assert scan(tmp_path, sample_dir, answers, "--db", str(db), "--no-report").exit_code == 0
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # holds the write lock (and, in WAL mode, blocks no reader)
    try:
        runs = CliRunner().invoke(cli, ["runs", "--db", str(db)])
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert runs.exit_code == 0 and "completed" in runs.output, runs.output


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("gpu", "Error: --device 'gpu' is not a device; use auto, cpu, cuda or cuda:N"),
        ("cuda:x", "Error: --device 'cuda:x' is not a device; use auto, cpu, cuda or cuda:N"),
        ("npu", "Error: --device 'npu' is not a device; use auto, cpu, cuda or cuda:N"),
        ("xpu", "Error: --device xpu: not available here; use auto, cpu, cuda or cuda:N"),
    ],
)
def test_an_unknown_device_is_one_line_before_the_model_loads(tmp_path, sample_dir, device, message):
    # No model folder exists either: the device is refused first, before anything tries to load it.
    result = scan(tmp_path, sample_dir, str(tmp_path / "no-model"), "--db", str(tmp_path / "r.db"),
                  "--no-report", "--device", device)  # fmt: skip
    assert (result.exit_code, result.output) == (1, message + "\n")


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_one_line_before_the_model_loads(tmp_path, sample_dir, device):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = scan(tmp_path, sample_dir, str(tmp_path / "no-model"), "--db", str(tmp_path / "r.db"),
                  "--no-report", "--device", device)  # fmt: skip
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1, result.output
    assert result.output.startswith(f"Error: --device {device}: no CUDA GPU is visible to torch ")
    assert result.output.endswith("; use --device cpu or auto\n")


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError(errno.EIO, "I/O error")])
def test_a_report_write_that_is_stopped_keeps_the_old_report_and_no_temporary_file(tmp_path, monkeypatch, stop):
    from inspector.errors import OutputError
    from inspector.interrupts import Terminated
    from inspector.outputs import write_text_atomic

    report = tmp_path / "report.html"
    report.write_text("the previous report")
    stop = Terminated() if stop is KeyboardInterrupt else stop  # what SIGTERM raises while the file is written

    def interrupted(fd):
        raise stop

    monkeypatch.setattr("inspector.outputs.os.fsync", interrupted)
    with pytest.raises(KeyboardInterrupt if isinstance(stop, Terminated) else OutputError):
        write_text_atomic(report, "<html>new</html>", "the report")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert report.read_text() == "the previous report"


def test_an_older_database_is_upgraded_on_read_where_it_can_be_and_explained_where_it_cannot(tmp_path):
    from inspector.store.engine import create_store_engine, database_url
    from inspector.store.migrations import MIGRATIONS, apply_migrations

    folder = tmp_path / "results"
    db = folder / "old.db"
    engine = create_store_engine(database_url(db))
    apply_migrations(engine, until=MIGRATIONS[-2].__name__)  # as the previous release left it
    engine.dispose()
    with read_only(folder):
        refused = CliRunner().invoke(cli, ["runs", "--db", str(db)])
    assert refused.exit_code == 1 and len(refused.output.splitlines()) == 1, refused.output
    assert refused.output.startswith(f"Error: {db} was written by an older inspector and must be upgraded once")
    assert refused.output.endswith(f"open it once where it can be written, e.g. `inspector runs --db {db}`\n")
    upgraded = CliRunner().invoke(cli, ["runs", "--db", str(db)])
    assert upgraded.exit_code == 0, upgraded.output
    with read_only(folder):
        assert CliRunner().invoke(cli, ["runs", "--db", str(db)]).exit_code == 0


@pytest.mark.parametrize("command", ["scan", "runs", "report"])
def test_a_db_that_is_a_folder_is_one_line(tmp_path, sample_dir, command):
    args = {"scan": ["scan", str(sample_dir), "--model", "fake:/no/such/answers.json", "--no-report"]}.get(
        command, [command]
    )
    result = CliRunner().invoke(cli, [*args, "--db", str(tmp_path)])
    assert (result.exit_code, result.output) == (
        1, f"Error: --db {tmp_path} is a folder; pass a database file name, e.g. {tmp_path}/inspector.db\n"
    )  # fmt: skip


def test_path_names_are_measured_in_bytes_and_the_whole_path_too(tmp_path):
    from inspector.errors import InputError
    from inspector.outputs import check_path_names

    assert check_path_names(tmp_path / ("é" * 127), "--out") == tmp_path / ("é" * 127)  # 254 bytes: fine
    with pytest.raises(InputError, match=r"^--out: the name é{24}… in it is 256 bytes long, more than the 255 "):
        check_path_names(tmp_path / ("é" * 128), "--out")  # 128 characters, 256 bytes
    deep = "/".join(["b" * 200] * 21)  # every name fits, the whole does not
    with pytest.raises(InputError, match=r"^--db: the path is 4220 bytes long, more than the 4095 bytes a path may"):
        check_path_names(deep, "--db")
