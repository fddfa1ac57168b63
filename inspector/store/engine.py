"""Turning `--db` (a file path or any SQLAlchemy URL) into an Engine that several processes can share."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from inspector.errors import StoreError
from inspector.outputs import check_path_names, writable_problem

#: How long a SQLite writer waits for another process's transaction before giving up.
SQLITE_BUSY_TIMEOUT_MS = 60_000

_DRIVER_HINTS = {
    "postgresql": "pip install 'psycopg[binary]' and use a postgresql+psycopg://user:password@host/dbname URL",
    "mysql": "pip install pymysql and use a mysql+pymysql://user:password@host/dbname URL",
}


def shown_database(url_or_path: str | Path | URL) -> str:
    """How output and messages name a `--db`: a file path as given, a URL with its password as `***`.

    The one place that decides this: scan's echo and summary, the report and every error use it."""
    if isinstance(url_or_path, URL):
        return url_or_path.render_as_string(hide_password=True)
    if isinstance(url_or_path, Path) or "://" not in url_or_path:
        return str(url_or_path)
    try:
        return make_url(url_or_path).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy can read: hide all of user:password@ but the user
        return re.sub(r"^([^:/]*://[^:/@]*):.*@", r"\1:***@", url_or_path)


def database_url(url_or_path: str | Path) -> URL:
    """A plain path (no `://`) is a SQLite file; anything else must be a SQLAlchemy URL."""
    if isinstance(url_or_path, Path) or "://" not in url_or_path:
        path = Path(url_or_path).expanduser()
        return URL.create("sqlite", database=str(path))
    try:
        return make_url(url_or_path)
    except (ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is not a number
        raise StoreError(
            f"--db {shown_database(url_or_path)!r} is neither a file path nor a valid SQLAlchemy URL "
            "(e.g. results.db or postgresql+psycopg://user:password@host/dbname)"
        ) from exc


def sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL (None for other databases and in-memory SQLite)."""
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database)
    return None


def create_store_engine(url: URL, *, read_only: bool = False) -> Engine:
    """An Engine for `url`; SQLAlchemy's errors about the URL itself become `StoreError`s that say what to fix.

    `read_only` (SQLite files): connections that cannot write, so that reading takes no lock and works where the
    file or its folder is read-only. A writer checks up front that it can write there (before a model loads)."""
    shown = shown_database(url)
    path = sqlite_file(url)
    if path is not None:
        check_path_names(path, "--db")
    if path is not None and path.is_dir():
        raise StoreError(f"--db {path} is a folder; pass a database file name, e.g. {path / 'inspector.db'}")
    if path is not None and read_only:
        return _read_only_sqlite_engine(path)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder of database {url.database}: {exc.strerror or exc}; pass another --db"
            ) from exc
        _check_sqlite_writable(path)
    try:
        engine = create_engine(url)
    except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
        hint = _DRIVER_HINTS.get(url.get_backend_name(), "install the database driver named in the URL")
        raise StoreError(f"cannot use database {shown}: {exc}; {hint}") from exc
    except (ArgumentError, TypeError, ValueError) as exc:  # e.g. an unknown ?option= in the URL
        raise StoreError(f"cannot use database {shown}: {exc}; check the --db URL") from exc
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _check_sqlite_writable(path: Path) -> None:
    """SQLite in WAL mode writes the file and creates `-wal`/`-shm` files beside it: try both now, as permission
    bits do not tell (root ignores them; read-only mounts and immutable files do not show in them)."""
    problem = writable_problem(path.parent)
    if problem is None and path.exists():
        try:
            with open(path, "ab"):
                pass
        except OSError as exc:
            problem = exc.strerror or str(exc)
    if problem is not None:
        raise StoreError(
            f"cannot write database {path}: {problem}; pass --db in a folder you can write to "
            "(reading it with `inspector runs` / `inspector report` works as it is)"
        )


def _read_only_sqlite_engine(path: Path) -> Engine:
    """Connections opened with `mode=ro`. A WAL database whose folder is read-only cannot even be read that way
    when its `-shm` file is gone (SQLite must create it); then nobody can be writing it (a writer has a `-wal` file
    there), so it is opened `immutable`, which needs neither."""
    if not path.is_file():
        raise StoreError(f"no database at {path}; run `inspector scan` first or pass --db")
    uri = path.resolve().as_uri()

    def connect() -> sqlite3.Connection:
        try:
            return _sqlite_connect(f"{uri}?mode=ro")
        except sqlite3.OperationalError:
            if Path(f"{path}-wal").exists():
                raise
            return _sqlite_connect(f"{uri}?mode=ro&immutable=1")

    engine = create_engine("sqlite://", creator=connect, poolclass=NullPool)
    _configure_sqlite(engine, read_only=True)
    return engine


def _sqlite_connect(uri: str) -> sqlite3.Connection:
    connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
    connection.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opening is lazy: fail here, not later
    return connection


def _configure_sqlite(engine: Engine, *, read_only: bool = False) -> None:
    """WAL + busy timeout so one writer per GPU and readers can share a file, and real transactions.

    pysqlite's own transaction handling starts transactions late and never for DDL; following SQLAlchemy's
    documented recipe we switch it off and emit BEGIN ourselves. Writers ask for BEGIN IMMEDIATE (via the
    `inspector_begin` execution option) so they take the write lock up front instead of failing with "database
    is locked" when a read transaction later tries to write.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS:d}")
        if not read_only:  # switching the journal mode writes the file
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        mode = conn.get_execution_options().get("inspector_begin")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")
