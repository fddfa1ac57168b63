"""What identifies a run, what its totals say after a resume, and how it ends when the process is stopped."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import event
from sqlalchemy.engine import Engine

from inspector import scan, scan_config
from inspector.cli import cli
from inspector.discovery import discover
from inspector.prompts import get_prompt
from inspector.scan import NOT_IN_RUN_KEY, ScanConfig
from inspector.store import open_store

#: A different value for every ScanConfig field. A new field fails `test_every_field_has_a_changed_value` until it
#: is added here, so whether it is part of a run's identity is always decided, never forgotten.
CHANGED = {
    "inputs": ["other-folder"],
    "model": "other/model",
    "db": "other.db",
    "report": "other.html",
    "truth": "other.csv",
    "truth_columns": {"brand": "Marque"},
    "truth_key": "sku",
    "prompt": "original",
    "prompt_file": "prompt.txt",
    "sizes": ["8"],
    "fields_file": "fields.toml",
    "batch_size": 3,
    "max_new_tokens": 17,
    "min_new_tokens": 5,
    "device": "cuda:1",
    "dtype": "bf16",
    "num_crops": 16,
    "attn_implementation": "eager",
    "fuse": "none",
    "quantize": "fp8",
    "trust_remote_code": True,
    "limit": 10,
    "run_name": "tuned",
    "price_tolerance": "2%",
    "title_threshold": 0.9,
    "workers": 9,
    "shard": (1, 2),
}


def key(config: ScanConfig, tmp_path: Path) -> str:
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("What brand is this?")
    (tmp_path / "fields.toml").write_text('[fields.colour]\nkind = "category"\n')
    prompt = get_prompt(config.prompt, str(prompt_file) if config.prompt_file else None, config.sizes or None)
    return config.run_key(prompt)


def test_every_field_has_a_changed_value():
    assert set(CHANGED) == {f.name for f in dataclasses.fields(ScanConfig)}


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_a_field_changes_the_run_key_unless_it_cannot_change_answers(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ScanConfig(inputs=["images"])
    changed = dataclasses.replace(base, **{name: CHANGED[name]})
    assert getattr(changed, name) != getattr(base, name)
    if name in NOT_IN_RUN_KEY:
        assert key(changed, tmp_path) == key(base, tmp_path)
    else:
        assert key(changed, tmp_path) != key(base, tmp_path)


@dataclasses.dataclass
class ConfigOfALaterRelease(ScanConfig):
    """ScanConfig as a later release might have it: one more opt-in setting, not given by default."""

    new_opt_in: str | None = None


def test_an_opt_in_setting_added_later_keeps_existing_run_keys_until_it_is_used(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    today = ScanConfig(inputs=["images"], truth="t.csv")
    later = ConfigOfALaterRelease(inputs=["images"], truth="t.csv")
    assert key(later, tmp_path) == key(today, tmp_path)
    assert key(dataclasses.replace(later, new_opt_in="on"), tmp_path) != key(today, tmp_path)


def test_the_same_scan_from_another_folder_is_the_same_run(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path)
    here = key(ScanConfig(inputs=["a"], truth="t.csv"), tmp_path)
    monkeypatch.chdir(tmp_path / "a")
    assert key(ScanConfig(inputs=["../a"], truth="../t.csv"), tmp_path) == here


def fake_model(tmp_path: Path, n: int = 100) -> str:
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(['{"brand": "Acme", "price": 10}'] * n))
    return f"fake:{path}"


def test_run_totals_count_every_image_of_a_resumed_run(tmp_path, sample_dir):
    """A run resumed with a larger --limit holds all the images: its totals say so, not only the last session's."""
    n_images = len(discover([sample_dir]))
    model, db = fake_model(tmp_path), str(tmp_path / "r.db")
    unreadable = tmp_path / "images"
    unreadable.mkdir()
    (unreadable / "broken.jpg").write_bytes(b"not an image")
    args = ["scan", str(sample_dir), str(unreadable), "--model", model, "--db", db, "--no-report"]
    assert CliRunner().invoke(cli, [*args, "--limit", "5"]).exit_code == 0
    assert CliRunner().invoke(cli, args).exit_code == 0
    run = open_store(db).get_run(1)
    assert (run.n_images, run.n_failed) == (n_images + 1, 1)
    assert run.stats["session"] == {"n_images": n_images + 1 - 5, "n_failed": 1}


