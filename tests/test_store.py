"""The results store on real databases: a SQLite file always, a throwaway PostgreSQL server when one can start."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from glob import glob
from pathlib import Path

import pytest
from sqlalchemy import UniqueConstraint, create_engine, inspect, text

from inspector.errors import RunNotFoundError
from inspector.fields import BUILTIN_FIELDS, FieldResult, Outcome, ProductFields, TruthRecord
from inspector.store import (
    ItemResult,
    Review,
    SchemaTooNewError,
    StoreError,
    migrations,
    open_store,
)
from inspector.store.engine import create_store_engine, database_url
from inspector.store.migrations import MIGRATIONS, apply_migrations, migration
from inspector.store.tables import Base

REPO = Path(__file__).resolve().parents[1]

RUN_ARGS = dict(
    name="base",
    model="tiny/llava",
    backend="hf",
    prompt_name="extract-json",
    prompt_text="Return JSON with brand, title, category, price, currency, sizes.",
    settings={"max_new_tokens": 64, "batch_size": 4, "dtype": "float32", "sizes": ["6.5", "8"]},
    versions={"torch": "2.x", "transformers": "5.x"},
    inputs=["images/"],
    truth_path="catalogue.csv",
)


def make_item(n: int, *, error: str | None = None, path: str | None = None) -> ItemResult:
    """A realistic item: parsed answer, catalogue row and per-field outcomes (brand right, price wrong)."""
    sha = f"{n:064x}"
    truth = TruthRecord(
        row_number=n + 1,
        key=f"SKU-{n}",
        fields=ProductFields(
            brand="Nike",
            title=f"Dunk Low {n}",
            category="Shoes",
            price=115.0,
            currency="USD",
            size_prices={"6.5": 115.0, "8": 120.0},
        ),
        image_ref=f"img/{n}.jpg",
    )
    if error is not None:
        return ItemResult(
            sha256=sha,
            path=path or f"img/{n}.jpg",
            n_bytes=0,
            error=error,
            truth=truth,
            field_results=[FieldResult("brand", Outcome.MISSED, None, "nike")],
        )
    parsed = ProductFields(
        brand="Nike",
        title=f"Dunk Low {n}",
        category="Shoes",
        price=99.5,
        currency="USD",
        size_prices={"6.5": 115.0},
    )
    return ItemResult(
        sha256=sha,
        path=path or f"img/{n}.jpg",
        width=640,
        height=480,
        format="JPEG",
        n_bytes=1234 + n,
        thumbnail=b"\xff\xd8fake-jpeg" + bytes([n % 256]),
        raw_output=f'{{"brand": "Nike", "price": 99.5, "n": {n}}}',
        parsed=parsed,
        latency_ms=12.5,
        truth=truth,
        field_results=[
            FieldResult("brand", Outcome.CORRECT, "nike", "nike"),
            FieldResult("price", Outcome.WRONG, "99.5", "115.0", score=15.5),
            FieldResult("size_price:8", Outcome.MISSED, None, "120.0"),
        ],
    )


def count(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchone()[0]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "results.db"


# --------------------------------------------------------------------------------------- round trip


def check_round_trip(store) -> None:
    """The API contract, shared by the SQLite and PostgreSQL tests."""
    run_id = store.start_run("key-1", **RUN_ARGS)
    assert store.done_shas(run_id) == set()
    hostile = "<script>alert(1)</script> \"quotes\" 'single' </script> nul:\x00 ünïcode ✓"
    items = [make_item(i) for i in range(3)] + [make_item(3, error=hostile, path=f"img/{hostile}.jpg")]
    store.add_batch(run_id, items)
    assert store.done_shas(run_id) == {item.sha256 for item in items}

    rows = store.run_rows(run_id)
    assert [r["sha256"] for r in rows] == sorted(
        (item.sha256 for item in items), key=lambda s: next(i.path for i in items if i.sha256 == s)
    )
    first = next(r for r in rows if r["sha256"] == items[0].sha256)
    assert first["path"] == "img/0.jpg"
    assert (first["width"], first["height"], first["format"], first["n_bytes"]) == (640, 480, "JPEG", 1234)
    assert first["thumbnail"] == items[0].thumbnail
    assert (
        first["predicted"]
        == ProductFields(
            brand="Nike",
            title="Dunk Low 0",
            category="Shoes",
            price=99.5,
            currency="USD",
            size_prices={"6.5": 115.0},
        ).to_dict()
    )
    assert first["truth"]["row_number"] == 1 and first["truth"]["key"] == "SKU-0"
    assert first["truth"]["fields"]["size_prices"] == {"6.5": 115.0, "8": 120.0}
    assert [(r["field"], r["outcome"], r["score"]) for r in first["field_results"]] == [
        ("brand", "correct", None),
        ("price", "wrong", 15.5),
        ("size_price:8", "missed", None),
    ]
    assert first["created_at"].tzinfo is not None

    failed = next(r for r in rows if r["sha256"] == items[3].sha256)
    assert failed["error"] == hostile.replace("\x00", "\ufffd")
    assert failed["path"] == f"img/{hostile}.jpg".replace("\x00", "\ufffd")
    assert failed["raw_output"] is None and failed["thumbnail"] is None
    assert failed["predicted"] == ProductFields().to_dict()

    assert [(r.field, r.outcome) for r in store.field_results(run_id)].count(("price", "wrong")) == 3
    assert len(store.run_rows(run_id, with_thumbnails=False)) == 4
    assert store.run_rows(run_id, with_thumbnails=False)[0]["thumbnail"] is None

    store.finish_run(run_id, "completed", {"elapsed_s": 2.0, "images_per_s": 2.0, "n_unmatched_rows": 1})
    info = store.get_run(run_id)
    assert info.status == "completed" and info.finished_at is not None
    assert (info.n_images, info.n_failed, info.elapsed_s, info.images_per_s) == (4, 1, 2.0, 2.0)
    assert info.stats["n_unmatched_rows"] == 1
    assert info.settings == RUN_ARGS["settings"] and info.inputs == ["images/"]
    assert info.label == f"run {run_id} (base)"

    # Resume: same key, same id, back to running; stored images are reported done and never stored twice.
    assert store.start_run("key-1", **RUN_ARGS) == run_id
    assert store.get_run(run_id).status == "running" and store.get_run(run_id).finished_at is None
    store.add_batch(run_id, items + [make_item(1)])
    assert len(store.run_rows(run_id)) == 4

    other = store.start_run("key-2", **{**RUN_ARGS, "name": "tuned"})
    assert other != run_id
    store.add_batch(other, [make_item(0), make_item(9)])
    assert [r["image_id"] for r in store.run_rows(other)][0] == first["image_id"]  # images are shared by runs
    assert store.get_run(None).id == other
    assert store.get_run("tuned").id == other
    assert store.get_run(str(run_id)).id == run_id
    assert store.get_run("key-1").id == run_id
    assert [r.id for r in store.list_runs()] == [run_id, other]
    with pytest.raises(RunNotFoundError, match="no run 'nope'.*tuned"):
        store.get_run("nope")
    with pytest.raises(ValueError, match="one of running, completed"):
        store.finish_run(run_id, "done", {})


def test_round_trip_sqlite(db: Path) -> None:
    with open_store(db) as store:
        check_round_trip(store)
    assert count(db, "SELECT count(*) FROM predictions") == 6
    assert count(db, "SELECT count(*) FROM images") == 5


def test_runs_without_a_name_or_data(db: Path) -> None:
    with open_store(str(db)) as store:
        with pytest.raises(RunNotFoundError, match="no runs in .* yet"):
            store.get_run(None)
        run_id = store.start_run("k", **{**RUN_ARGS, "name": None})
        assert store.get_run(None).label == f"run {run_id}"
        store.add_batch(run_id, [])
        store.finish_run(run_id, "interrupted", {})
        info = store.get_run(run_id)
        assert (info.status, info.n_images, info.n_failed) == ("interrupted", 0, 0)
        with pytest.raises(RunNotFoundError):
            store.add_batch(run_id + 1, [make_item(0)])


def test_duplicates_in_one_batch_and_late_image_facts(db: Path) -> None:
    with open_store(db) as store:
        run_id = store.start_run("k", **RUN_ARGS)
        bare = ItemResult(sha256=make_item(0).sha256, path="first/seen.jpg", error="download failed")
        store.add_batch(run_id, [bare, make_item(0)])  # same image twice in one batch: the first one counts
        rows = store.run_rows(run_id)
        assert (
            len(rows) == 1
            and rows[0]["error"] == "download failed"
            and rows[0]["first_path"] == "first/seen.jpg"
        )
        run2 = store.start_run("k2", **RUN_ARGS)
        store.add_batch(run2, [make_item(0)])  # seen again with its facts: the image row gets them
        row = store.run_rows(run2)[0]
        assert (row["width"], row["thumbnail"], row["first_path"]) == (
            640,
            make_item(0).thumbnail,
            "first/seen.jpg",
        )
    assert count(db, "SELECT count(*) FROM images") == 1


def check_unencodable_text(store) -> None:
    """A file name that is not UTF-8 (Python decodes it with surrogateescape) must not lose the batch or the run."""
    odd = "latin1 caf\udce9.png"
    run_id = store.start_run(
        "k-odd", **{**RUN_ARGS, "inputs": [f"dir\udcff/{odd}"], "truth_path": "cat\udce9.csv"}
    )
    store.add_batch(run_id, [make_item(7, path=f"img/{odd}")])
    (row,) = store.run_rows(run_id)
    assert row["path"] == "img/latin1 caf\ufffd.png" and row["first_path"] == row["path"]
    info = store.get_run(run_id)
    assert info.inputs == ["dir\ufffd/latin1 caf\ufffd.png"] and info.truth_path == "cat\ufffd.csv"


def test_file_names_that_are_not_utf8_are_stored(db: Path) -> None:
    with open_store(db) as store:
        check_unencodable_text(store)


def test_run_metrics_uses_stored_results(db: Path) -> None:
    scoring = pytest.importorskip("inspector.scoring")
    with open_store(db) as store:
        run_id = store.start_run("k", **RUN_ARGS)
        items = [make_item(i) for i in range(5)]
        store.add_batch(run_id, items)
        expected = scoring.summarise([r for item in items for r in item.field_results])
        got = store.run_metrics(run_id)
    assert {k: v.to_dict() for k, v in got.items()} == {k: v.to_dict() for k, v in expected.items()}
    assert got["brand"].to_dict()["accuracy"] == 1.0


# --------------------------------------------------------------------------------- schema, migrations


def test_sqlite_is_shared_safely(db: Path) -> None:
    with open_store(db) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_migrations_build_the_orm_schema(db: Path) -> None:
    open_store(db).close()
    engine = create_engine(f"sqlite:///{db}")
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        assert {c["name"] for c in inspector.get_columns(table.name)} == {c.name for c in table.columns}, (
            table.name
        )
        assert {i["name"] for i in inspector.get_indexes(table.name)} == {i.name for i in table.indexes}, (
            table.name
        )
        in_db = {tuple(u["column_names"]) for u in inspector.get_unique_constraints(table.name)}
        in_orm = {
            tuple(c.name for c in u.columns) for u in table.constraints if isinstance(u, UniqueConstraint)
        }
        assert in_db == in_orm | {(c.name,) for c in table.columns if c.unique}, table.name
    with engine.connect() as conn:
        names = conn.execute(text("SELECT name FROM _migrations ORDER BY name")).scalars().all()
    assert names == [fn.__name__ for fn in MIGRATIONS]
    engine.dispose()


#: The names databases have recorded in `_migrations`, in order: released names never change.
RELEASED_MIGRATIONS = [
    "m001_initial",
    "m002_query_indexes",
    "m003_field_result_confidence",
    "m004_reviews",
    "m005_prediction_retryable",
    "m006_field_values",
    "m007_retryable_path_index",
]


def test_migrations_are_registered_in_definition_order_under_their_released_names() -> None:
    names = [fn.__name__ for fn in MIGRATIONS]
    assert names[: len(RELEASED_MIGRATIONS)] == RELEASED_MIGRATIONS
    assert names == sorted(names)  # m00N: defined in order, so applied in order
    assert migrations.m006_field_values is MIGRATIONS[5]  # the decorator hands the function back


def test_one_decorated_function_adds_a_migration(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    open_store(db).close()  # a database of the current version
    monkeypatch.setattr(migrations, "MIGRATIONS", list(MIGRATIONS))

    @migration
    def m999_notes(conn) -> None:
        conn.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))

    open_store(db).close()  # the next open applies it
    assert count(db, "SELECT count(*) FROM _migrations WHERE name = 'm999_notes'") == 1
    assert count(db, "SELECT count(*) FROM notes") == 0
    with pytest.raises(ValueError, match="m999_notes is defined twice"):
        migration(m999_notes)
    assert [fn.__name__ for fn in migrations.MIGRATIONS][-1] == "m999_notes"  # once


def test_database_from_an_older_version_still_opens(db: Path) -> None:
    engine = create_store_engine(database_url(db))
    assert apply_migrations(engine, until="m001_initial") == ["m001_initial"]
    with engine.begin() as conn:  # rows as version 1 wrote them, with plain parameterised SQL
        conn.execute(
            text(
                "INSERT INTO runs (id, key, name, model, backend, prompt_name, prompt_text, settings, versions, "
                "inputs, status, started_at) VALUES (7, :key, 'old', 'm', 'hf', 'p', 'prompt', :s, '{}', '[]', "
                "'completed', '2024-01-02 03:04:05')"
            ),
            {"key": "old-key", "s": '{"max_new_tokens": 32}'},
        )
        conn.execute(
            text("INSERT INTO images (id, sha256, path) VALUES (1, :sha, 'a.jpg')"), {"sha": "ab" * 32}
        )
        conn.execute(
            text(
                "INSERT INTO predictions (id, run_id, image_id, path, raw_output, brand, price, size_prices, "
                "created_at) VALUES (1, 7, 1, 'a.jpg', 'Brand: Acme', 'Acme', 3.5, :sp, '2024-01-02 03:04:06')"
            ),
            {"sp": '{"8": 3.5}'},
        )
        conn.execute(
            text(
                "INSERT INTO field_results (prediction_id, run_id, image_id, field, outcome, predicted, expected) "
                "VALUES (1, 7, 1, 'brand', 'correct', 'acme', 'acme')"
            )
        )
    engine.dispose()

    with open_store(db) as store:
        info = store.get_run("old")
        assert (info.id, info.settings, info.started_at.year) == (7, {"max_new_tokens": 32}, 2024)
        [row] = store.run_rows(7)
        assert row["predicted"]["brand"] == "Acme" and row["predicted"]["size_prices"] == {"8": 3.5}
        assert row["field_results"][0]["outcome"] == "correct"
        assert store.done_shas(7) == {"ab" * 32}
        store.add_batch(7, [make_item(1)])  # and the old run takes new rows
    assert count(db, "SELECT count(*) FROM _migrations") == len(MIGRATIONS)
    assert (
        count(db, "SELECT count(*) FROM sqlite_master WHERE name = 'ix_field_results_run_field_outcome'") == 1
    )
    assert count(db, "SELECT count(*) FROM predictions") == 2


def test_database_from_a_newer_version_is_refused(db: Path) -> None:
    open_store(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO _migrations (name, applied_at) VALUES ('m999_future', '2030-01-01')")
    with pytest.raises(SchemaTooNewError, match="newer inspector.*m999_future"):
        open_store(db)


def test_bad_databases_are_clear_errors(tmp_path: Path) -> None:
    not_db = tmp_path / "report.html"
    not_db.write_text("<html>" + "x" * 5000)
    with pytest.raises(StoreError, match="not an inspector database"):
        open_store(not_db)
    with pytest.raises(StoreError, match="neither a file path nor a valid SQLAlchemy URL"):
        open_store("not a url://x")
    with pytest.raises(StoreError, match="pip install"):
        open_store("mysql+nosuchdriver://u:secret@localhost/db")


# ------------------------------------------------------------------------------ processes, crashes

WRITER = textwrap.dedent(
    """
    import random, sys, types
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[2])
    # inspector/__init__ registers the native models with transformers (seconds of imports on a busy CI
    # machine); the store needs none of it, so load the subpackages from an empty package object.
    package = types.ModuleType("inspector")
    package.__path__ = [sys.argv[1] + "/inspector"]
    sys.modules["inspector"] = package
    from test_store import RUN_ARGS, make_item
    from inspector.store import open_store

    db, n_batches, batch_size, seed = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    store = open_store(db)
    run_id = store.start_run("shared-run", **RUN_ARGS)
    order = list(range(n_batches))
    if seed:
        random.Random(seed).shuffle(order)
    for b in order:
        done = store.done_shas(run_id)
        items = [make_item(b * batch_size + i) for i in range(batch_size)]
        store.add_batch(run_id, [item for item in items if item.sha256 not in done])
        print("committed", b, flush=True)
    print("finished", flush=True)
    """
)


def start_writer(db: str, n_batches: int, batch_size: int, seed: int = 0) -> subprocess.Popen:
    args = [
        sys.executable,
        "-c",
        WRITER,
        str(REPO),
        str(Path(__file__).parent),
        db,
        str(n_batches),
        str(batch_size),
        str(seed),
    ]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_writer_loses_at_most_the_batch_in_flight(tmp_path: Path) -> None:
    db, batch_size, n_batches = tmp_path / "kill.db", 20, 400
    writer = start_writer(str(db), n_batches, batch_size)
    committed = 0
    for line in writer.stdout:
        committed += line.startswith("committed")
        if committed == 8:
            writer.send_signal(
                signal.SIGKILL
            )  # mid-way through a later batch, most likely inside a transaction
            break
    writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL, writer.stderr.read()

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = count(db, "SELECT count(*) FROM predictions")
    assert stored >= 8 * batch_size and stored % batch_size == 0  # whole batches only
    assert count(db, "SELECT count(DISTINCT image_id) FROM predictions") == stored
    assert count(db, "SELECT count(*) FROM truth") == stored
    assert count(db, "SELECT count(*) FROM field_results") == 3 * stored
    assert count(db, "SELECT count(*) FROM images") == stored

    # Rerun to the end (in another order): it resumes the same run and completes with every image exactly once.
    n_batches = 12
    rerun = start_writer(str(db), n_batches, batch_size, seed=1)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    total = max(n_batches * batch_size, stored)
    assert count(db, "SELECT count(*) FROM runs") == 1
    assert count(db, "SELECT count(*) FROM predictions") == total
    assert count(db, "SELECT count(DISTINCT image_id) FROM predictions") == total
    assert count(db, "SELECT count(*) FROM field_results") == 3 * total


def run_racing_writers(url: str, n_batches: int = 15, batch_size: int = 8) -> list[str]:
    """Two processes store the same images into the same run at the same time, in different orders; returns what
    each wrote to stderr."""
    writers = [start_writer(url, n_batches, batch_size, seed=seed) for seed in (1, 2)]
    errors = []
    for writer in writers:
        out, err = writer.communicate(timeout=180)
        assert writer.returncode == 0, err
        assert out.strip().endswith("finished")
        errors.append(err)
    return errors


def test_two_processes_never_store_an_image_twice(tmp_path: Path) -> None:
    db = tmp_path / "race.db"
    assert run_racing_writers(str(db)) == ["", ""]
    assert count(db, "SELECT count(*) FROM runs") == 1
    assert count(db, "SELECT count(*) FROM predictions") == 15 * 8
    assert count(db, "SELECT count(*) FROM truth") == 15 * 8
    assert count(db, "SELECT count(*) FROM field_results") == 3 * 15 * 8
    assert count(db, "SELECT count(*) FROM images") == 15 * 8


# ----------------------------------------------------------------------------------------- Postgres


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    """A server URL without database name: $INSPECTOR_TEST_POSTGRES_URL, or a throwaway local cluster."""
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg (pip install 'psycopg[binary]')")
    if os.environ.get("INSPECTOR_TEST_POSTGRES_URL"):
        yield os.environ["INSPECTOR_TEST_POSTGRES_URL"]
        return
    initdb = shutil.which("initdb") or next(iter(sorted(glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    if initdb is None:
        pytest.skip("no PostgreSQL server here (install postgresql or set INSPECTOR_TEST_POSTGRES_URL)")
    workdir = Path(tempfile.mkdtemp(prefix="inspector-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: use the Debian package's system user
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        prefix = ["runuser", "-u", "postgres", "--"]
        os.chown(workdir, user.pw_uid, user.pw_gid)
    bindir, data, port = Path(initdb).parent, workdir / "data", _free_port()
    started = False
    try:
        subprocess.run(
            [*prefix, initdb, "-D", data, "-A", "trust", "-U", "inspector", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                *prefix,
                bindir / "pg_ctl",
                "-D",
                data,
                "-l",
                workdir / "log",
                "-w",
                "-t",
                "60",
                "-o",
                f"-k {workdir} -p {port} -c listen_addresses='' -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=90,
        )
        started = True
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"could not start a throwaway PostgreSQL server: {exc}")
    try:
        yield f"postgresql+psycopg://inspector@/postgres?host={workdir}&port={port}"
    finally:
        if started:
            subprocess.run(
                [*prefix, bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True
            )
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str, request) -> Iterator[str]:
    """A fresh, empty database on the server for one test."""
    name = (
        "inspector_"
        + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]
        + f"_{time.time_ns()}"
    )
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')  # name built from [a-z0-9_] only
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def test_round_trip_postgres(postgres_url: str) -> None:
    open_store(postgres_url).close()  # migrating twice is a no-op
    with open_store(postgres_url) as store:
        assert store.engine.dialect.name == "postgresql"
        check_round_trip(store)


def test_file_names_that_are_not_utf8_are_stored_on_postgres(postgres_url: str) -> None:
    with open_store(postgres_url) as store:
        check_unencodable_text(store)


def test_long_size_labels_fit_the_field_column_on_postgres(postgres_url: str) -> None:
    """A model may invent a size label of any length; field_results.field is VARCHAR(100)."""
    with open_store(postgres_url) as store:
        run_id = store.start_run("k", **RUN_ARGS)
        item = make_item(3)
        item.field_results.append(FieldResult("size_price:" + "AB " * 60, Outcome.SPURIOUS, "5.00", None))
        store.add_batch(run_id, [item])
        (row,) = store.run_rows(run_id)
        assert len(row["field_results"]) == 4 and row["field_results"][-1]["field"].startswith(
            "size_price:AB"
        )


def check_batch_replacements(store) -> dict:
    """A retryable failure replaced by a later answer of the same path, and an image seen again with the facts
    its first sighting lacked: what every table holds afterwards, so that SQLite and PostgreSQL can be compared."""
    first = store.start_run("k1", **RUN_ARGS)
    second = store.start_run("k2", **{**RUN_ARGS, "name": "second"})
    failed = make_item(1, error="HTTP 503", path="https://shop.example/1.jpg")
    failed.retryable = True
    store.add_batch(first, [failed, make_item(2, error="unreadable")])
    store.add_batch(first, [make_item(3, path="https://shop.example/1.jpg")])  # the download worked this time
    store.add_batch(second, [make_item(1)])  # the stand-in image of the failure, now with its facts
    rows = {row["path"]: row for row in store.run_rows(first)}
    assert set(rows) == {"https://shop.example/1.jpg", "img/2.jpg"}
    assert rows["https://shop.example/1.jpg"]["error"] is None
    assert rows["https://shop.example/1.jpg"]["predicted"]["brand"] == "Nike"
    assert rows["img/2.jpg"]["error"] == "unreadable"  # not retryable: it stands
    with store.engine.connect() as conn:
        tables = ("images", "predictions", "truth", "field_values", "field_results")
        counts = {table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() for table in tables}
        width = conn.execute(text("SELECT width FROM images WHERE sha256 = :sha"), {"sha": f"{1:064x}"}).scalar()
    assert width == 640
    return counts


def test_the_postgres_path_replaces_and_fills_as_the_generic_path_does(postgres_url: str, db: Path) -> None:
    with open_store(db) as store:
        generic = check_batch_replacements(store)
    with open_store(postgres_url) as store:
        assert check_batch_replacements(store) == generic


def test_two_processes_on_postgres(postgres_url: str) -> None:
    stderr = run_racing_writers(postgres_url)
    assert stderr == ["", ""]  # the races are settled quietly: no driver warnings
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM predictions")).scalar() == 15 * 8
        assert conn.execute(text("SELECT count(*) FROM images")).scalar() == 15 * 8
        assert conn.execute(text("SELECT count(*) FROM field_results")).scalar() == 3 * 15 * 8
    engine.dispose()


def test_postgres_race_is_decided_by_the_unique_constraint(postgres_url: str, caplog) -> None:
    """Another process inserts the same (run, image) while add_batch runs: its row wins, ours is skipped, and
    nothing is logged (an aborted psycopg pipeline used to log "pipeline aborted" per race)."""
    import logging

    caplog.set_level(logging.WARNING)
    with open_store(postgres_url) as store:
        run_id = store.start_run("k", **RUN_ARGS)
        other_run = store.start_run("k2", **RUN_ARGS)
        store.add_batch(other_run, [make_item(1)])  # the image row exists already
        image_id = store.run_rows(other_run)[0]["image_id"]
        errors: list[BaseException] = []

        def add() -> None:
            try:
                store.add_batch(run_id, [make_item(i) for i in range(1, 101)])  # 99 queued behind the race
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        with store.engine.connect() as other:
            transaction = other.begin()
            other.execute(
                text(
                    "INSERT INTO predictions (run_id, image_id, path, created_at) "
                    "VALUES (:run, :image, 'other-process.jpg', now())"
                ),
                {"run": run_id, "image": image_id},
            )
            worker = threading.Thread(target=add)
            worker.start()
            worker.join(1.5)
            assert worker.is_alive()  # waiting on the unique index for the other transaction
            transaction.commit()
        worker.join(30)
        assert not worker.is_alive() and not errors, errors
        rows = {row["sha256"]: row for row in store.run_rows(run_id)}
        assert rows[make_item(1).sha256]["path"] == "other-process.jpg"
        assert rows[make_item(1).sha256]["field_results"] == []
        assert rows[make_item(2).sha256]["path"] == "img/2.jpg"
        assert len(rows[make_item(2).sha256]["field_results"]) == 3
        assert len(rows) == 100
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# ------------------------------------------------------------------------------- docs/schema.md


def schema_doc_queries(*languages: str) -> list[str]:
    text_ = (REPO / "docs" / "schema.md").read_text(encoding="utf-8")
    return [
        body for language, body in re.findall(r"```(\w+)\n(.*?)```", text_, re.S) if language in languages
    ]


def fill_two_runs(store) -> None:
    """Run 1 and run 2 over the same images, as the documented queries expect."""
    first = store.start_run("doc-1", **RUN_ARGS)
    second = store.start_run("doc-2", **{**RUN_ARGS, "name": "tuned"})
    assert (first, second) == (1, 2)
    items = [make_item(i) for i in range(4)]
    for index, item in enumerate(items):  # the wrong prices, with how sure the model was of them
        item.field_results[1].confidence = 0.5 + index / 10
    store.add_batch(first, items + [make_item(4, error="truncated file")])
    store.save_reviews([Review(first, f"{0:064x}", "price", "catalogue_wrong", "99.0", "ana")])
    fixed = make_item(0)
    fixed.field_results[1] = FieldResult("price", Outcome.CORRECT, "115.0", "115.0", score=0.0)
    store.add_batch(second, [fixed, make_item(1)])


def check_doc_queries(url: str, languages: tuple[str, ...]) -> None:
    queries = schema_doc_queries(*languages)
    assert len(queries) >= 9
    engine = create_engine(url)
    with engine.connect() as conn:
        results = [conn.execute(text(sql.strip().rstrip(";"))).all() for sql in queries]
    engine.dispose()
    assert all(results), [sql for sql, rows in zip(queries, results, strict=True) if not rows]
    by_start = {sql.split("\n")[0]: rows for sql, rows in zip(queries, results, strict=True)}
    fixed = next(rows for start, rows in by_start.items() if start.startswith("SELECT i.path, a.predicted"))
    assert fixed == [("img/0.jpg", "99.5", "115.0", "115.0")]


def test_schema_doc_queries_run_on_sqlite(db: Path) -> None:
    with open_store(db) as store:
        fill_two_runs(store)
    check_doc_queries(f"sqlite:///{db}", ("sql", "sqlite"))


def test_schema_doc_queries_run_on_postgres(postgres_url: str) -> None:
    with open_store(postgres_url) as store:
        fill_two_runs(store)
    check_doc_queries(postgres_url, ("sql", "postgresql"))


def test_two_scans_on_postgres_store_each_image_once_and_print_no_warnings(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two `inspector scan` processes on the same images and the same run, at the same time, as two GPUs would."""
    import json

    images = REPO / "sample_images"
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(['{"brand": "Acme", "price": 10}'] * 100))
    command = [sys.executable, "-m", "inspector", "scan", str(images), "--model", f"fake:{answers}",
               "--truth", str(images / "truth.csv"), "--db", postgres_url, "--no-report", "--batch-size", "2"]  # fmt: skip
    scans = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [scan.communicate(timeout=300) for scan in scans]
    assert [scan.returncode for scan in scans] == [0, 0], outputs
    assert [err for _, err in outputs if "pipeline" in err.lower() or "warning" in err.lower()] == []
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        n_images = conn.execute(text("SELECT count(*) FROM images")).scalar()
        assert conn.execute(text("SELECT count(*) FROM predictions")).scalar() == n_images
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar() == 1
        # The run's totals are the table's, not the last writer's share of it.
        assert conn.execute(text("SELECT n_images FROM runs")).scalar() == n_images
    engine.dispose()


