"""Inspectors' decisions on disagreements: the names they use, and importing a report's decisions CSV.

The report lets an inspector decide, per field of an image, whether the catalogue is wrong (optionally with the
corrected value), the model is wrong, or both are fine; it downloads the decisions as a CSV with the columns
`DECISION_COLUMNS`. `import_decisions` stores such a file in the `reviews` table, idempotently.

Nothing in the file is lost without a word: the file is read like a catalogue (`inspector.csvfiles`: encoding,
separator, Excel's "sep=" line), a malformed line (a quote left open, a cell too many) is skipped and named,
and the lines after it are read as they are; every row that does not fit the database is skipped and named;
rows that decide the same field of the same image again are named with the line that wins and why (the later
decided_at, else the later line). The counts add up: rows read = added + updated + unchanged + skipped +
duplicates + overridden.

Cells are read back as the report wrote them: a formula-like value it guarded with a leading quote against CSV
injection (`inspector.csvfiles.formula_safe`) gets that quote removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from inspector.csvfiles import (
    QUOTE_LEFT_OPEN,
    CsvKind,
    Unreadable,
    read_csv_text,
    resyncing_records,
    unguarded,
)
from inspector.errors import InputError
from inspector.store import EARLIEST_TIME, LATEST_TIME, REVIEWER_LENGTH, Review, Store, length_problem

CATALOGUE_WRONG, MODEL_WRONG, BOTH_FINE = "catalogue_wrong", "model_wrong", "both_fine"
#: The decisions, in the order the report's controls show them.
DECISIONS: tuple[str, ...] = (CATALOGUE_WRONG, MODEL_WRONG, BOTH_FINE)
#: Columns every decisions CSV has (the report writes more: path, values, confidence, reviewer, decided_at).
DECISION_COLUMNS: tuple[str, ...] = ("run_id", "sha256", "field", "decision", "corrected_value")
_REQUIRED = ("run_id", "sha256", "field", "decision")
#: How decisions files are named in messages.
DECISIONS_CSV = CsvKind("decisions CSV", "DECISIONS.csv", "a header line and one row per decision")


@dataclass
class ImportSummary:
    """What an import did with each row read: rows = added + updated + unchanged + skipped + duplicates +
    overridden."""

    rows: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    #: One line per skipped row: where it is and why.
    skipped: list[str] = field(default_factory=list)
    #: One line per row that repeats the decision of an earlier row (stored once).
    duplicates: list[str] = field(default_factory=list)
    #: One line per row that lost to another row deciding the same field differently: which line won, and why.
    overridden: list[str] = field(default_factory=list)


@dataclass
class _Candidate:
    """A row that fits the database, before rows deciding the same field again are settled."""

    line: int
    review: Review
    #: Whether the row gave its decided_at (review.reviewed_at is None otherwise: the import time).
    dated: bool


def read_decisions(path: str | Path) -> list[tuple[int, dict[str, str] | str]]:
    """(line number, row) for each data record of a decisions CSV, in file order; a malformed record's row is
    the line saying where and why it is skipped. A one-line InputError if the file cannot be used at all."""
    text = read_csv_text(path, DECISIONS_CSV)
    found = resyncing_records(text)
    header = next(found, None)
    columns = (
        [] if header is None or isinstance(header, Unreadable) else [name.strip() for name in header.cells]
    )
    missing = [name for name in _REQUIRED if name not in columns]
    if missing:
        raise InputError(
            f"{text.path}: not a decisions CSV (no column {', '.join(missing)}); download one from the report's "
            "review view"
        )
    rows: list[tuple[int, dict[str, str] | str]] = []
    for record in found:
        if isinstance(record, Unreadable):
            reason = record.reason + (
                " (the lines after it are read on their own)"
                if record.reason == QUOTE_LEFT_OPEN
                else " (a quote left open?)"
            )
            rows.append((record.line, f"line {record.line}: {reason}, skipped"))
        elif len(record.cells) != len(columns):
            rows.append(
                (
                    record.first_line,
                    f"{'lines' if record.last_line > record.first_line else 'line'} {record.lines()}: "
                    f"{len(record.cells)} cells where the header has {len(columns)} "
                    "(a separator in a value that is not quoted?), skipped",
                )
            )
        else:
            # A name used twice in the header: the first column of that name counts.
            cells = [unguarded(cell.strip()) for cell in record.cells]
            rows.append((record.first_line, dict(zip(reversed(columns), reversed(cells), strict=True))))
    return rows


def import_decisions(store: Store, path: str | Path, reviewer: str | None = None) -> ImportSummary:
    """Store the decisions of a CSV; malformed rows, rows for an unknown run, image or field, or with an unknown
    decision, are skipped and listed, and so are rows that another row for the same field overrides (see the
    module docstring). `reviewer` is used where the row has none."""
    problem = length_problem(reviewer, REVIEWER_LENGTH)
    if problem:
        raise InputError(f"--reviewer {problem}")
    summary = ImportSummary()
    runs = {run.id for run in store.list_runs()}
    targets: dict[int, _RunTargets] = {}
    chosen: dict[tuple[int, str, str], _Candidate] = {}
    for line, row in read_decisions(path):
        summary.rows += 1
        if isinstance(row, str):
            summary.skipped.append(row)
            continue
        found = _candidate(line, row, runs, targets, store, reviewer)
        if isinstance(found, str):
            summary.skipped.append(f"line {line}: {found}, skipped")
            continue
        key = (found.review.run_id, found.review.sha256, found.review.field)
        earlier = chosen.get(key)
        if earlier is None:
            chosen[key] = found
            continue
        winner, loser, why = _settle(earlier, found)
        chosen[key] = winner
        what = f"image {found.review.sha256[:12]} field {found.review.field!r} of run {found.review.run_id}"
        if _describe(winner) == _describe(loser):
            summary.duplicates.append(
                f"line {found.line}: the same decision as line {earlier.line} for {what}, counted once"
            )
        else:
            summary.overridden.append(
                f"line {loser.line}: {what} is decided differently on line {winner.line} ({_describe(winner)} "
                f"instead of {_describe(loser)}); line {winner.line} wins: {why}"
            )
    counts = store.save_reviews([candidate.review for candidate in chosen.values()])
    summary.added, summary.updated, summary.unchanged = counts["added"], counts["updated"], counts["unchanged"]
    return summary


@dataclass
class _RunTargets:
    """What a run's decisions can be about: its (sha256, field) pairs, and its images by sha256."""

    fields: set[tuple[str, str]]
    images: set[str]

    @classmethod
    def of(cls, store: Store, run_id: int) -> _RunTargets:
        fields = set(store.reviewable(run_id))
        return cls(fields, {sha for sha, _ in fields})


