"""Append-only, named schema migrations, in the style of sqlite-utils and llm.

Each migration is a function of a SQLAlchemy `Connection` that describes its tables with frozen Core definitions
(never the ORM models, which describe only the latest schema). Applied names go into `_migrations`, so a database
written by an older version gets the missing steps on open.

Adding one is one edit: define `m00N_what_it_does` decorated with `@migration` at the end of this file (the order of
definition is the order of application) and update `inspector.store.tables` to match. Never rename, edit or reorder
a released migration: databases record the names they have applied.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    inspect,
    select,
    text,
)

from inspector.errors import SchemaTooNewError

Migration = Callable[[Connection], None]

#: Every migration, in the order they are applied (the order they are defined below). Append only.
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register `fn` as the next migration; its name is what databases record, so it must be new."""
    if any(known.__name__ == fn.__name__ for known in MIGRATIONS):
        raise ValueError(f"migration {fn.__name__} is defined twice")
    MIGRATIONS.append(fn)
    return fn


_migrations_table = Table(
    "_migrations",
    MetaData(),
    Column("name", String(200), primary_key=True),
    Column("applied_at", DateTime(timezone=True)),
)


def applied_migrations(conn: Connection) -> set[str]:
    _migrations_table.create(conn, checkfirst=True)
    return set(conn.execute(select(_migrations_table.c.name)).scalars())


def pending_migrations(engine: Engine) -> list[str]:
    """Names of the migrations this database lacks, read without writing or locking anything (a current schema
    is then opened with no write lock at all). Raises SchemaTooNewError for a newer inspector's database."""
    known = [fn.__name__ for fn in MIGRATIONS]
    with engine.connect() as conn:
        if not inspect(conn).has_table(_migrations_table.name):
            return known
        done = set(conn.execute(select(_migrations_table.c.name)).scalars())
    _refuse_newer(done, known)
    return [name for name in known if name not in done]


def _refuse_newer(done: set[str], known: list[str]) -> None:
    unknown = sorted(done - set(known))
    if unknown:
        raise SchemaTooNewError(
            f"the database was written by a newer inspector (it has migrations {', '.join(unknown)} "
            "that this version does not know): upgrade inspector, or use another --db"
        )


def apply_migrations(engine: Engine, *, until: str | None = None) -> list[str]:
    """Apply the missing migrations in one transaction; returns the names applied now.

    `until` stops after that migration (tests use it to build a database as an older version wrote it).
    Concurrent openers (one process per GPU) are serialised: SQLite by a write lock taken up front,
    Postgres by a transaction-scoped advisory lock.
    """
    known = [fn.__name__ for fn in MIGRATIONS]
    if until is not None and until not in known:
        raise ValueError(f"unknown migration {until!r}; known: {', '.join(known)}")
    if until is None and not pending_migrations(engine):
        return []  # the usual case: no write lock, so readers and many writers open at once
    with engine.execution_options(inspector_begin="IMMEDIATE").begin() as conn:
        if conn.dialect.name == "postgresql":
            # Any constant works: it only has to be the same in every process that migrates this database.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": 0x1A5EC7})
        done = applied_migrations(conn)
        _refuse_newer(done, known)
        applied_now = []
        for fn in MIGRATIONS:
            name = fn.__name__
            if name not in done:
                fn(conn)
                conn.execute(
                    insert(_migrations_table).values(name=name, applied_at=datetime.now(timezone.utc))
                )
                applied_now.append(name)
            if name == until:
                break
        return applied_now


# ------------------------------------------------------------------------ the migrations, oldest first