# ----------------------------------------------------------------------------- field values (m006)


def _custom_fields_round_trip(url: str) -> None:
    """Custom fields are stored like built-ins: one long-form row per value, read back by name with the run's
    declarations; the pivot of docs/schema.md gives one row per image."""
    from inspector.fields import FieldSet, FieldSpec

    fieldset = FieldSet((*BUILTIN_FIELDS, FieldSpec("colour", "category"), FieldSpec("volume", "number", unit="ml")))
    item = make_item(0)
    item.parsed["colour"], item.parsed["volume"] = "Navy", 500.0
    item.truth.fields["colour"], item.truth.fields["volume"] = "navy", 330.0
    with open_store(url) as store:
        run = store.start_run("custom", **{**RUN_ARGS, "settings": {"fields": fieldset.to_json()}})
        store.add_batch(run, [item, make_item(1)])
        assert store.get_run(run).fields == fieldset
        rows = {row["path"]: row for row in store.run_rows(run)}
        assert rows["img/0.jpg"]["predicted"]["colour"] == "Navy" and rows["img/0.jpg"]["predicted"]["volume"] == 500.0
        assert rows["img/0.jpg"]["truth"]["fields"]["volume"] == 330.0
        assert rows["img/1.jpg"]["predicted"]["colour"] is None  # declared, not answered
        with store.engine.connect() as conn:
            wide = conn.execute(
                text(
                    "SELECT i.path, MAX(CASE WHEN v.field = 'colour' AND v.source = 'predicted' THEN v.value END), "
                    "MAX(CASE WHEN v.field = 'volume' AND v.source = 'truth' THEN v.number END), "
                    "MAX(CASE WHEN v.field = 'brand' AND v.source = 'predicted' THEN v.value END) "
                    "FROM field_values v JOIN images i ON i.id = v.image_id WHERE v.run_id = :run GROUP BY i.path "
                    "ORDER BY i.path"
                ),
                {"run": run},
            ).all()
        assert [tuple(row) for row in wide] == [("img/0.jpg", "Navy", 330.0, "Nike"), ("img/1.jpg", None, None, "Nike")]