def test_sigterm_ends_the_run_interrupted_and_leaves_no_temporary_report(tmp_path, sample_dir):
    """`docker stop` and Slurm send SIGTERM: the run must end `interrupted`, as on Ctrl-C, and resume later."""
    slow = tmp_path / "slow.py"
    slow.write_text(
        "import time\n"
        "from inspector.backends import fake\n"
        "original = fake.FakeBackend.generate\n"
        "def generate(self, *args, **kwargs):\n"
        "    print('batch', flush=True)\n"
        "    time.sleep(0.5)\n"
        "    return original(self, *args, **kwargs)\n"
        "fake.FakeBackend.generate = generate\n"
        "from inspector.cli import main\n"
        "main()\n"
    )
    db, report = tmp_path / "r.db", tmp_path / "report.html"
    scan = subprocess.Popen(
        [sys.executable, str(slow), "scan", str(sample_dir), "--model", fake_model(tmp_path), "--db", str(db),
         "--report", str(report), "--batch-size", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert scan.stdout.readline() == "batch\n"
    time.sleep(0.2)
    scan.send_signal(signal.SIGTERM)
    out, err = scan.communicate(timeout=60)
    assert scan.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    run = open_store(db).get_run(1)
    assert run.status == "interrupted"
    assert run.finished_at is not None
    assert sorted(p.name for p in tmp_path.iterdir() if "report" in p.name) == []


#: Runs `inspector` with the fake backend; prints "batch" when the first batch reaches the model, and, with
#: STOP_AT="<statement start>:<n>", sends itself SIGTERM right after the DB-API has executed the n-th SQL statement
#: that starts so (as a signal that arrives then is raised: inside SQLAlchemy's execution of the statement); with
#: STOP_IN_FINALISER=1, inside a finaliser that runs as the first batch starts.
STOPPABLE_SCAN = """
import os, signal, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine
from inspector.backends import fake

generate = fake.FakeBackend.generate
def first_batch_says_so(self, *args, **kwargs):
    if not getattr(self, "said", False):
        self.said = True
        print("batch", flush=True)
        if os.environ.get("STOP_IN_FINALISER"):  # Python prints an exception raised there, and drops it
            import weakref
            class Collected: pass
            collected = Collected()
            weakref.finalize(collected, lambda: [os.kill(os.getpid(), signal.SIGTERM), *range(1000)])
            del collected
    return generate(self, *args, **kwargs)
fake.FakeBackend.generate = first_batch_says_so

if os.environ.get("STOP_AT"):
    start, n = os.environ["STOP_AT"].rsplit(":", 1)
    seen = []
    def execute_then_stop(cursor, statement, parameters, context, many=False):
        (cursor.executemany if many else cursor.execute)(statement, parameters)
        if statement.startswith(start):
            seen.append(statement)
            if len(seen) == int(n):
                os.kill(os.getpid(), signal.SIGTERM)
        return True
    event.listen(Engine, "do_execute", execute_then_stop)
    event.listen(Engine, "do_executemany", lambda *args: execute_then_stop(*args, many=True))

from inspector.cli import main
main()
"""


def many_images(folder: Path, n: int) -> Path:
    from PIL import Image

    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (8, 8), (i % 256, i // 256, 7)).save(folder / f"{i:04d}.png")
    return folder


def start_stoppable_scan(tmp_path: Path, images: Path, db: Path, env: dict | None = None) -> subprocess.Popen:
    script = tmp_path / "stoppable.py"
    script.write_text(STOPPABLE_SCAN)
    return subprocess.Popen(
        [sys.executable, str(script), "scan", str(images), "--model", fake_model(tmp_path), "--db", str(db),
         "--no-report", "--batch-size", "1", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1],
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def stored_predictions(db: Path) -> int:
    with open_store(db, read_only=True) as store:
        return len(store.run_rows(1, with_thumbnails=False))


@pytest.mark.parametrize(
    "moment",
    [
        "BEGIN IMMEDIATE:3",  # as a batch's transaction starts
        "INSERT INTO images:2",  # in a batch's transaction
        "INSERT INTO predictions:1",
        "INSERT INTO predictions:3",
        "SELECT images.sha256, images.id:2",
        "SELECT predictions.image_id:4",
    ],
)
def test_sigterm_in_the_middle_of_a_commit_ends_the_run_interrupted_at_once(tmp_path, moment):
    """A stop that arrives while a batch is written used to leave the transaction's write lock with a cursor that
    its traceback kept alive: closing the run (on a second connection) waited 60 s for "database is locked",
    exited 1 and left the run `running`."""
    db = tmp_path / "r.db"
    scan = start_stoppable_scan(tmp_path, many_images(tmp_path / "images", 20), db, {"STOP_AT": moment})
    started = time.monotonic()
    out, err = scan.communicate(timeout=120)
    assert scan.returncode == 128 + signal.SIGTERM, err
    assert time.monotonic() - started < 30  # the whole scan, start-up included; a lock wait was 60 s
    assert err.splitlines()[-1] == "Stopped (SIGTERM).", err
    run = open_store(db).get_run(1)
    assert run.status == "interrupted"
    assert run.n_images == stored_predictions(db) < 20


def test_sigterm_while_a_finished_run_is_closed_exits_143_and_the_run_says_completed(tmp_path):
    """Every image is stored, so the run is complete; the stop still stops the command (no report, exit 143)."""
    db = tmp_path / "r.db"
    scan = start_stoppable_scan(tmp_path, many_images(tmp_path / "images", 5), db, {"STOP_AT": "UPDATE runs:1"})
    out, err = scan.communicate(timeout=120)
    assert scan.returncode == 128 + signal.SIGTERM, err
    assert err.splitlines()[-1] == "Stopped (SIGTERM).", err
    run = open_store(db).get_run(1)
    assert (run.status, run.n_images) == ("completed", 5)


def test_a_sigterm_that_python_drops_in_a_finaliser_still_stops_the_scan(tmp_path):
    """Once the signal was lost altogether: exit 0, the run `completed`, and `Terminated` printed (Python prints an
    exception raised inside a finaliser, such as SQLAlchemy's for a connection, and goes on)."""
    db = tmp_path / "r.db"
    scan = start_stoppable_scan(tmp_path, many_images(tmp_path / "images", 20), db, {"STOP_IN_FINALISER": "1"})
    out, err = scan.communicate(timeout=120)
    assert "Terminated: stopped by signal SIGTERM" in err  # raised in the finaliser, printed and dropped there
    assert scan.returncode == 128 + signal.SIGTERM, err
    assert err.splitlines()[-1] == "Stopped (SIGTERM).", err
    run = open_store(db).get_run(1)
    assert run.status == "interrupted"
    assert run.n_images == stored_predictions(db) < 20


def test_sigterm_at_any_moment_of_a_scan_stops_it_within_5_seconds_with_the_run_interrupted(tmp_path):
    """About one stop in six used to hang 60 s on "database is locked" (exit 1, run `running`), and once the
    signal was lost (exit 0, run `completed`). Stops at many moments of a scan that commits an image at a time."""
    images = many_images(tmp_path / "images", 300)
    for attempt in range(16):
        db = tmp_path / f"r{attempt}.db"
        scan = start_stoppable_scan(tmp_path, images, db)
        assert scan.stdout.readline() == "batch\n", scan.stderr.read()
        time.sleep(0.013 * attempt)
        stopped = time.monotonic()
        scan.send_signal(signal.SIGTERM)
        try:
            out, err = scan.communicate(timeout=30)
        finally:
            scan.kill()
        took = time.monotonic() - stopped
        assert scan.returncode == 128 + signal.SIGTERM, (attempt, err)
        assert took <= 5, (attempt, took)
        run = open_store(db).get_run(1)
        assert run.status == "interrupted", (attempt, err)
        assert run.n_images == stored_predictions(db) < 300


def full_disk_scan(tmp_path: Path, room_for_closing: bool) -> tuple[list[str], str, Path]:
    """A scan of 200 images whose database fills up after a few batches: SQLite's own limit on the database's pages
    gives the error of a full disk ("database or disk is full", SQLITE_FULL) at the same place, the store's commit.
    `room_for_closing`: the failed commit leaves room for closing the run (as the room a failed transaction wrote
    in the WAL often is), else it does not (the run row needs new pages for its new size)."""
    db = tmp_path / "r.db"
    args = ["scan", str(many_images(tmp_path / "images", 200)), "--model", fake_model(tmp_path), "--db", str(db),
            "--no-report", "--batch-size", "8"]  # fmt: skip
    assert CliRunner().invoke(cli, [*args, "--limit", "8"]).exit_code == 0  # the run and its tables exist
    full: list[bool] = []

    def limited(dbapi_connection, _record) -> None:
        (pages,) = dbapi_connection.execute("PRAGMA page_count").fetchone()
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages + 6}")

    def note_full(context) -> None:
        full.append(True)

    def room_once_full(conn, cursor, statement, *_args) -> None:
        if full and room_for_closing:
            cursor.execute("PRAGMA max_page_count = 100000")

    listeners = [("connect", limited), ("handle_error", note_full), ("before_cursor_execute", room_once_full)]
    for name, listener in listeners:
        event.listen(Engine, name, listener)
    try:
        result = CliRunner().invoke(cli, args)
    finally:
        for name, listener in listeners:
            event.remove(Engine, name, listener)
    assert result.exit_code == 1, result.output
    return args, result.output.splitlines()[-1], db


def test_a_full_disk_ends_the_run_failed_with_the_counts_of_what_is_stored(tmp_path):
    args, error, db = full_disk_scan(tmp_path, room_for_closing=True)
    assert error == f"Error: database sqlite:///{db} failed: database or disk is full"
    stored = stored_predictions(db)
    assert 8 < stored < 200
    run = open_store(db).get_run(1)
    assert (run.status, run.n_images, run.n_failed) == ("failed", stored, 0)
    assert run.finished_at is not None


def test_a_disk_too_full_to_close_the_run_says_so_and_the_run_shows_what_it_holds_until_a_rerun_finishes_it(
    tmp_path,
):
    """Today the run stayed `running` with no totals (shown as 0 images) although 192 predictions were stored,
    and the error did not say so."""
    args, error, db = full_disk_scan(tmp_path, room_for_closing=False)
    stored = stored_predictions(db)
    assert 8 < stored < 200
    assert error == (
        f"Error: database sqlite:///{db} failed: database or disk is full; run 1 could not be marked failed either, "
        f"so it still says running; it holds {stored} images: make room (or fix the database) and rerun the same "
        "command, which resumes it"
    )
    run = open_store(db).get_run(1)
    assert (run.status, run.n_images, run.n_failed) == ("running", stored, 0)
    listed = CliRunner().invoke(cli, ["runs", "--db", str(db)])
    assert " running " in listed.output and f" {stored} " in listed.output, listed.output

    rerun = CliRunner().invoke(cli, args)
    assert rerun.exit_code == 0, rerun.output
    assert f", {stored} already done" in rerun.output
    run = open_store(db).get_run(1)
    assert (run.status, run.n_images) == ("completed", 200)


#: A scan as a user configured it before the run key had a format version, and the key it had then (computed on
#: main at 2bdc553). Format 1 must keep giving it, byte for byte, or existing runs stop resuming.
KNOWN_RUN = dict(
    inputs=["/inspector-run-key-test/shop/images", "https://example.com/a.jpg"],
    model="tiny/llava",
    truth="/inspector-run-key-test/shop/catalogue.csv",
    truth_columns={"brand": "Marque"},
    truth_key="sku",
    prompt_file="prompt.txt",
    sizes=["8", "9"],
    fields_file="fields.toml",
    max_new_tokens=96,
    dtype="bf16",
    quantize="fp8",
    run_name="spring",
    price_tolerance="2%",
    batch_size=8,
    workers=3,
)
KNOWN_RUN_KEY = "dc37bd34d73adbb09ec168ac913aa6b6"


#: A scan with every setting changed (absolute paths: the key resolves them), and its key, computed on main at
#: 6b33d4d before ScanConfig's fields were reordered to be scan's options in --help order: the key does not
#: depend on the fields' order.
EVERY_SETTING = dict(
    CHANGED,
    inputs=["/inspector-run-key-test/every", "https://example.com/b.png"],
    truth="/inspector-run-key-test/every.csv",
    prompt=None,  # a prompt file, not both
)
EVERY_SETTING_KEY = "1b256e25d44e4fbf870c6ed2b5d57430"


def test_run_key_format_1_gives_existing_runs_the_key_they_were_stored_with(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert key(ScanConfig(**KNOWN_RUN), tmp_path) == KNOWN_RUN_KEY
    assert key(ScanConfig(**EVERY_SETTING), tmp_path) == EVERY_SETTING_KEY


def test_a_new_run_key_format_gives_every_run_a_new_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert scan.RUN_KEY_FORMAT == 1
    monkeypatch.setattr(scan_config, "RUN_KEY_FORMAT", 2)
    assert key(ScanConfig(**KNOWN_RUN), tmp_path) != KNOWN_RUN_KEY
    assert key(ScanConfig(inputs=["images"]), tmp_path) != key_in_format_1(ScanConfig(inputs=["images"]), tmp_path)


def key_in_format_1(config: ScanConfig, tmp_path: Path) -> str:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scan_config, "RUN_KEY_FORMAT", 1)
        return key(config, tmp_path)