@migration
def m001_initial(conn: Connection) -> None:
    """Runs, images, predictions, truth and per-field results."""
    md = MetaData()
    json = JSON(none_as_null=True)
    Table(
        "runs",
        md,
        Column("id", Integer, primary_key=True),
        Column("key", String(128), nullable=False, unique=True),
        Column("name", String(200)),
        Column("model", Text, nullable=False),
        Column("backend", String(100), nullable=False),
        Column("prompt_name", String(200), nullable=False),
        Column("prompt_text", Text, nullable=False),
        Column("settings", json),
        Column("versions", json),
        Column("inputs", json),
        Column("truth_path", Text),
        Column("status", String(20), nullable=False),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("finished_at", DateTime(timezone=True)),
        Column("elapsed_s", Float),
        Column("n_images", Integer),
        Column("n_failed", Integer),
        Column("images_per_s", Float),
        Column("stats", json),
    )
    Table(
        "images",
        md,
        Column("id", Integer, primary_key=True),
        Column("sha256", String(64), nullable=False, unique=True),
        Column("path", Text, nullable=False),
        Column("width", Integer),
        Column("height", Integer),
        Column("format", String(20)),
        Column("n_bytes", Integer),
        Column("thumbnail", LargeBinary),
    )
    Table(
        "predictions",
        md,
        Column("id", Integer, primary_key=True),
        Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
        Column("image_id", Integer, ForeignKey("images.id"), nullable=False),
        Column("path", Text, nullable=False),
        Column("raw_output", Text),
        Column("brand", Text),
        Column("title", Text),
        Column("category", Text),
        Column("price", Float),
        Column("currency", String(20)),
        Column("size_prices", json),
        Column("latency_ms", Float),
        Column("error", Text),
        Column("created_at", DateTime(timezone=True), nullable=False),
        UniqueConstraint("run_id", "image_id", name="uq_predictions_run_image"),
    )
    Table(
        "truth",
        md,
        Column("id", Integer, primary_key=True),
        Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
        Column("image_id", Integer, ForeignKey("images.id"), nullable=False),
        Column("row_number", Integer, nullable=False),
        Column("key", Text),
        Column("image_ref", Text),
        Column("brand", Text),
        Column("title", Text),
        Column("category", Text),
        Column("price", Float),
        Column("currency", String(20)),
        Column("size_prices", json),
        UniqueConstraint("run_id", "image_id", name="uq_truth_run_image"),
    )
    Table(
        "field_results",
        md,
        Column("id", Integer, primary_key=True),
        Column("prediction_id", Integer, ForeignKey("predictions.id"), nullable=False),
        Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
        Column("image_id", Integer, ForeignKey("images.id"), nullable=False),
        Column("field", String(100), nullable=False),
        Column("outcome", String(20), nullable=False),
        Column("predicted", Text),
        Column("expected", Text),
        Column("score", Float),
    )
    md.create_all(conn)


@migration
def m002_query_indexes(conn: Connection) -> None:
    """Indexes for the common queries: one run's field outcomes, one image across runs, runs by name."""
    md = MetaData()
    runs = Table("runs", md, Column("name", String(200)))
    predictions = Table("predictions", md, Column("image_id", Integer))
    truth = Table("truth", md, Column("image_id", Integer))
    field_results = Table(
        "field_results",
        md,
        Column("run_id", Integer),
        Column("field", String(100)),
        Column("outcome", String(20)),
        Column("prediction_id", Integer),
        Column("image_id", Integer),
    )
    indexes = [
        Index("ix_runs_name", runs.c.name),
        Index("ix_predictions_image", predictions.c.image_id),
        Index("ix_truth_image", truth.c.image_id),
        Index(
            "ix_field_results_run_field_outcome",
            field_results.c.run_id,
            field_results.c.field,
            field_results.c.outcome,
        ),
        Index("ix_field_results_prediction", field_results.c.prediction_id),
        Index("ix_field_results_image", field_results.c.image_id),
    ]
    for index in indexes:
        index.create(conn)


@migration
def m003_field_result_confidence(conn: Connection) -> None:
    """field_results.confidence: how sure the model was of its value (0..1; NULL without a value)."""
    conn.execute(text("ALTER TABLE field_results ADD COLUMN confidence FLOAT"))


@migration
def m004_reviews(conn: Connection) -> None:
    """reviews: an inspector's decision on one field of one image in one run (catalogue_wrong, model_wrong or
    both_fine, with an optional corrected value), who made it and when. One decision per run, image and field."""
    md = MetaData()
    Table("runs", md, Column("id", Integer, primary_key=True))
    Table("images", md, Column("id", Integer, primary_key=True))
    Table(
        "reviews",
        md,
        Column("id", Integer, primary_key=True),
        Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
        Column("image_id", Integer, ForeignKey("images.id"), nullable=False),
        Column("field", String(100), nullable=False),
        Column("decision", String(20), nullable=False),
        Column("corrected_value", Text),
        Column("reviewer", String(200)),
        Column("reviewed_at", DateTime(timezone=True), nullable=False),
        UniqueConstraint("run_id", "image_id", "field", name="uq_reviews_run_image_field"),
    )
    md.tables["reviews"].create(conn)