def _database_before_field_values(url: str) -> None:
    """A database at m005 (values only in the predictions/truth columns) gets them copied into field_values."""
    engine = create_store_engine(database_url(url))
    apply_migrations(engine, until="m005_prediction_retryable")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO runs (id, key, name, model, backend, prompt_name, prompt_text, settings, versions, "
                "inputs, status, started_at) VALUES (7, 'old-key', 'old', 'm', 'hf', 'p', 'prompt', '{}', '{}', "
                "'[]', 'completed', '2024-01-02 03:04:05')"
            )
        )
        conn.execute(text("INSERT INTO images (id, sha256, path) VALUES (1, :sha, 'a.jpg')"), {"sha": "ab" * 32})
        conn.execute(
            text(
                "INSERT INTO predictions (id, run_id, image_id, path, brand, price, size_prices, created_at) "
                "VALUES (1, 7, 1, 'a.jpg', 'Acme', 3.5, :sp, '2024-01-02 03:04:06')"
            ),
            {"sp": '{"8": 3.5}'},
        )
        conn.execute(
            text(
                "INSERT INTO truth (run_id, image_id, row_number, brand, currency, size_prices) "
                "VALUES (7, 1, 1, 'ACME', 'USD', NULL)"
            )
        )
    engine.dispose()
    with open_store(url) as store:
        [row] = store.run_rows(7)
        assert row["predicted"] == {**row["predicted"], "brand": "Acme", "price": 3.5, "size_prices": {"8": 3.5}}
        assert row["predicted"]["title"] is None
        assert row["truth"]["fields"]["brand"] == "ACME" and row["truth"]["fields"]["currency"] == "USD"
        assert row["truth"]["fields"]["size_prices"] == {}


