"""Turning `--db` (a file path or any SQLAlchemy URL) into an Engine that several processes can share."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from inspector.errors import StoreError

#: How long a SQLite writer waits for another process's transaction before giving up.
SQLITE_BUSY_TIMEOUT_MS = 60_000

_DRIVER_HINTS = {
    "postgresql": "pip install 'psycopg[binary]' and use a postgresql+psycopg://user:password@host/dbname URL",
    "mysql": "pip install pymysql and use a mysql+pymysql://user:password@host/dbname URL",
}


def database_url(url_or_path: str | Path) -> URL:
    """A plain path (no `://`) is a SQLite file; anything else must be a SQLAlchemy URL."""
    if isinstance(url_or_path, Path) or "://" not in url_or_path:
        path = Path(url_or_path).expanduser()
        return URL.create("sqlite", database=str(path))
    try:
        return make_url(url_or_path)
    except ArgumentError as exc:
        raise StoreError(
            f"--db {url_or_path!r} is neither a file path nor a valid SQLAlchemy URL "
            "(e.g. results.db or postgresql+psycopg://user:password@host/dbname)"
        ) from exc


def create_store_engine(url: URL) -> Engine:
    """An Engine for `url`; SQLAlchemy's errors about the URL itself become `StoreError`s that say what to fix."""
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        try:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder of database {url.database}: {exc.strerror or exc}; pass another --db"
            ) from exc
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


def _configure_sqlite(engine: Engine) -> None:
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
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        mode = conn.get_execution_options().get("inspector_begin")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")