@migration
def m005_prediction_retryable(conn: Connection) -> None:
    """predictions.retryable: the image failed in a way that may work later (a download that timed out or got
    HTTP 429/5xx); a rerun of the run tries it again and replaces the row. NULL/false: the outcome stands."""
    conn.execute(text("ALTER TABLE predictions ADD COLUMN retryable BOOLEAN"))


#: The value columns of predictions and truth before m006; frozen history, not the current field list.
_M006_LEGACY_TEXT = ("brand", "title", "category", "currency")


@migration
def m006_field_values(conn: Connection) -> None:
    """Every field value in one long-form table (custom fields included), filled from the existing columns."""
    md = MetaData()
    json = JSON(none_as_null=True)
    field_values = Table(
        "field_values",
        md,
        Column("id", Integer, primary_key=True),
        Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
        Column("image_id", Integer, ForeignKey("images.id"), nullable=False),
        Column("source", String(20), nullable=False),
        Column("field", String(100), nullable=False),
        Column("value", Text),
        Column("number", Float),
        Column("data", json),
        UniqueConstraint(
            "run_id", "image_id", "source", "field", name="uq_field_values_run_image_source_field"
        ),
        Index("ix_field_values_run_field", "run_id", "field"),
        Index("ix_field_values_image", "image_id"),
    )
    Table("runs", md, Column("id", Integer, primary_key=True))
    Table("images", md, Column("id", Integer, primary_key=True))
    md.create_all(conn, tables=[field_values])
    for source, table in (("predicted", "predictions"), ("truth", "truth")):
        for column in _M006_LEGACY_TEXT:
            conn.execute(
                text(
                    "INSERT INTO field_values (run_id, image_id, source, field, value) "
                    f"SELECT run_id, image_id, :source, :field, {column} FROM {table} "
                    f"WHERE {column} IS NOT NULL AND {column} <> ''"
                ),
                {"source": source, "field": column},
            )
        conn.execute(
            text(
                "INSERT INTO field_values (run_id, image_id, source, field, value, number) "
                f"SELECT run_id, image_id, :source, 'price', CAST(price AS TEXT), price FROM {table} "
                "WHERE price IS NOT NULL"
            ),
            {"source": source},
        )
        rows = conn.execute(
            text(f"SELECT run_id, image_id, size_prices FROM {table} WHERE size_prices IS NOT NULL")
        )
        sizes = [
            {"run_id": run_id, "image_id": image_id, "source": source, "field": "size_prices", "data": data}
            for run_id, image_id, data in rows
        ]
        decoded = [dict(row, data=_json_value(row["data"])) for row in sizes]
        decoded = [row for row in decoded if row["data"]]
        if decoded:
            conn.execute(insert(field_values), decoded)


def _json_value(value: object) -> object:
    """A JSON column read with plain SQL: SQLite gives text, Postgres the decoded value."""
    import json as json_module

    return json_module.loads(value) if isinstance(value, str) else value


@migration
def m007_retryable_path_index(conn: Connection) -> None:
    """A partial index on the run's retryable failures by path: `Store.add_batch` looks them up for every batch,
    which without it reads every prediction in the table (measured on Postgres: a sequential scan, 9.5 ms a batch at
    60,000 rows, growing with the table). Only retryable rows are in it, so it stays tiny. Its condition is written
    as each database's queries write it, so that the planner can use it (SQLite matches it textually)."""
    condition = {"postgresql": "retryable", "sqlite": "retryable IS 1"}.get(conn.dialect.name)
    where = f" WHERE {condition}" if condition else ""
    conn.execute(text(f"CREATE INDEX ix_predictions_retryable_path ON predictions (run_id, path){where}"))