def _candidate(
    line: int,
    value: dict[str, str],
    runs: set[int],
    targets: dict[int, _RunTargets],
    store: Store,
    reviewer: str | None,
) -> _Candidate | str:
    """The row's decision, or why it cannot be stored."""
    run_text, sha, name, decision = (value.get(key, "") for key in _REQUIRED)
    if decision not in DECISIONS:
        return f"unknown decision {decision!r} (use {', '.join(DECISIONS)})"
    if not (run_text.isascii() and run_text.isdigit()):
        return f"run_id {run_text!r} is not a run number"
    run_id = int(run_text)
    if run_id not in runs:
        return f"unknown run {run_id}"
    if run_id not in targets:
        targets[run_id] = _RunTargets.of(store, run_id)
    run = targets[run_id]
    if sha not in run.images:
        return f"image {sha[:12] or '(empty)'} is not in run {run_id}"
    if (sha, name) not in run.fields:
        return f"run {run_id} has no result for field {name!r} of image {sha[:12]}"
    corrected = value.get("corrected_value") or None
    if decision != CATALOGUE_WRONG and corrected is not None:
        return f"a corrected value goes with catalogue_wrong, not {decision}"
    row_reviewer = value.get("reviewer") or None
    problem = length_problem(row_reviewer, REVIEWER_LENGTH)
    if problem:
        return f"reviewer {problem}"
    try:
        moment = _moment(value.get("decided_at"))
    except ValueError as error:
        return str(error)
    review = Review(
        run_id=run_id,
        sha256=sha,
        field=name,
        decision=decision,
        corrected_value=corrected,
        reviewer=row_reviewer or reviewer,
        reviewed_at=moment,
    )
    return _Candidate(line, review, dated=moment is not None)


