"""The results store: runs, images, predictions, truth and per-field results in any SQLAlchemy database."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Float, delete, func, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from inspector.errors import RunNotFoundError, StoreError
from inspector.fields import BUILTIN_FIELDS, FieldResult, FieldSet, FieldValue, ProductFields, TruthRecord
from inspector.interrupts import deferred
from inspector.store.engine import create_store_engine, database_url, shown_database, sqlite_file
from inspector.store.migrations import apply_migrations, pending_migrations
from inspector.store.postgres import ItemRows
from inspector.store.postgres import add_batch as postgres_add_batch
from inspector.store.tables import (
    FieldResultRow,
    FieldValueRow,
    ImageRow,
    Prediction,
    ReviewRow,
    Run,
    TruthRow,
    utc_now,
)

if TYPE_CHECKING:
    from inspector.scoring import FieldMetrics

RUNNING, COMPLETED, FAILED, INTERRUPTED = "running", "completed", "failed", "interrupted"
RUN_STATUSES: tuple[str, ...] = (RUNNING, COMPLETED, FAILED, INTERRUPTED)

#: Keys of finish_run's stats that have a column of their own in `runs`.
_STAT_COLUMNS = ("elapsed_s", "n_images", "n_failed", "images_per_s")

#: Keep IN (...) lists well under every database's bound-parameter limit.
_CHUNK = 500


@dataclass
class ItemResult:
    """Everything the scan knows about one image in one run, stored by `Store.add_batch` in one go."""

    sha256: str
    #: The path or URL the image was read from in this run.
    path: str
    width: int | None = None
    height: int | None = None
    format: str | None = None
    n_bytes: int | None = None
    #: Small JPEG bytes for the report (see `inspector.images.make_thumbnail`).
    thumbnail: bytes | None = None
    raw_output: str | None = None
    parsed: ProductFields | None = None
    latency_ms: float | None = None
    #: Why the image could not be read or answered; the item is still stored, with this message.
    error: str | None = None
    #: The error may go away (a download that failed transiently; an internal error that an upgrade may fix): a
    #: rerun tries the image again.
    retryable: bool = False
    truth: TruthRecord | None = None
    field_results: list[FieldResult] = field(default_factory=list)
    #: Fields whose value in the answer cannot be represented (left empty; counted by the scan, not stored).
    unrepresentable: tuple[str, ...] = ()
    #: The error is a bug of ours (an exception while reading or scoring the answer), not the image's.
    internal_error: bool = False


@dataclass(frozen=True)
class Review:
    """An inspector's decision on one field of one image in one run."""

    run_id: int
    sha256: str
    field: str
    #: catalogue_wrong, model_wrong or both_fine.
    decision: str
    corrected_value: str | None = None
    reviewer: str | None = None
    reviewed_at: datetime | None = None


@dataclass(frozen=True)
class RunInfo:
    id: int
    key: str
    name: str | None
    model: str
    backend: str
    prompt_name: str
    prompt_text: str
    settings: dict
    versions: dict
    inputs: list
    truth_path: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    elapsed_s: float | None
    n_images: int | None
    n_failed: int | None
    images_per_s: float | None
    stats: dict

    @property
    def fields(self) -> FieldSet:
        """The fields the run read (stored in its settings; runs from before --fields read the built-ins)."""
        return FieldSet.from_json(self.settings.get("fields"))

    @property
    def label(self) -> str:
        """How messages and the report name the run."""
        return f"run {self.id} ({self.name})" if self.name else f"run {self.id}"


MAX_RUN_ID = 2**63 - 1
"""The largest id a run can have (a 64-bit signed integer column)."""


def open_store(url_or_path: str | Path, *, read_only: bool = False) -> Store:
    """Open (creating if needed) the results database and bring its schema up to date.

    A plain path is a SQLite file; anything with `://` is a SQLAlchemy URL (e.g. postgresql+psycopg://...).
    `read_only`: the caller only reads (`inspector runs`, `inspector report`). A SQLite file is then opened
    read-only, so reading takes no write lock and works in a read-only folder; only a database written by an older
    inspector is opened for writing, once, to add the missing migrations.
    """
    url = database_url(url_or_path)
    shown = shown_database(url)
    if read_only and sqlite_file(url) is not None:
        engine = create_store_engine(url, read_only=True)
        if _opened(engine, shown, url, check_only=True):
            return Store(engine, shown)
        engine.dispose()  # an older schema: upgrade it, which needs write access
        try:
            engine = create_store_engine(url)
        except StoreError as error:
            raise StoreError(
                f"{url.database} was written by an older inspector and must be upgraded once before this version "
                f"can read it, which needs write access ({error}); open it once where it can be written, e.g. "
                f"`inspector runs --db {url.database}`"
            ) from error
    else:
        engine = create_store_engine(url)
    _opened(engine, shown, url, check_only=False)
    return Store(engine, shown)


