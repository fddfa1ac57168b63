"""`inspector export`: a run's results, or the catalogue corrections its review decided, as CSV or Parquet.

For people who do not use SQL. The filters are the report's: mismatches only, one field, one catalogue category.
A CSV cell a spreadsheet would run as a formula gets a quote in front (`inspector.csvfiles.formula_safe`); Parquet
keeps every value as it is.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from inspector.csvfiles import formula_safe
from inspector.errors import InputError, OutputError
from inspector.fields import Outcome
from inspector.kinds import kind_of
from inspector.outputs import make_folder, write_text_atomic
from inspector.review import CATALOGUE_WRONG
from inspector.scoring import SIZE_FIELD_PREFIX, normalise_label, outside_sides
from inspector.store import Store

RESULTS, CORRECTIONS = "results", "corrections"
#: What `inspector export --what` can write.
EXPORT_KINDS: tuple[str, ...] = (RESULTS, CORRECTIONS)
#: Outcomes that mean the model and the catalogue disagree (the report's "mismatches only").
MISMATCHES = (Outcome.WRONG, Outcome.MISSED, Outcome.SPURIOUS)
#: The category filter's value for rows whose catalogue category is empty (as in the report).
NO_CATEGORY = "(none)"

RESULT_COLUMNS: tuple[str, ...] = (
    "run_id", "sha256", "path", "catalogue_key", "catalogue_row", "catalogue_category", "field", "outcome",
    "model_value", "catalogue_value", "score", "outside_values", "confidence", "decision", "corrected_value",
    "error",
)  # fmt: skip
CORRECTION_COLUMNS: tuple[str, ...] = (
    "catalogue_key", "catalogue_row", "field", "catalogue_value", "corrected_value", "corrected_by",
    "model_value", "evidence_image", "confidence", "reviewer", "reviewed_at", "run_id", "sha256",
)  # fmt: skip


def export_run(
    store: Store,
    run_id: int,
    out: str | Path,
    *,
    what: str = RESULTS,
    mismatches_only: bool = False,
    field: str | None = None,
    category: str | None = None,
) -> int:
    """Write the rows to `out` (.csv, or .parquet with pyarrow installed); returns how many were written.

    corrections: one row per field the review marked catalogue_wrong; the corrected value is the reviewer's, or
    else the model's value (`corrected_by` says which). results: one row per field result (an image without
    any, e.g. no catalogue row or a failure, gets one row with an empty field)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InputError(f"{out}: write .csv or .parquet (the extension picks the format)")
    if what not in EXPORT_KINDS:
        raise InputError(f"unknown export {what!r}: use {' or '.join(EXPORT_KINDS)}")
    names = store.get_run(run_id).fields.names  # the run's own fields, custom ones included
    if field and field not in names and field != "size_price" and not field.startswith(SIZE_FIELD_PREFIX):
        raise InputError(f"--field {field}: unknown field; use one of {', '.join(names)}")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InputError("Parquet needs pyarrow: pip install 'inspector[parquet]', or write .csv") from None
    rows = _rows(store, run_id, what, mismatches_only, field, category)
    columns = RESULT_COLUMNS if what == RESULTS else CORRECTION_COLUMNS
    _write(out, columns, rows)
    return len(rows)


def _wanted_field(name: str, wanted: str | None) -> bool:
    if not wanted:
        return True
    if wanted in ("size_prices", "size_price"):
        return name.startswith(SIZE_FIELD_PREFIX)
    return name == wanted


def _rows(store: Store, run_id: int, what: str, mismatches_only: bool, field: str | None, category: str | None):
    decisions = {(r.sha256, r.field): r for r in store.reviews(run_id)}
    fieldset = store.get_run(run_id).fields
    wanted_category = None if category is None else (normalise_label(category) if category != NO_CATEGORY else "")
    rows = []
    for image in store.run_rows(run_id, with_thumbnails=False):
        truth = image["truth"]
        catalogue_category = truth["fields"].get("category") if truth else None
        if wanted_category is not None and (normalise_label(catalogue_category) or "") != wanted_category:
            continue
        results = [r for r in image["field_results"] if _wanted_field(r["field"], field)]
        if mismatches_only:
            results = [r for r in results if r["outcome"] in MISMATCHES]
        base = {
            "run_id": run_id,
            "sha256": image["sha256"],
            "catalogue_key": truth["key"] if truth else None,
            "catalogue_row": truth["row_number"] if truth else None,
        }
        if what == CORRECTIONS:
            for result in results:
                review = decisions.get((image["sha256"], result["field"]))
                if review is None or review.decision != CATALOGUE_WRONG:
                    continue
                by_reviewer = review.corrected_value is not None
                rows.append(
                    {
                        **base,
                        "field": result["field"],
                        "catalogue_value": result["expected"],
                        "corrected_value": review.corrected_value if by_reviewer else result["predicted"],
                        "corrected_by": "reviewer" if by_reviewer else "model",
                        "model_value": result["predicted"],
                        "evidence_image": image["path"],
                        "confidence": result["confidence"],
                        "reviewer": review.reviewer,
                        "reviewed_at": review.reviewed_at.isoformat() if review.reviewed_at else None,
                    }
                )
            continue
        common = {
            **base,
            "path": image["path"],
            "catalogue_category": catalogue_category,
            "error": image["error"],
        }
        if not results:
            if image["field_results"] and (mismatches_only or field):
                continue  # it has results, just none that pass the filters
            if mismatches_only and not image["error"]:
                continue
            if field and not image["error"]:
                continue
            rows.append(common)
            continue
        for result in results:
            review = decisions.get((image["sha256"], result["field"]))
            spec = fieldset.get(result["field"])
            category = spec is not None and kind_of(spec).categorical
            rows.append(
                {
                    **common,
                    "field": result["field"],
                    "outcome": result["outcome"],
                    "model_value": result["predicted"],
                    "catalogue_value": result["expected"],
                    # Categories have no score: equal or not is the outcome (older runs stored 1/0 there for "one
                    # of the declared values", which read as a contradiction beside "wrong").
                    "score": None if category else result["score"],
                    "outside_values": outside_sides(spec, result["predicted"], result["expected"]),
                    "confidence": result["confidence"],
                    "decision": review.decision if review else None,
                    "corrected_value": review.corrected_value if review else None,
                }
            )
    return rows


def _write(out: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    """Written atomically: a reader never sees half a file. CSV cells that could run as formulas are guarded."""
    if out.suffix.lower() != ".parquet":
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({column: formula_safe(row.get(column)) for column in columns} for row in rows)
        write_text_atomic(out, text.getvalue(), "the export")
        return
    import pandas as pd

    make_folder(out.parent, "the export")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        frame = pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=list(columns))
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    except OSError as error:
        raise OutputError(f"cannot write the export {out}: {error.strerror or error}") from None
    finally:
        tmp.unlink(missing_ok=True)