def _settle(earlier: _Candidate, later: _Candidate) -> tuple[_Candidate, _Candidate, str]:
    """Of two rows deciding the same field: (winner, loser, why). The later decided_at wins (as in the report,
    where the newer decision wins); when no decided_at tells them apart, the later line."""
    if earlier.dated and later.dated and earlier.review.reviewed_at != later.review.reviewed_at:
        winner, loser = (
            (later, earlier) if later.review.reviewed_at > earlier.review.reviewed_at else (earlier, later)
        )
        return winner, loser, f"it was decided later ({winner.review.reviewed_at.isoformat()})"
    return later, earlier, "it comes later in the file (no decided_at tells them apart)"


def _describe(candidate: _Candidate) -> str:
    corrected = candidate.review.corrected_value
    return candidate.review.decision + ("" if corrected is None else f" {corrected!r}")


def _moment(text: str | None) -> datetime | None:
    """The report's decided_at (ISO 8601; no offset means UTC) in UTC; None (import time) when absent. A
    ValueError says why a text is no time a database can store and give back."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"decided_at {text!r} is not a date and time (write it like 2026-12-04T10:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        moment = moment.astimezone(timezone.utc)
    except OverflowError:  # the year before 1 or after 9999 in UTC
        moment = None
    if moment is None or not EARLIEST_TIME <= moment <= LATEST_TIME:
        raise ValueError(f"decided_at {text!r} is outside the years 1 to 9999 in UTC")
    return moment


# --------------------------------------------------------------------------------------------------------------
# What the report's review view shows
# --------------------------------------------------------------------------------------------------------------

#: Outcomes a reviewer decides on: the model and the catalogue disagree.
DISAGREEMENTS = ("wrong", "spurious", "missed")
#: Coverages (share of the model's answers, most confident first) at which the report shows accuracy.
COVERAGES: tuple[int, ...] = (10, 25, 50, 75, 100)
_SIZE_PREFIX = "size_price:"


def review_view_data(store: Store, run_id: int, rows: list[dict], db_label: str) -> dict:
    """The review view's data: every field result with a value or a disagreement (sha, path, field, outcome,
    model value, catalogue value, confidence, catalogue key), the stored decisions, and accuracy at coverage."""
    items = []
    for row in rows:
        key = row["truth"]["key"] if row["truth"] else None
        for result in row["field_results"]:
            if result["outcome"] not in DISAGREEMENTS and result["confidence"] is None:
                continue
            items.append(
                [
                    row["sha256"], row["path"], result["field"], result["outcome"], result["predicted"],
                    result["expected"], result["confidence"], key,
                ]
            )  # fmt: skip
    stored = {
        f"{review.sha256}\t{review.field}": [review.decision, review.corrected_value]
        for review in store.reviews(run_id)
    }
    return {
        "db": db_label,
        "run": run_id,
        "decisions": list(DECISIONS),
        "items": items,
        "stored": stored,
    }


def accuracy_at_coverage(rows: list[dict], coverages: tuple[int, ...] = COVERAGES) -> list[dict]:
    """Per field: of the model's values that have a confidence, the accuracy of the most confident k% for each
    coverage k (per-size prices together as size_price). Values without a confidence are counted, not ranked."""
    by_field: dict[str, list[tuple[float, bool]]] = {}
    unranked: dict[str, int] = {}
    for row in rows:
        for result in row["field_results"]:
            if result["predicted"] is None or result["outcome"] not in ("correct", "wrong", "spurious"):
                continue
            name = "size_price" if result["field"].startswith(_SIZE_PREFIX) else result["field"]
            if result["confidence"] is None:
                unranked[name] = unranked.get(name, 0) + 1
                continue
            by_field.setdefault(name, []).append((result["confidence"], result["outcome"] == "correct"))
    table = []
    for name, values in by_field.items():
        values.sort(key=lambda value: -value[0])
        points = []
        for coverage in coverages:
            top = values[: max(1, round(len(values) * coverage / 100))]
            points.append({"coverage": coverage, "n": len(top), "accuracy": sum(ok for _, ok in top) / len(top)})
        table.append({"field": name, "n": len(values), "unranked": unranked.get(name, 0), "points": points})
    return table


def disagreements_in_review_order(items: list[list]) -> list[list]:
    """The review view's first list, "Disagreements, most confident first" (`render` in templates/review.js), from
    `review_view_data(...)["items"]`: the disagreements, by the model's confidence high to low, those without a
    confidence last, ties by path. Benchmarks that simulate inspectors take them in this order."""
    disagreements = [item for item in items if item[3] in DISAGREEMENTS]
    return sorted(disagreements, key=lambda item: (item[6] is None, -(item[6] or 0.0), item[1]))
