"""Inspectors' decisions on disagreements: the names they use, and importing a report's decisions CSV.

The report lets an inspector decide, per field of an image, whether the catalogue is wrong (optionally with the
corrected value), the model is wrong, or both are fine; it downloads the decisions as a CSV with the columns
`DECISION_COLUMNS`. `import_decisions` stores such a file in the `reviews` table, idempotently, skipping (and
naming) every row that does not fit the database.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from inspector.errors import InputError
from inspector.store import Review, Store

CATALOGUE_WRONG, MODEL_WRONG, BOTH_FINE = "catalogue_wrong", "model_wrong", "both_fine"
#: The decisions, in the order the report's controls show them.
DECISIONS: tuple[str, ...] = (CATALOGUE_WRONG, MODEL_WRONG, BOTH_FINE)
#: Columns every decisions CSV has (the report writes more: path, values, confidence, reviewer, decided_at).
DECISION_COLUMNS: tuple[str, ...] = ("run_id", "sha256", "field", "decision", "corrected_value")
_REQUIRED = ("run_id", "sha256", "field", "decision")


@dataclass
class ImportSummary:
    rows: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    #: One line per skipped row: where it is and why.
    skipped: list[str] = field(default_factory=list)


def read_decisions(path: str | Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row of a decisions CSV; a one-line InputError if it cannot be used."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or []]
            missing = [name for name in _REQUIRED if name not in columns]
            if missing:
                raise InputError(
                    f"{path}: not a decisions CSV (no column {', '.join(missing)}); download one from the report's "
                    "review view"
                )
            reader.fieldnames = columns
            return [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path}: cannot read it as a UTF-8 CSV ({error})") from None


def import_decisions(store: Store, path: str | Path, reviewer: str | None = None) -> ImportSummary:
    """Store the decisions of a CSV; rows for an unknown run, image or field, or with an unknown decision, are
    skipped and listed. `reviewer` is used where the row has none."""
    summary = ImportSummary()
    reviewable: dict[int, dict[tuple[str, str], int] | None] = {}
    decisions: dict[tuple[int, str, str], Review] = {}
    for line, row in read_decisions(path):
        summary.rows += 1
        value = {key: (text or "").strip() for key, text in row.items() if key is not None}
        run_text, sha, name, decision = (value.get(key, "") for key in _REQUIRED)
        if decision not in DECISIONS:
            summary.skipped.append(
                f"line {line}: unknown decision {decision!r} (use {', '.join(DECISIONS)}), skipped"
            )
            continue
        try:
            run_id = int(run_text)
        except ValueError:
            summary.skipped.append(f"line {line}: run_id {run_text!r} is not a run number, skipped")
            continue
        if run_id not in reviewable:
            reviewable[run_id] = _reviewable(store, run_id)
        targets = reviewable[run_id]
        if targets is None:
            summary.skipped.append(f"line {line}: unknown run {run_id}, skipped")
            continue
        if not any(key[0] == sha for key in targets):
            summary.skipped.append(f"line {line}: image {sha[:12] or '(empty)'} is not in run {run_id}, skipped")
            continue
        if (sha, name) not in targets:
            summary.skipped.append(
                f"line {line}: run {run_id} has no result for field {name!r} of image {sha[:12]}, skipped"
            )
            continue
        corrected = value.get("corrected_value") or None
        if decision != CATALOGUE_WRONG and corrected is not None:
            summary.skipped.append(
                f"line {line}: a corrected value goes with catalogue_wrong, not {decision}, skipped"
            )
            continue
        decisions[(run_id, sha, name)] = Review(
            run_id=run_id,
            sha256=sha,
            field=name,
            decision=decision,
            corrected_value=corrected,
            reviewer=value.get("reviewer") or reviewer,
            reviewed_at=_moment(value.get("decided_at")),
        )
    counts = store.save_reviews(list(decisions.values()))
    summary.added, summary.updated, summary.unchanged = counts["added"], counts["updated"], counts["unchanged"]
    return summary


def _reviewable(store: Store, run_id: int) -> dict[tuple[str, str], int] | None:
    if run_id not in {run.id for run in store.list_runs()}:
        return None
    return store.reviewable(run_id)


def _moment(text: str | None) -> datetime | None:
    """The report's decided_at (ISO 8601); None (import time) when absent or unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


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