def _opened(engine, shown: str, url, *, check_only: bool) -> bool:
    """Bring the schema up to date (`check_only`: only say whether it is); database errors become StoreErrors."""
    try:
        if check_only:
            return not pending_migrations(engine)
        apply_migrations(engine)
        return True
    except DBAPIError as exc:
        engine.dispose()
        detail = str(exc.orig).strip() if exc.orig is not None else str(exc)
        if "not a database" in detail:
            raise StoreError(
                f"{url.database} is not an inspector database (SQLite says: {detail}); "
                "pass a new file name or a database written by inspector with --db"
            ) from exc
        raise StoreError(f"cannot open database {shown}: {detail}") from exc
    except Exception:
        engine.dispose()
        raise


def _jsonable(value: Any) -> Any:
    """Plain JSON only, so any database takes it: paths, dtypes and the like become strings; NaN and
    infinities (not JSON: Postgres refuses them) become None."""
    return _finite_floats(json.loads(json.dumps(value, default=str)))


def _finite_floats(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(k): _finite_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_floats(v) for v in value]
    return value


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def _chunks(values: list, size: int = _CHUNK) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class Store:
    """Reads and writes inspection results. Use `open_store` to get one; safe to share a database between
    processes (each process opens its own Store)."""

    def __init__(self, engine, url: str) -> None:
        self.engine = engine
        #: The database URL with any password hidden, for messages.
        self.url = url
        self._read = sessionmaker(bind=engine, expire_on_commit=False)
        self._write = sessionmaker(
            bind=engine.execution_options(inspector_begin="IMMEDIATE"), expire_on_commit=False
        )

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Session]:
        """A session in one transaction. A write is never cut short by Ctrl-C or SIGTERM: a stop that arrives
        during it is raised once it has committed or rolled back (see `inspector.interrupts`)."""
        factory = self._write if write else self._read
        with deferred() if write else nullcontext():
            try:
                with factory() as session, session.begin():
                    yield session
            except OperationalError as exc:
                raise StoreError(f"database {self.url} failed: {exc.orig}") from exc

    # ----------------------------------------------------------------------------------------- runs

    def start_run(
        self,
        key: str,
        *,
        name: str | None,
        model: str,
        backend: str,
        prompt_name: str,
        prompt_text: str,
        settings: dict,
        versions: dict,
        inputs: list[str],
        truth_path: str | None,
    ) -> int:
        """Create the run with this key, or resume it (status back to running) if it exists; returns its id."""
        for _attempt in range(2):
            try:
                with self._transaction(write=True) as session:
                    run = session.scalars(select(Run).where(Run.key == key)).one_or_none()
                    if run is not None:
                        run.status = RUNNING
                        run.finished_at = None
                        if name:
                            run.name = _text(name)
                        return run.id
                    run = Run(
                        key=key,
                        name=_text(name),
                        model=_text(model),
                        backend=_text(backend),
                        prompt_name=_text(prompt_name),
                        prompt_text=_text(prompt_text),
                        settings=_jsonable(settings),
                        versions=_jsonable(versions),
                        inputs=_jsonable(list(inputs)),
                        truth_path=_text(truth_path),
                        status=RUNNING,
                        started_at=utc_now(),
                    )
                    session.add(run)
                    session.flush()
                    return run.id
            except IntegrityError:
                continue  # another process created the same run just now: resume that one
        raise StoreError(f"could not create or resume run {key!r} in {self.url}")

    def finish_run(self, run_id: int, status: str, stats: dict) -> None:
        """Record how the run ended. `n_images` / `n_failed` are the run's totals, counted in its tables: a resumed
        run, or one that several processes write, holds more than this session did (its own counts, when given in
        `stats`, are kept there under "session")."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
        with self._transaction(write=True) as session:
            run = self._run_row(session, run_id)
            values = _jsonable(dict(stats))
            this_session = {name: values.pop(name) for name in ("n_images", "n_failed") if name in values}
            if this_session:
                values["session"] = this_session
            values["n_images"], values["n_failed"] = _stored_totals(session, [run_id])[run_id]
            run.status = status
            run.finished_at = None if status == RUNNING else utc_now()
            for column in _STAT_COLUMNS:
                if values.get(column) is not None:
                    setattr(run, column, values[column])
            run.stats = values

    def get_run(self, run_ref: int | str | None = None, *, model: str | None = None) -> RunInfo:
        """A run by id, by name (the latest of that name), by key, or the latest run when `run_ref` is None. With
        `model` (as the scan's --model named it, e.g. "demo"): the latest run of that model, and a `run_ref` of
        another model is an error."""
        with self._transaction(write=False) as session:
            if model is not None and run_ref is None:
                query = select(Run).where(Run.model == model).order_by(Run.id.desc()).limit(1)
                run = session.scalars(query).first()
                if run is None:
                    models = session.scalars(select(Run.model).distinct().order_by(Run.model)).all()
                    listed = ", ".join(models) if models else "none yet"
                    raise RunNotFoundError(f"no run of model {model!r} in {self.url}; the runs' models: {listed}")
                return _run_info(run)
            run = self._find_run(session, run_ref)
            if run is None:
                raise RunNotFoundError(self._missing_run_message(session, run_ref))
            if model is not None and run.model != model:
                raise RunNotFoundError(f"{_run_info(run).label} was scanned with model {run.model!r}, not {model!r}")
            return _with_live_totals(session, [_run_info(run)])[0]

    def list_runs(self) -> list[RunInfo]:
        with self._transaction(write=False) as session:
            return _with_live_totals(session, [_run_info(run) for run in session.scalars(select(Run).order_by(Run.id))])

    @staticmethod
    def _find_run(session: Session, run_ref: int | str | None) -> Run | None:
        if run_ref is None:
            return session.scalars(select(Run).order_by(Run.id.desc()).limit(1)).first()
        if isinstance(run_ref, int) and not isinstance(run_ref, bool):
            return session.get(Run, run_ref) if 0 < run_ref <= MAX_RUN_ID else None
        ref = str(run_ref).strip()
        # A run id is ASCII digits: `²` or `١` pass str.isdigit() but are names (int("²") raises), and an id longer
        # than any 64-bit one cannot exist (the database could not even compare it).
        if ref.isascii() and ref.isdigit() and len(ref) <= len(str(MAX_RUN_ID)) and 0 < int(ref) <= MAX_RUN_ID:
            run = session.get(Run, int(ref))
            if run is not None:
                return run
        run = session.scalars(select(Run).where(Run.name == ref).order_by(Run.id.desc()).limit(1)).first()
        if run is None:
            run = session.scalars(select(Run).where(Run.key == ref)).first()
        return run

    def _missing_run_message(self, session: Session, run_ref: int | str | None) -> str:
        recent = session.scalars(select(Run).order_by(Run.id.desc()).limit(5)).all()
        if not recent:
            return f"no runs in {self.url} yet: run `inspector scan` first (with the same --db)"
        listed = ", ".join(f"{r.id}{f' ({r.name})' if r.name else ''}" for r in recent)
        return f"no run {run_ref!r} in {self.url}; pass a run id or name, e.g. one of the latest: {listed}"

    def _run_row(self, session: Session, run_id: int) -> Run:
        run = session.get(Run, run_id)
        if run is None:
            raise RunNotFoundError(self._missing_run_message(session, run_id))
        return run

    # ------------------------------------------------------------------------------------ results

    def done_shas(self, run_id: int) -> set[str]:
        """sha256 of every image that already has an outcome in the run (the scan skips them). A retryable failure
        (a download that failed transiently) is not an outcome: the scan tries that image again."""
        with self._transaction(write=False) as session:
            query = (
                select(ImageRow.sha256)
                .join(Prediction, Prediction.image_id == ImageRow.id)
                .where(Prediction.run_id == run_id, Prediction.retryable.is_not(True))
            )
            return set(session.scalars(query))

    def stored_paths(self, run_id: int) -> set[str]:
        """The paths (or URLs) of the run's predictions that are outcomes (as in `done_shas`)."""
        with self._transaction(write=False) as session:
            query = select(Prediction.path).where(Prediction.run_id == run_id, Prediction.retryable.is_not(True))
            return set(session.scalars(query))

    def add_batch(self, run_id: int, items: list[ItemResult]) -> None:
        """Store a batch in one transaction: all of it or (if the process dies) none of it.

        Images already answered in this run are skipped, also when another process stores them at the same
        moment: the UNIQUE(run_id, image_id) constraint decides, without an error (see `_insert_predictions`).
        A stored retryable failure of the same image or path (a download that failed transiently) is replaced.
        """
        unique: dict[str, ItemResult] = {}
        for item in items:
            unique.setdefault(item.sha256, item)
        if not unique:
            return
        with self._transaction(write=True) as session:
            self._run_row(session, run_id)
            if session.get_bind().dialect.name == "postgresql":
                postgres_add_batch(session, _PostgresBatch(session, run_id, list(unique.values()), utc_now()))
                return
            image_ids = self._upsert_images(session, list(unique.values()))
            _drop_retryable(session, run_id, list(image_ids.values()), [_text(i.path) for i in unique.values()])
            done: set[int] = set()
            for ids in _chunks(list(image_ids.values())):
                done.update(
                    session.scalars(
                        select(Prediction.image_id).where(
                            Prediction.run_id == run_id, Prediction.image_id.in_(ids)
                        )
                    )
                )
            todo = [(image_ids[sha], item) for sha, item in unique.items() if image_ids[sha] not in done]
            _insert_items(session, run_id, todo, utc_now())

    def _upsert_images(self, session: Session, items: list[ItemResult]) -> dict[str, int]:
        """sha256 -> images.id, inserting the new ones and filling facts an earlier sighting lacked."""
        ids: dict[str, int] = {}
        by_sha = {item.sha256: item for item in items}
        for shas in _chunks(list(by_sha)):
            for image in session.scalars(select(ImageRow).where(ImageRow.sha256.in_(shas))):
                _fill_image_facts(image, by_sha[image.sha256])
                ids[image.sha256] = image.id
        missing = [item for sha, item in by_sha.items() if sha not in ids]
        if not missing:
            return ids
        _insert_ignoring_conflicts(session, ImageRow.__table__, [_image_values(item) for item in missing], ["sha256"])
        for shas in _chunks([item.sha256 for item in missing]):
            query = select(ImageRow.sha256, ImageRow.id).where(ImageRow.sha256.in_(shas))
            ids.update((sha, image_id) for sha, image_id in session.execute(query))
        return ids

    def field_results(self, run_id: int) -> list[FieldResult]:
        """Every per-field comparison of the run, in storage order."""
        with self._transaction(write=False) as session:
            return [FieldResult(*values) for _, *values in session.execute(_field_results_query(run_id))]

    def answered_images(self, run_id: int) -> int:
        """How many of the run's images got a value for any field from the model (0: the model said nothing)."""
        with self._transaction(write=False) as session:
            return session.scalar(
                select(func.count(func.distinct(FieldValueRow.image_id))).where(
                    FieldValueRow.run_id == run_id, FieldValueRow.source == PREDICTED
                )
            )

    def run_metrics(self, run_id: int) -> dict[str, FieldMetrics]:
        """Per-field accuracy, precision, recall, F1 and MAE (per currency for prices) of the run (see
        `inspector.scoring.summarise_answers`)."""
        from inspector.scoring import summarise_answers

        with self._transaction(write=False) as session:
            answers: dict[int, list[FieldResult]] = defaultdict(list)
            for prediction_id, *values in session.execute(_field_results_query(run_id)):
                answers[prediction_id].append(FieldResult(*values))
        return summarise_answers(answers.values(), self.get_run(run_id).fields)

    # -------------------------------------------------------------------------------------- reviews

    def reviewable(self, run_id: int) -> dict[tuple[str, str], int]:
        """(sha256, field) -> image id of every field result of the run: what a decision can be about."""
        with self._transaction(write=False) as session:
            query = (
                select(ImageRow.sha256, FieldResultRow.field, ImageRow.id)
                .join(FieldResultRow, FieldResultRow.image_id == ImageRow.id)
                .where(FieldResultRow.run_id == run_id)
            )
            return {(sha, name): image_id for sha, name, image_id in session.execute(query)}

    def save_reviews(self, reviews: list[Review]) -> dict[str, int]:
        """Store decisions (each for a field result that exists: see `reviewable`) in one transaction. A decision
        equal to the stored one changes nothing (importing a file twice is a no-op); a different one replaces it,
        and so does a later one for the same field in `reviews`. Returns counts: added, updated, unchanged.

        The stored decisions of the runs concerned are read in one query per run, not one per decision: an
        import of 100k decisions is linear."""
        counts = {"added": 0, "updated": 0, "unchanged": 0}
        if not reviews:
            return counts
        with self._transaction(write=True) as session:
            ids: dict[str, int] = {}
            for shas in _chunks(sorted({r.sha256 for r in reviews})):
                query = select(ImageRow.sha256, ImageRow.id).where(ImageRow.sha256.in_(shas))
                ids.update((sha, image_id) for sha, image_id in session.execute(query))
            stored: dict[tuple[int, int, str], ReviewRow] = {}
            for run_id in sorted({r.run_id for r in reviews}):
                for row in session.scalars(select(ReviewRow).where(ReviewRow.run_id == run_id)):
                    stored[(row.run_id, row.image_id, row.field)] = row
            for review in reviews:
                key = (review.run_id, ids[review.sha256], review.field)
                row = stored.get(key)
                values = {
                    "decision": review.decision,
                    "corrected_value": _text(review.corrected_value),
                    "reviewer": _text(review.reviewer),
                }
                if row is None:
                    row = stored[key] = ReviewRow(
                        run_id=review.run_id,
                        image_id=key[1],
                        field=review.field,
                        reviewed_at=review.reviewed_at or utc_now(),
                        **values,
                    )
                    session.add(row)
                    counts["added"] += 1
                elif all(getattr(row, name) == value for name, value in values.items()):
                    counts["unchanged"] += 1
                else:
                    for name, value in values.items():
                        setattr(row, name, value)
                    row.reviewed_at = review.reviewed_at or utc_now()
                    counts["updated"] += 1
        return counts

    def reviews(self, run_id: int) -> list[Review]:
        """The run's stored decisions, by image path and field."""
        with self._transaction(write=False) as session:
            query = (
                select(ReviewRow, ImageRow.sha256)
                .join(ImageRow, ImageRow.id == ReviewRow.image_id)
                .where(ReviewRow.run_id == run_id)
                .order_by(ImageRow.sha256, ReviewRow.field)
            )
            return [
                Review(
                    run_id=row.run_id,
                    sha256=sha,
                    field=row.field,
                    decision=row.decision,
                    corrected_value=row.corrected_value,
                    reviewer=row.reviewer,
                    reviewed_at=_aware(row.reviewed_at),
                )
                for row, sha in session.execute(query)
            ]

    def run_rows(self, run_id: int, *, with_thumbnails: bool = True) -> list[dict]:
        """One dict per image of the run, ordered by path: image facts, prediction, truth and field results.

        Keys: image_id, sha256, path (as seen in this run), first_path, width, height, format, n_bytes,
        thumbnail (bytes; None if absent or not asked for), prediction_id, raw_output, error, latency_ms, created_at, predicted
        (ProductFields as a dict), truth (None or dict with row_number, key, image_ref, fields, and unreadable: the
        cells that could not be read, as dicts with field, value, column, reason),
        field_results (list of dicts with field, outcome, predicted, expected, score, confidence).
        """
        with self._transaction(write=False) as session:
            self._run_row(session, run_id)
            image_columns = [
                ImageRow.sha256,
                ImageRow.path.label("first_path"),
                ImageRow.width,
                ImageRow.height,
                ImageRow.format,
                ImageRow.n_bytes,
            ]
            if with_thumbnails:
                image_columns.append(ImageRow.thumbnail)
            query = (
                select(Prediction, *image_columns)
                .join(ImageRow, ImageRow.id == Prediction.image_id)
                .where(Prediction.run_id == run_id)
                .order_by(Prediction.path, Prediction.id)
            )
            truth = {
                t.image_id: t for t in session.scalars(select(TruthRow).where(TruthRow.run_id == run_id))
            }
            stored: dict[tuple[str, int], ProductFields] = defaultdict(ProductFields)
            value_query = select(
                FieldValueRow.source,
                FieldValueRow.image_id,
                FieldValueRow.field,
                FieldValueRow.value,
                FieldValueRow.number,
                FieldValueRow.data,
            ).where(FieldValueRow.run_id == run_id)
            unreadable: dict[int, list[dict]] = defaultdict(list)
            for source, image_id, name, text_value, number, data in session.execute(value_query):
                if source == UNREADABLE:
                    unreadable[image_id].append({"field": name, "value": text_value, **(data or {})})
                    continue
                stored[source, image_id][name] = _stored_value(text_value, number, data)
            fieldset = _run_info(self._run_row(session, run_id)).fields
            results: dict[int, list[dict]] = defaultdict(list)
            for prediction_id, *values in session.execute(_field_results_query(run_id)):
                results[prediction_id].append(
                    dict(zip(_RESULT_KEYS, values, strict=True))
                )
            rows = []
            for prediction, *facts in session.execute(query):
                image = dict(zip([c.key for c in image_columns], facts, strict=True))
                matched = truth.get(prediction.image_id)
                rows.append(
                    {
                        "image_id": prediction.image_id,
                        **image,
                        "thumbnail": image.get("thumbnail"),
                        "path": prediction.path,
                        "prediction_id": prediction.id,
                        "raw_output": prediction.raw_output,
                        "error": prediction.error,
                        "latency_ms": prediction.latency_ms,
                        "created_at": _aware(prediction.created_at),
                        "predicted": stored[PREDICTED, prediction.image_id].to_dict(fieldset),
                        "truth": None
                        if matched is None
                        else {
                            "row_number": matched.row_number,
                            "key": matched.key,
                            "image_ref": matched.image_ref,
                            "fields": stored[TRUTH, prediction.image_id].to_dict(fieldset),
                            "unreadable": unreadable.get(prediction.image_id, []),
                        },
                        "field_results": results.get(prediction.id, []),
                    }
                )
            return rows


def _text(value: str | None) -> str | None:
    """NUL cannot be stored in Postgres text; a model that emits one must not lose the whole batch. Lone
    surrogates (a file name that is not UTF-8, decoded by Python with surrogateescape) cannot be encoded as
    UTF-8 by any driver: both become U+FFFD."""
    if not isinstance(value, str):
        return value
    if value.isascii() and "\x00" not in value:  # the usual case, ~10x faster than the regex below
        return value
    return _UNSTORABLE.sub("\ufffd", value)


#: Keys of each field result dict in `run_rows`.
_RESULT_KEYS = ("field", "outcome", "predicted", "expected", "score", "confidence")

_FIELD_LENGTH = FieldResultRow.__table__.c.field.type.length

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _image_values(item: ItemResult) -> dict:
    return {
        "sha256": item.sha256,
        "path": _text(item.path),
        "width": item.width,
        "height": item.height,
        "format": _text(item.format),
        "n_bytes": item.n_bytes,
        "thumbnail": item.thumbnail,
    }


def _fill_image_facts(image: ImageRow, item: ItemResult) -> None:
    for name in ("width", "height", "format", "n_bytes", "thumbnail"):
        value = getattr(item, name)
        if getattr(image, name) is None and value is not None:
            setattr(image, name, value)


def _stored_value(text_value: str | None, number: float | None, data: object) -> FieldValue:
    if number is not None:
        return number
    if data is not None:
        return data
    return text_value


def _value_row(run_id: int, image_id: int, source: str, name: str, value: FieldValue) -> dict | None:
    """One `field_values` row for a value, or None for a missing one."""
    row = {"run_id": run_id, "image_id": image_id, "source": source, "field": name[:_FIELD_LENGTH]}
    if isinstance(value, dict):
        data = _jsonable(value)
        return {**row, "value": None, "number": None, "data": data} if data else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = _finite_floats(float(value))
        return None if number is None else {**row, "value": repr(number), "number": number, "data": None}
    text = _text(value)
    return {**row, "value": text, "number": None, "data": None} if text else None


def _value_rows(run_id: int, todo: list[tuple[int, ItemResult]]) -> list[dict]:
    rows = []
    for image_id, item in todo:
        sides = [(PREDICTED, item.parsed or {}), (TRUTH, item.truth.fields if item.truth else {})]
        for source, values in sides:
            for name, value in values.items():
                row = _value_row(run_id, image_id, source, name, value)
                if row is not None:
                    rows.append(row)
        for name, cell in (item.truth.unreadable() if item.truth else {}).items():
            rows.append(
                {
                    "run_id": run_id,
                    "image_id": image_id,
                    "source": UNREADABLE,
                    "field": _text(name)[:_FIELD_LENGTH],
                    "value": _text(cell.value),
                    "number": None,
                    "data": {"column": _text(cell.column), "reason": cell.problem},
                }
            )
    return rows


def _legacy_columns(table, values: ProductFields) -> dict:
    """The built-in fields' own columns in predictions/truth (kept for existing queries), where a field of the
    same name exists: derived from the table, so no list of fields is kept here."""
    columns = {}
    for name, value in values.items():
        if name in _VALUE_COLUMNS and name in table.c:
            column = table.c[name]
            if isinstance(column.type, Float):
                columns[name] = _finite_floats(value) if isinstance(value, (int, float)) else None
            elif isinstance(column.type, JSON):
                columns[name] = _jsonable(value) if isinstance(value, dict) else None
            else:
                columns[name] = _text(value) if isinstance(value, str) else None
    return columns


#: Columns of predictions and truth that hold a built-in field's value (the others are bookkeeping).
_VALUE_COLUMNS = frozenset(set(Prediction.__table__.c.keys()) & set(BUILTIN_FIELDS.names))
_JSON_COLUMNS = frozenset(name for name in _VALUE_COLUMNS if isinstance(Prediction.__table__.c[name].type, JSON))
PREDICTED, TRUTH = "predicted", "truth"
#: `field_values.source` of a catalogue cell that could not be read: `value` is the cell as written, `data` holds
#: its column and the reason; the field's result is `Outcome.UNREADABLE`.
UNREADABLE = "unreadable"


def _insert_items(session: Session, run_id: int, todo: list[tuple[int, ItemResult]], now: datetime) -> None:
    """Insert predictions, then truth rows and field results for the predictions this call stored (another
    process may have stored some of the same images since we looked). Core executemany INSERTs: the ORM unit of
    work (and ORM bulk mode, which splits rows by which values are None) costs milliseconds per image."""
    if not todo:
        return
    prediction_ids = _insert_predictions(session, run_id, todo, now)
    mine = [(image_id, item) for image_id, item in todo if image_id in prediction_ids]
    truth = [_truth_values(run_id, image_id, item.truth) for image_id, item in mine if item.truth is not None]
    if truth:
        session.execute(insert(TruthRow.__table__), truth)
    values = _value_rows(run_id, mine)
    if values:
        session.execute(insert(FieldValueRow.__table__), values)
    results = [
        {"prediction_id": prediction_ids[image_id], **_result_values(run_id, image_id, result)}
        for image_id, item in mine
        for result in item.field_results
    ]
    if results:
        session.execute(insert(FieldResultRow.__table__), results)


def _result_values(run_id: int, image_id: int, result: FieldResult) -> dict:
    """A `field_results` row, less its prediction id."""
    return {
        "run_id": run_id,
        "image_id": image_id,
        # A size label is whatever the model wrote: keep it within the column (VARCHAR on Postgres).
        "field": _text(result.field)[:_FIELD_LENGTH],
        "outcome": result.outcome,
        "predicted": _text(result.predicted),
        "expected": _text(result.expected),
        "score": _finite_floats(result.score),
        "confidence": _finite_floats(result.confidence),
    }


def _insert_predictions(
    session: Session, run_id: int, todo: list[tuple[int, ItemResult]], now: datetime
) -> dict[int, int]:
    """Insert the predictions; returns image_id -> prediction id for the rows this call inserted.

    On PostgreSQL and SQLite a row another process stored first is skipped by `ON CONFLICT DO NOTHING`: no error
    is raised, so no transaction or pipeline is aborted (psycopg's pipelined executemany logged a "pipeline
    aborted" warning for every such race). Elsewhere the unique constraint decides inside savepoints."""
    rows = [_prediction_values(run_id, image_id, item, now) for image_id, item in todo]
    table = Prediction.__table__
    statement = _insert_or_skip(session, table, ["run_id", "image_id"])
    if statement is not None and session.get_bind().dialect.insert_executemany_returning:
        returned = session.execute(statement.returning(table.c.image_id, table.c.id), rows)
        return {image_id: prediction_id for image_id, prediction_id in returned}
    inserted: list[int] = []
    try:  # usually nobody else stored any of them since we looked: insert the whole batch at once
        with session.begin_nested():
            session.execute(insert(table), rows)
        inserted = [row["image_id"] for row in rows]
    except IntegrityError:  # someone did: find out which, item by item
        for row in rows:
            try:
                with session.begin_nested():
                    session.execute(insert(table), [row])
                inserted.append(row["image_id"])
            except IntegrityError:
                continue  # stored by another process since we looked: keep theirs
    ids: dict[int, int] = {}
    for chunk in _chunks(inserted):
        query = select(Prediction.image_id, Prediction.id).where(
            Prediction.run_id == run_id, Prediction.image_id.in_(chunk)
        )
        ids.update((image_id, prediction_id) for image_id, prediction_id in session.execute(query))
    return ids


def _insert_or_skip(session: Session, table, conflict_columns: list[str]):
    """`INSERT ... ON CONFLICT (columns) DO NOTHING` where the database has it (PostgreSQL, SQLite), else None."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        return None
    return dialect_insert(table).on_conflict_do_nothing(index_elements=conflict_columns)


def _insert_ignoring_conflicts(session: Session, table, rows: list[dict], conflict_columns: list[str]) -> None:
    """Insert rows, skipping those another process inserted first (see `_insert_predictions`)."""
    statement = _insert_or_skip(session, table, conflict_columns)
    if statement is not None:
        session.execute(statement, rows)
        return
    try:
        with session.begin_nested():
            session.execute(insert(table), rows)
    except IntegrityError:
        for row in rows:
            try:
                with session.begin_nested():
                    session.execute(insert(table), [row])
            except IntegrityError:
                continue


def _drop_retryable(session: Session, run_id: int, image_ids: list[int], paths: list[str | None]) -> None:
    """Remove this run's retryable failures of these images or paths (with their truth rows, field values and results),
    so that the new outcome takes their place. A failed download is stored under a stand-in image (its bytes were
    never seen), so a later successful download of the same URL is a different image: the path links them."""
    found: dict[int, int] = {}
    for ids in _chunks(image_ids):
        query = select(Prediction.id, Prediction.image_id).where(
            Prediction.run_id == run_id, Prediction.retryable.is_(True), Prediction.image_id.in_(ids)
        )
        found.update((prediction_id, image_id) for prediction_id, image_id in session.execute(query))
    for chunk in _chunks([path for path in paths if path is not None]):
        query = select(Prediction.id, Prediction.image_id).where(
            Prediction.run_id == run_id, Prediction.retryable.is_(True), Prediction.path.in_(chunk)
        )
        found.update((prediction_id, image_id) for prediction_id, image_id in session.execute(query))
    _delete_predictions(session, run_id, found)


def _delete_predictions(session: Session, run_id: int, found: dict[int, int]) -> None:
    """Delete these predictions (prediction id -> image id) with their field results, truth rows and field values."""
    if not found:
        return
    for chunk in _chunks(list(found)):
        session.execute(delete(FieldResultRow).where(FieldResultRow.prediction_id.in_(chunk)))
        session.execute(delete(Prediction).where(Prediction.id.in_(chunk)))
    for chunk in _chunks(list(set(found.values()))):
        session.execute(delete(TruthRow).where(TruthRow.run_id == run_id, TruthRow.image_id.in_(chunk)))
        session.execute(
            delete(FieldValueRow).where(FieldValueRow.run_id == run_id, FieldValueRow.image_id.in_(chunk))
        )


def _prediction_values(run_id: int, image_id: int, item: ItemResult, now: datetime) -> dict:
    parsed = item.parsed or ProductFields()
    legacy = {name: None for name in _VALUE_COLUMNS} | _legacy_columns(Prediction.__table__, parsed)
    if item.parsed is not None:  # an answer without sizes stores {}, as older versions did
        legacy.update({name: {} for name, value in legacy.items() if value is None and name in _JSON_COLUMNS})
    return {
        "run_id": run_id,
        "image_id": image_id,
        "path": _text(item.path),
        "raw_output": _text(item.raw_output),
        **legacy,
        "latency_ms": _finite_floats(item.latency_ms),
        "error": _text(item.error),
        "retryable": bool(item.retryable and item.error),
        "created_at": now,
    }


def _truth_values(run_id: int, image_id: int, truth: TruthRecord) -> dict:
    fields = truth.fields
    return {
        "run_id": run_id,
        "image_id": image_id,
        "row_number": truth.row_number,
        "key": _text(truth.key),
        "image_ref": _text(truth.image_ref),
        **{name: None for name in _VALUE_COLUMNS},
        **_legacy_columns(TruthRow.__table__, fields),
    }


def _stored_totals(session: Session, run_ids: list[int]) -> dict[int, tuple[int, int]]:
    """Run id -> (images, failed images) stored in it, counted in its predictions."""
    totals = dict.fromkeys(run_ids, (0, 0))
    for chunk in _chunks(run_ids):
        query = (
            select(Prediction.run_id, func.count(), func.count(Prediction.error))
            .where(Prediction.run_id.in_(chunk))
            .group_by(Prediction.run_id)
        )
        totals.update((run_id, (n_images, n_failed)) for run_id, n_images, n_failed in session.execute(query))
    return totals


def _with_live_totals(session: Session, runs: list[RunInfo]) -> list[RunInfo]:
    """Runs still `running` with their totals as stored so far: one in progress, or one whose process could not
    close it (killed; a full disk, where not even the closing fits) holds more than nothing."""
    running = [run.id for run in runs if run.status == RUNNING]
    if not running:
        return runs
    totals = _stored_totals(session, running)
    return [
        replace(run, n_images=totals[run.id][0], n_failed=totals[run.id][1]) if run.id in totals else run
        for run in runs
    ]


def _run_info(run: Run) -> RunInfo:
    return RunInfo(
        id=run.id,
        key=run.key,
        name=run.name,
        model=run.model,
        backend=run.backend,
        prompt_name=run.prompt_name,
        prompt_text=run.prompt_text,
        settings=run.settings or {},
        versions=run.versions or {},
        inputs=run.inputs or [],
        truth_path=run.truth_path,
        status=run.status,
        started_at=_aware(run.started_at),
        finished_at=_aware(run.finished_at),
        elapsed_s=run.elapsed_s,
        n_images=run.n_images,
        n_failed=run.n_failed,
        images_per_s=run.images_per_s,
        stats=run.stats or {},
    )


def _field_results_query(run_id: int):
    """The run's field results in storage order: the prediction they belong to, then `FieldResult`'s values."""
    return (
        select(
            FieldResultRow.prediction_id,
            FieldResultRow.field,
            FieldResultRow.outcome,
            FieldResultRow.predicted,
            FieldResultRow.expected,
            FieldResultRow.score,
            FieldResultRow.confidence,
        )
        .where(FieldResultRow.run_id == run_id)
        .order_by(FieldResultRow.id)
    )


@dataclass
class _PostgresBatch:
    """A batch's rows as `postgres.add_batch` asks for them: the same rows as the generic path writes."""

    session: Session
    run_id: int
    items: list[ItemResult]
    now: datetime

    def image_rows(self) -> list[dict]:
        return [_image_values(item) for item in self.items]

    def paths(self) -> list[str | None]:
        return [_text(item.path) for item in self.items]

    def delete_predictions(self, found: dict[int, int]) -> None:
        _delete_predictions(self.session, self.run_id, found)

    def item_rows(self, image_ids: list[int]) -> ItemRows:
        run_id, todo = self.run_id, list(zip(image_ids, self.items, strict=True))
        return ItemRows(
            predictions=[_prediction_values(run_id, image_id, item, self.now) for image_id, item in todo],
            truth=[_truth_values(run_id, image_id, item.truth) for image_id, item in todo if item.truth is not None],
            values=_value_rows(run_id, todo),
            results=[_result_values(run_id, image_id, result) for image_id, item in todo for result in item.field_results],
        )
