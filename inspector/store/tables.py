"""The ORM models: what a database written by the current version looks like.

The migrations in `inspector.store.migrations` build exactly this schema step by step; a test checks that the two
agree. Change the schema by adding a migration *and* updating these models, never by editing an old migration.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: JSON columns store Python None as SQL NULL (not the JSON text 'null'), so `IS NULL` queries work.
JSONColumn = JSON(none_as_null=True)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


#: The longest run name and reviewer the database holds (varchar: Postgres refuses longer ones).
RUN_NAME_LENGTH = 200
REVIEWER_LENGTH = 200
#: Times every database stores and gives back: Postgres stores years before 1 and after 9999, which no driver
#: can read back (every later read of the row fails). A day's margin on each side of Python's range keeps them
#: readable in any session time zone.
EARLIEST_TIME = datetime(1, 1, 2, tzinfo=timezone.utc)
LATEST_TIME = datetime(9999, 12, 30, tzinfo=timezone.utc)


def length_problem(value: str | None, limit: int) -> str | None:
    """What is wrong with `value` for a column of `limit` characters ("is 250 characters long; at most 200
    fit"), or None when it fits."""
    if value is None or len(value) <= limit:
        return None
    return f"is {len(value)} characters long; at most {limit} fit"


class Base(DeclarativeBase):
    pass


class MigrationRow(Base):
    """One applied migration; the set of names is the schema version."""

    __tablename__ = "_migrations"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Run(Base):
    """One scan: a model with a prompt and settings over a set of inputs. Its key makes reruns resume it."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    name: Mapped[str | None] = mapped_column(String(RUN_NAME_LENGTH), index=True)
    model: Mapped[str] = mapped_column(Text)
    backend: Mapped[str] = mapped_column(String(100))
    prompt_name: Mapped[str] = mapped_column(String(200))
    prompt_text: Mapped[str] = mapped_column(Text)
    settings: Mapped[dict] = mapped_column(JSONColumn)
    versions: Mapped[dict] = mapped_column(JSONColumn)
    inputs: Mapped[list] = mapped_column(JSONColumn)
    truth_path: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    elapsed_s: Mapped[float | None] = mapped_column(Float)
    n_images: Mapped[int | None] = mapped_column(Integer)
    n_failed: Mapped[int | None] = mapped_column(Integer)
    images_per_s: Mapped[float | None] = mapped_column(Float)
    #: Everything finish_run was given, including keys without a column of their own.
    stats: Mapped[dict | None] = mapped_column(JSONColumn)


class ImageRow(Base):
    """One distinct image, identified by the sha256 of its bytes, shared by all runs."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    #: The path (or URL) it was first seen at; predictions keep the path of each run.
    path: Mapped[str] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(20))
    n_bytes: Mapped[int | None] = mapped_column(Integer)
    #: A small JPEG for the report.
    thumbnail: Mapped[bytes | None] = mapped_column(LargeBinary)


class Prediction(Base):
    """What the model answered for one image in one run (or why it could not).

    The built-in fields keep their columns here for existing queries; `field_values` holds every field."""

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("run_id", "image_id", name="uq_predictions_run_image"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    path: Mapped[str] = mapped_column(Text)
    raw_output: Mapped[str | None] = mapped_column(Text)
    brand: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    price: Mapped[float | None] = mapped_column(Float)
    currency: Mapped[str | None] = mapped_column(String(20))
    size_prices: Mapped[dict | None] = mapped_column(JSONColumn)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    #: The error may go away (a download that failed transiently): a rerun tries the image again.
    retryable: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    field_results: Mapped[list[FieldResultRow]] = relationship(back_populates="prediction")


class TruthRow(Base):
    """The catalogue row matched to an image in a run (catalogues differ between runs)."""

    __tablename__ = "truth"
    __table_args__ = (UniqueConstraint("run_id", "image_id", name="uq_truth_run_image"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    row_number: Mapped[int] = mapped_column(Integer)
    key: Mapped[str | None] = mapped_column(Text)
    image_ref: Mapped[str | None] = mapped_column(Text)
    brand: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    price: Mapped[float | None] = mapped_column(Float)
    currency: Mapped[str | None] = mapped_column(String(20))
    size_prices: Mapped[dict | None] = mapped_column(JSONColumn)


class FieldResultRow(Base):
    """How one field of one prediction compares with the truth."""

    __tablename__ = "field_results"
    __table_args__ = (
        Index("ix_field_results_run_field_outcome", "run_id", "field", "outcome"),
        Index("ix_field_results_prediction", "prediction_id"),
        Index("ix_field_results_image", "image_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id"))
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    field: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(20))
    predicted: Mapped[str | None] = mapped_column(Text)
    expected: Mapped[str | None] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float)
    #: How sure the model was of `predicted` (0..1, inspector.confidence); NULL without a value or log-probs.
    confidence: Mapped[float | None] = mapped_column(Float)

    prediction: Mapped[Prediction] = relationship(back_populates="field_results")


class ReviewRow(Base):
    """An inspector's decision on one field of one image in one run (`inspector review import`)."""

    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("run_id", "image_id", "field", name="uq_reviews_run_image_field"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    field: Mapped[str] = mapped_column(String(100))
    #: catalogue_wrong, model_wrong or both_fine (inspector.review.DECISIONS).
    decision: Mapped[str] = mapped_column(String(20))
    corrected_value: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str | None] = mapped_column(String(REVIEWER_LENGTH))
    reviewed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FieldValueRow(Base):
    """One field value of one image in one run, as the model answered it ("predicted") or as the catalogue has
    it ("truth"): every declared field, built-in or from a --fields file, in one long-form table."""

    __tablename__ = "field_values"
    __table_args__ = (
        UniqueConstraint(
            "run_id", "image_id", "source", "field", name="uq_field_values_run_image_source_field"
        ),
        Index("ix_field_values_run_field", "run_id", "field"),
        Index("ix_field_values_image", "image_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    #: "predicted", "truth", or "unreadable" (a catalogue cell that could not be read: `value` as written,
    #: `data` its column and reason).
    source: Mapped[str] = mapped_column(String(20))
    field: Mapped[str] = mapped_column(String(100))
    #: The value as text ("Navy", "115.0", "500 ml" is stored as "500.0" with `number` 500.0).
    value: Mapped[str | None] = mapped_column(Text)
    #: Price and number fields: the number (numbers in the field's declared unit).
    number: Mapped[float | None] = mapped_column(Float)
    #: Size tables: size -> price.
    data: Mapped[dict | None] = mapped_column(JSONColumn)


# Indexes for the queries the report and the data team run most (by run, by image across runs).
Index("ix_predictions_image", Prediction.image_id)
Index("ix_truth_image", TruthRow.image_id)
# Retryable failures by path, looked up by every `Store.add_batch` (partial: only retryable rows; see m007).
Index(
    "ix_predictions_retryable_path",
    Prediction.run_id,
    Prediction.path,
    postgresql_where=text("retryable"),
    sqlite_where=text("retryable IS 1"),
)
