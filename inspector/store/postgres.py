"""The PostgreSQL path of `Store.add_batch`: a batch in about six round trips, whatever its size.

Why a path of its own: with Core executemany, psycopg sends one INSERT per row (16 rows an image: image,
prediction, catalogue row, field values, field results), and SQLAlchemy and psycopg convert every parameter of
every row on the way; measured (bench/ray_throughput.py, cProfile) that was most of a batch's time, the rest
waiting for the server once per row. Here each table gets ONE statement whose parameters are one array per column
(binary format), spread into rows on the server by `unnest`: the SQL text is the same for every batch size
(psycopg prepares it after a few uses on each connection), parameters are still bound (never spliced into the
SQL), and a batch costs about six round trips whatever its size. (Multi-row VALUES and insertmanyvalues were
measured slower: their SQL text grows with the batch, so it is compiled and parsed anew.) The guarantees stay
those of the generic path: one transaction per batch; ON CONFLICT DO NOTHING on the same unique constraints
decides races (RETURNING tells which rows are ours); rows are inserted in key order so that two writers of
overlapping batches wait for each other instead of deadlocking.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import JSON
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from inspector.store.tables import FieldResultRow, FieldValueRow, ImageRow, Prediction, TruthRow


@dataclass
class ItemRows:
    """The rows a batch's items add once their images have ids, one list per table (field results less their
    prediction id, which the insert joins on)."""

    predictions: list[dict]
    truth: list[dict]
    values: list[dict]
    results: list[dict]


class Batch(Protocol):
    """A batch as `add_batch` reads it; `Store.add_batch` builds the rows (the same rows as its generic path)."""

    run_id: int

    def image_rows(self) -> list[dict]:
        """One `images` row per item, in item order."""

    def paths(self) -> list[str | None]:
        """Each item's path as stored, in item order."""

    def delete_predictions(self, found: dict[int, int]) -> None:
        """Delete these predictions (id -> image id) with their rows in the other tables."""

    def item_rows(self, image_ids: list[int]) -> ItemRows:
        """The items' rows, given each item's image id (in item order)."""


def add_batch(session: Session, batch: Batch) -> None:
    """Store a batch inside `session`'s transaction, as `Store.add_batch` does on any other database."""
    global _STATEMENTS
    if _STATEMENTS is None:
        _STATEMENTS = _Statements()
    sql = _STATEMENTS
    connection = session.connection()
    images = ImageRow.__table__
    image_rows = batch.image_rows()
    inserted = connection.exec_driver_sql(sql.insert_images, _pg_arrays(images, sql.image_columns, "i", image_rows))
    ids = {sha: image_id for sha, image_id in inserted}
    if len(ids) < len(image_rows):  # some were stored before: fill their missing facts and look their ids up
        known = [row for row in image_rows if row["sha256"] not in ids]
        stored = connection.exec_driver_sql(sql.fill_images, _pg_arrays(images, sql.image_columns, "i", known))
        ids.update((sha, image_id) for sha, image_id in stored)
    image_ids = [ids[row["sha256"]] for row in image_rows]
    retryable = connection.exec_driver_sql(
        sql.retryable, {"run_id": batch.run_id, "image_ids": image_ids, "paths": batch.paths()}
    )
    batch.delete_predictions({prediction_id: image_id for prediction_id, image_id in retryable})
    rows = batch.item_rows(image_ids)
    parameters = {
        **_pg_arrays(Prediction.__table__, sql.prediction_columns, "pr", rows.predictions),
        **_pg_arrays(TruthRow.__table__, sql.truth_columns, "t", rows.truth),
        **_pg_arrays(FieldValueRow.__table__, sql.value_columns, "v", rows.values),
        **_pg_arrays(FieldResultRow.__table__, sql.result_columns, "r", rows.results),
    }
    connection.exec_driver_sql(sql.insert_items, parameters)


def _pg_type(column) -> str:
    return column.type.compile(dialect=postgresql.dialect())


def _pg_name(name: str) -> str:
    return postgresql.dialect().identifier_preparer.quote(name)


def _pg_unnest(table, columns: list[str], prefix: str) -> str:
    """`unnest(CAST(%(prefix_col)s AS type[]), ...) WITH ORDINALITY AS alias(col, ..., n)`: the arrays of a batch as
    rows, `n` their order in it. The types come from the table, so this follows the schema by itself."""
    arrays = ", ".join(f"CAST(%({prefix}_{name})b AS {_pg_type(table.c[name])}[])" for name in columns)
    names = ", ".join(_pg_name(name) for name in columns)
    return f"unnest({arrays}) WITH ORDINALITY AS {prefix}({names}, n)"