def test_custom_fields_round_trip_on_sqlite(db: Path) -> None:
    _custom_fields_round_trip(str(db))


def test_custom_fields_round_trip_on_postgres(postgres_url: str) -> None:
    _custom_fields_round_trip(postgres_url)


def test_field_values_are_filled_from_an_older_database_on_sqlite(db: Path) -> None:
    _database_before_field_values(str(db))


def test_field_values_are_filled_from_an_older_database_on_postgres(postgres_url: str) -> None:
    _database_before_field_values(postgres_url)


def check_unreadable_cells_round_trip(store) -> None:
    """Issue 20.1: an unreadable catalogue cell is stored with its column and reason (field_values, source
    'unreadable'), read back with the catalogue row, and its result is left out of the metrics."""
    from dataclasses import replace

    from inspector.fields import CellProblem

    run_id = store.start_run("k", **RUN_ARGS)
    item = make_item(3)
    cell = CellProblem(4, "Full Price", "1,290", "ambiguous price", "price")
    item.truth = replace(item.truth, fields=ProductFields({**item.truth.fields, "price": None}), problems=(cell,))
    item.field_results = [
        r if r.field != "price" else FieldResult("price", Outcome.UNREADABLE, "99.50", "1,290")
        for r in item.field_results
    ]
    store.add_batch(run_id, [item])
    (row,) = store.run_rows(run_id)
    assert row["truth"]["unreadable"] == [
        {"field": "price", "value": "1,290", "column": "Full Price", "reason": "ambiguous price"}
    ]
    assert row["truth"]["fields"]["price"] is None
    metrics = store.run_metrics(run_id)["price"]
    assert (metrics.n, metrics.unreadable) == (0, 1)


def test_unreadable_cells_round_trip_sqlite(tmp_path: Path) -> None:
    with open_store(tmp_path / "r.db") as store:
        check_unreadable_cells_round_trip(store)


def test_unreadable_cells_round_trip_postgres(postgres_url: str) -> None:
    with open_store(postgres_url) as store:
        check_unreadable_cells_round_trip(store)
