"""Where scan results live: SQLAlchemy models, migrations and the `Store` the scan and report use."""

from __future__ import annotations

from inspector.store.engine import StoreError, shown_database
from inspector.store.migrations import SchemaTooNewError
from inspector.store.store import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    RUN_STATUSES,
    RUNNING,
    ItemResult,
    Review,
    RunInfo,
    Store,
    open_store,
)
from inspector.store.tables import (
    EARLIEST_TIME,
    LATEST_TIME,
    REVIEWER_LENGTH,
    RUN_NAME_LENGTH,
    length_problem,
)

__all__ = [
    "COMPLETED",
    "EARLIEST_TIME",
    "LATEST_TIME",
    "REVIEWER_LENGTH",
    "RUN_NAME_LENGTH",
    "length_problem",
    "FAILED",
    "INTERRUPTED",
    "RUNNING",
    "RUN_STATUSES",
    "ItemResult",
    "Review",
    "RunInfo",
    "SchemaTooNewError",
    "Store",
    "shown_database",
    "StoreError",
    "open_store",
]