def _pg_arrays(table, columns: list[str], prefix: str, rows: list[dict]) -> dict[str, list]:
    """The rows as one list per column (the parameters of `_pg_unnest`); JSON values are serialised here, as
    SQLAlchemy's JSON type would (None stays SQL NULL: `JSONColumn` is none_as_null)."""
    arrays = {}
    for name in columns:
        values = [row[name] for row in rows]
        if isinstance(table.c[name].type, JSON):
            values = [None if value is None else json.dumps(value) for value in values]
        arrays[f"{prefix}_{name}"] = values
    return arrays


def _pg_columns(table, *, skip: tuple[str, ...] = ()) -> list[str]:
    return [column.key for column in table.c if column.key not in ("id", *skip)]


class _Statements:
    """The statements of `add_batch`, built once from the tables."""

    def __init__(self) -> None:
        images = ImageRow.__table__
        self.image_columns = _pg_columns(images)
        names = ", ".join(_pg_name(name) for name in self.image_columns)
        # New images, in sha256 order (the lock order); the ids of those that were new.
        self.insert_images = (
            f"INSERT INTO images ({names}) SELECT {names} FROM {_pg_unnest(images, self.image_columns, 'i')} "
            "ORDER BY i.sha256 ON CONFLICT (sha256) DO NOTHING RETURNING sha256, id"
        )
        # Images stored before (by an earlier run or a racing writer, which the INSERT above waited for): fill the
        # facts an earlier sighting lacked, and return every id. The UPDATE runs in a CTE of the same statement, so
        # this costs one round trip; the SELECT sees the rows as they were when the statement started, which is all
        # it needs (ids do not change).
        facts = [name for name in self.image_columns if name not in ("sha256", "path")]
        fill = ", ".join(f"{_pg_name(name)} = COALESCE(images.{_pg_name(name)}, i.{_pg_name(name)})" for name in facts)
        lacking = " OR ".join(f"(images.{_pg_name(name)} IS NULL AND i.{_pg_name(name)} IS NOT NULL)" for name in facts)
        self.fill_images = (
            f"WITH filled AS (UPDATE images SET {fill} FROM {_pg_unnest(images, self.image_columns, 'i')} "
            f"WHERE images.sha256 = i.sha256 AND ({lacking})) "
            "SELECT sha256, id FROM images WHERE sha256 = ANY(CAST(%(i_sha256)b AS VARCHAR(64)[]))"
        )
        # Two indexed lookups (by image: the unique index; by path: the partial index of m007), not one OR that
        # the planner may answer with a scan of the whole table.
        self.retryable = (
            "SELECT id, image_id FROM predictions WHERE run_id = %(run_id)s AND retryable "
            "AND image_id = ANY(CAST(%(image_ids)s AS INTEGER[])) UNION "
            "SELECT id, image_id FROM predictions WHERE run_id = %(run_id)s AND retryable "
            "AND path = ANY(CAST(%(paths)s AS TEXT[]))"
        )
        # Predictions, then the truth rows, field values and field results of the predictions this statement
        # inserted (joined on RETURNING): one statement, so one round trip, and rows of an image another writer
        # stored first are never written.
        predictions, truth = Prediction.__table__, TruthRow.__table__
        values, results = FieldValueRow.__table__, FieldResultRow.__table__
        self.prediction_columns = _pg_columns(predictions)
        self.truth_columns = _pg_columns(truth)
        self.value_columns = _pg_columns(values)
        self.result_columns = _pg_columns(results, skip=("prediction_id",))

        def names_of(columns: list[str], alias: str = "") -> str:
            return ", ".join(f"{alias}{_pg_name(name)}" for name in columns)

        self.insert_items = (
            f"WITH p AS (INSERT INTO predictions ({names_of(self.prediction_columns)}) "
            f"SELECT {names_of(self.prediction_columns)} FROM {_pg_unnest(predictions, self.prediction_columns, 'pr')} "
            "ORDER BY pr.image_id ON CONFLICT (run_id, image_id) DO NOTHING RETURNING id, image_id), "
            f"t AS (INSERT INTO truth ({names_of(self.truth_columns)}) "
            f"SELECT {names_of(self.truth_columns, 't.')} FROM {_pg_unnest(truth, self.truth_columns, 't')} "
            "JOIN p ON p.image_id = t.image_id ORDER BY t.n), "
            f"v AS (INSERT INTO field_values ({names_of(self.value_columns)}) "
            f"SELECT {names_of(self.value_columns, 'v.')} FROM {_pg_unnest(values, self.value_columns, 'v')} "
            "JOIN p ON p.image_id = v.image_id ORDER BY v.n) "
            f"INSERT INTO field_results (prediction_id, {names_of(self.result_columns)}) "
            f"SELECT p.id, {names_of(self.result_columns, 'r.')} FROM {_pg_unnest(results, self.result_columns, 'r')} "
            "JOIN p ON p.image_id = r.image_id ORDER BY r.n"
        )


_STATEMENTS: _Statements | None = None
