"""The HTML report: one self-contained file that shows a run (or two runs side by side) against the catalogue.

Summary, metrics and confusion tables are rendered by Jinja (autoescaped). The per-image rows travel as JSON in a
`<script type="application/json">` block (Jinja's `tojson` escapes `<`, `>`, `&` and `'`) and are drawn a page at a
time by inline JavaScript with `textContent` only, so 10,000 images stay fast and no value can become markup. A
Content-Security-Policy allows only our own inline script (by hash) and `data:` images: nothing is fetched.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import statistics
from collections import Counter, defaultdict
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from inspector import __version__
from inspector.errors import InputError, InspectorError
from inspector.fields import FieldSet, FieldSpec, Outcome
from inspector.kinds import kind_of
from inspector.outputs import write_text_atomic
from inspector.review import DECISIONS, accuracy_at_coverage, review_view_data
from inspector.scoring import format_errors, normalise_label, outside_sides
from inspector.store import RunInfo, Store

#: Outcomes that mean the model and the catalogue disagree.
MISMATCHES = (Outcome.WRONG, Outcome.MISSED, Outcome.SPURIOUS)
#: When per-size results are merged into one size_prices outcome, the first one present wins.
_SIZE_OUTCOME_PRIORITY = (
    Outcome.WRONG,
    Outcome.MISSED,
    Outcome.SPURIOUS,
    Outcome.UNREADABLE,
    Outcome.CORRECT,
    Outcome.BOTH_EMPTY,
)
SIZE_PRICE_PREFIX = "size_price:"
#: The confusion table shows at most this many categories per axis; the rest are summed into "(other)".
MAX_CONFUSION_CATEGORIES = 20
NONE_KEY, OTHER_KEY = "", "\x00other"


def _template_dirs() -> list[str]:
    """Templates ship inside the wheel (inspector/templates) and live at the repository root in a checkout."""
    here = Path(__file__).resolve().parent
    return [str(d) for d in (here / "templates", here.parent / "templates") if d.is_dir()]


@lru_cache(maxsize=1)
def _environment() -> Environment:
    dirs = _template_dirs()
    if not dirs:
        raise InspectorError(
            "the report templates are missing (expected inspector/templates or templates/ next to the package); "
            "reinstall inspector"
        )
    env = Environment(
        loader=FileSystemLoader(dirs),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=_pct, num=_num, when=_when, duration=_duration)
    return env


def _asset(name: str) -> str:
    """A static file next to the templates (CSS, JS), as text."""
    env = _environment()
    source, _filename, _uptodate = env.loader.get_source(env, name)
    return source


def render_report(
    store: Store,
    run_id: int,
    out_path: Path,
    compare_run_id: int | None = None,
    fieldset: FieldSet | None = None,
) -> Path:
    """Write the report of `run_id` (side by side with `compare_run_id` if given) to `out_path`; returns it.

    The file is written atomically: a reader never sees half a report.
    """
    html = render_report_html(store, run_id, compare_run_id, fieldset)
    # Lone surrogates (undecodable file names in older databases) are not UTF-8: show them as U+FFFD.
    return write_text_atomic(out_path, re.sub("[\ud800-\udfff]", "\ufffd", html), "the report")


def render_report_html(
    store: Store, run_id: int, compare_run_id: int | None = None, fieldset: FieldSet | None = None
) -> str:
    """The report's HTML. Columns, filters, metrics and confusion tables follow the fields the run read
    (stored with it), or `fieldset` where given; in a comparison, the first run's fields then the second's."""
    run_ids = [run_id] if compare_run_id is None else [run_id, compare_run_id]
    if compare_run_id is not None and compare_run_id == run_id:
        raise InputError(
            f"--compare must name another run than {run_id}: comparing a run with itself shows nothing"
        )
    if fieldset is not None:
        _check_same_kinds(fieldset, [store.get_run(rid) for rid in run_ids])
    fieldset = fieldset or _union(*(store.get_run(rid).fields for rid in run_ids))
    views = [_run_view(store, rid, fieldset) for rid in run_ids]
    if len(views) == 2:
        views[0]["letter"], views[1]["letter"] = "A", "B"
    # One inline script (allowed by its hash): the image table, then the review view.
    script = _asset("report.js") + "\n" + _asset("review.js")
    script_hash = _script_hash(script)
    # The review view (confidence-ranked disagreements, decisions) is about the first run.
    review = review_view_data(store, views[0]["info"].id, views[0]["rows"], store.url)
    template = _environment().get_template("report.html.j2")
    return template.render(
        runs=views,
        compare=len(views) == 2,
        fields=[(spec.name, spec.label) for spec in fieldset],
        metric_fields=_metric_fields(views, fieldset),
        data=_clean_json(_client_data(views, fieldset)),
        css=_asset("report.css"),
        script=script,
        script_hash=script_hash,
        review_data=_clean_json(review),
        coverage=accuracy_at_coverage(views[0]["rows"]),
        no_confidence=_no_confidence_reason(views[0]),
        decisions=DECISIONS,
        generated_at=datetime.now(timezone.utc),
        db_url=store.url,
        version=__version__,
        outcomes=Outcome.ALL,
    )


def _script_hash(script: str) -> str:
    """The CSP source that allows exactly this inline script."""
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")


# ------------------------------------------------------------------------------------------ per run


def _union(first: FieldSet, *others: FieldSet) -> FieldSet:
    specs = list(first)
    for other in others:
        specs += [spec for spec in other if spec.name not in first]
    return FieldSet(tuple(specs))


def _confusable(fieldset: FieldSet) -> list:
    """Fields with a confusion table and a value filter: the categorical ones."""
    return [spec for spec in fieldset if kind_of(spec).categorical]


def _run_view(store: Store, run_id: int, fieldset: FieldSet) -> dict:
    info = store.get_run(run_id)
    rows = store.run_rows(info.id)
    metrics = {name: _metric_dict(m.to_dict()) for name, m in store.run_metrics(info.id).items()}
    for row in rows:
        row["outcomes"], row["size_outcomes"] = _row_outcomes(row["field_results"], fieldset)
    return {
        "info": info,
        "letter": "",
        "rows": rows,
        "metrics": metrics,
        "counts": _counts(info, rows),
        "confusions": [
            {"field": spec.name, "label": spec.label, **_confusion(rows, spec.name)}
            for spec in _confusable(fieldset)
        ],
        "unreadable": _unreadable_cells(rows),
        "settings": _flat_items(info.settings),
        "versions": _flat_items(info.versions),
        "extra_stats": _flat_items({k: v for k, v in info.stats.items() if k not in _SHOWN_STATS}),
    }


_SHOWN_STATS = {"elapsed_s", "n_images", "n_failed", "images_per_s"}


def _unreadable_cells(rows: list[dict]) -> list[dict]:
    """The catalogue cells of the run's matched rows that could not be read (their fields were not judged), by
    catalogue row: image, row, column, field, the cell as written, why, and what the model said."""
    cells = []
    for row in rows:
        truth = row["truth"]
        if not truth or not truth.get("unreadable"):
            continue
        answered = {r["field"]: r["predicted"] for r in row["field_results"]}
        for cell in truth["unreadable"]:
            cells.append(
                {
                    "path": row["path"],
                    "row_number": truth["row_number"],
                    "column": cell.get("column"),
                    "field": cell["field"],
                    "value": cell["value"],
                    "reason": cell.get("reason"),
                    "predicted": answered.get(cell["field"]),
                }
            )
    cells.sort(key=lambda cell: (cell["row_number"], cell["column"] or "", cell["path"]))
    return cells


def _metric_dict(values: dict) -> dict:
    """The metric keys the template reads, whichever shape FieldMetrics.to_dict() has."""
    counts = values.get("counts") or {o: values.get(o) or 0 for o in Outcome.ALL}
    return {
        # Results judged (an unreadable catalogue cell is counted, not judged).
        "n": values["n"] if values.get("n") is not None else sum(counts.get(o, 0) for o in Outcome.SCORED),
        "counts": counts,
        "accuracy": values.get("accuracy"),
        "precision": values.get("precision"),
        "recall": values.get("recall"),
        "f1": values.get("f1"),
        "mae": values.get("mae", values.get("mean_abs_error")),
        "mae_text": format_errors(values) or "–",
        # What the error is counted in (its currency, "" for one without or a number field), for A/B deltas.
        "mae_unit": next(iter(values.get("mean_abs_error_by_currency") or {}), ""),
        "outside_values": values.get("outside_values") or 0,
        "catalogue_outside_values": values.get("catalogue_outside_values") or 0,
        "outside_total": (values.get("outside_values") or 0) + (values.get("catalogue_outside_values") or 0),
    }


def _row_outcomes(results: list[dict], fieldset: FieldSet) -> tuple[dict[str, str], dict[str, str]]:
    """field -> outcome for the row's cells; per-size outcomes merged into the size table's cell.

    A scored row without any size result had no size prices on either side: both empty.
    """
    outcomes: dict[str, str] = {}
    sizes: dict[str, str] = {}
    for result in results:
        name = result["field"]
        if name.startswith(SIZE_PRICE_PREFIX):
            sizes[name[len(SIZE_PRICE_PREFIX) :]] = result["outcome"]
        else:
            outcomes[name] = result["outcome"]
    table = fieldset.first("size_prices")
    if table is None or table.name in outcomes:
        return outcomes, sizes
    if sizes:
        present = set(sizes.values())
        outcomes[table.name] = next((o for o in _SIZE_OUTCOME_PRIORITY if o in present), Outcome.WRONG)
    elif outcomes:
        outcomes[table.name] = Outcome.BOTH_EMPTY
    return outcomes, sizes


def _is_mismatch(row: dict) -> bool:
    return bool(row["error"]) or any(o in MISMATCHES for o in row["outcomes"].values())


def _counts(info: RunInfo, rows: list[dict]) -> dict[str, Any]:
    latencies = [r["latency_ms"] for r in rows if r["latency_ms"] is not None and not r["error"]]
    with_truth = [r for r in rows if r["truth"] is not None]
    return {
        "images": len(rows),
        "failed": sum(1 for r in rows if r["error"]),
        "with_truth": len(with_truth),
        "all_correct": sum(
            1 for r in with_truth if not _is_mismatch(r) and Outcome.CORRECT in r["outcomes"].values()
        ),
        "mismatched": sum(1 for r in with_truth if _is_mismatch(r)),
        "images_per_s": info.images_per_s,
        "elapsed_s": info.elapsed_s,
        "median_latency_ms": statistics.median(latencies) if latencies else None,
        # Images whose answer gave any field a value: none at all means the model (or the prompt) is not working.
        "answered": sum(1 for r in rows if not r["error"] and _has_value(r["predicted"])),
    }


def _has_value(values: dict) -> bool:
    return any(value not in (None, "", {}) for value in values.values())


def _no_confidence_reason(view: dict) -> str:
    """Why the review view has no confidence to rank values by."""
    counts = view["counts"]
    if not counts["with_truth"]:
        return "the run has no catalogue rows (scan with --truth catalogue.csv)"
    if not counts["answered"]:
        return "the model answered no field in any image (every answer was empty or could not be read)"
    return "the run's backend gives no token probabilities"


def _category_key(value: str | None) -> str:
    """Categories group as scoring compares them, so the confusion table's diagonal is what scored correct."""
    return normalise_label(value) or NONE_KEY


def _check_same_kinds(fieldset: FieldSet, runs: list[RunInfo]) -> None:
    """Stored values are of the kind (and unit) the run read them as: other fields can relabel them, not turn a
    price into a category or millilitres into grams, which would crash or silently mislabel them."""

    def what(spec: FieldSpec) -> str:
        return f"{spec.kind} in {spec.unit}" if spec.unit else spec.kind

    for info in runs:
        for spec in fieldset:
            stored = info.fields.get(spec.name)
            if stored is not None and what(stored) != what(spec):
                raise InputError(
                    f"--fields: field {spec.name!r} is {what(spec)} in that file, but {info.label} stored it as "
                    f"{what(stored)}; a report's --fields can relabel stored fields, not change their kind or unit "
                    "(scan with the file to read them so)"
                )


def _confusion(rows: list[dict], field: str) -> dict:
    """Catalogue value x predicted value counts of one categorical field, over the rows with a catalogue row."""
    pairs = []
    spellings: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        if row["truth"] is None:
            continue
        truth, predicted = row["truth"]["fields"].get(field), row["predicted"].get(field)
        pair = (_category_key(truth), _category_key(predicted))
        pairs.append(pair)
        for key, value in zip(pair, (truth, predicted), strict=True):
            if value:
                spellings[key][" ".join(value.split())] += 1

    def label(key: str) -> str:
        if key == NONE_KEY:
            return "(none)"
        if key == OTHER_KEY:
            return "(other)"
        return spellings[key].most_common(1)[0][0]

    truth_counts = Counter(t for t, _ in pairs)
    pred_counts = Counter(p for _, p in pairs)
    row_keys = [k for k, _ in truth_counts.most_common(MAX_CONFUSION_CATEGORIES)]
    col_keys = [k for k in row_keys if k in pred_counts]
    col_keys += [k for k, _ in pred_counts.most_common() if k not in col_keys][
        : max(0, MAX_CONFUSION_CATEGORIES - len(col_keys))
    ]
    cells: Counter = Counter()
    for t, p in pairs:
        cells[(t if t in row_keys else OTHER_KEY, p if p in col_keys else OTHER_KEY)] += 1
    if any(t == OTHER_KEY for t, _ in cells):
        row_keys.append(OTHER_KEY)
    if any(p == OTHER_KEY for _, p in cells):
        col_keys.append(OTHER_KEY)
    table_rows = []
    for t in row_keys:
        total = sum(cells[(t, p)] for p in col_keys)
        table_rows.append(
            {
                "key": t,
                "label": label(t),
                "total": total,
                "correct": cells[(t, t)] if t not in (OTHER_KEY, NONE_KEY) else None,
                "cells": [
                    {"key": p, "count": cells[(t, p)], "diagonal": t == p and t != OTHER_KEY}
                    for p in col_keys
                ],
            }
        )
    return {
        "n": len(pairs),
        "columns": [{"key": p, "label": label(p)} for p in col_keys],
        "rows": table_rows,
        "other_key": OTHER_KEY,
    }


def _metric_fields(views: list[dict], fieldset: FieldSet) -> list[str]:
    """Fields with metrics in any run: the declared ones in their order, then e.g. size_price:<size>."""
    names = {name for view in views for name in view["metrics"]}
    extra = sorted(names - set(fieldset.names), key=_natural_key)
    return [name for name in fieldset.names if name in names] + extra


def _natural_key(text: str) -> tuple:
    """Sizes sort as numbers where they are numbers: 6.5 < 8 < 10 < M."""
    tail = text.rsplit(":", 1)[-1]
    try:
        return (0, float(tail), text)
    except ValueError:
        return (1, 0.0, text)


# ------------------------------------------------------------------------------- client-side data


def _client_data(views: list[dict], fieldset: FieldSet) -> dict:
    """Everything the page script needs, with short keys: it is repeated for every image."""
    by_image: dict[int, dict] = {}
    order: list[int] = []
    confusable = _confusable(fieldset)
    for index, view in enumerate(views):
        for row in view["rows"]:
            entry = by_image.get(row["image_id"])
            if entry is None:
                entry = by_image[row["image_id"]] = {
                    "p": row["path"],
                    "s": row["sha256"],
                    "t": _data_uri(row.get("thumbnail")),
                    "wh": [row["width"], row["height"]] if row["width"] and row["height"] else None,
                    "truth": None,
                    "tr": None,
                    "tk": {},
                    "runs": [None] * len(views),
                }
                order.append(row["image_id"])
            if entry["truth"] is None and row["truth"] is not None:
                entry["truth"] = row["truth"]["fields"]
                entry["tr"] = [row["truth"]["row_number"], row["truth"]["key"]]
                entry["tk"] = {
                    spec.name: _category_key(row["truth"]["fields"].get(spec.name)) for spec in confusable
                }
            entry["runs"][index] = {
                "v": row["predicted"],
                "o": row["outcomes"],
                "sz": row["size_outcomes"],
                "raw": row["raw_output"],
                "err": row["error"],
                "ms": row["latency_ms"],
                "pk": {spec.name: _category_key(row["predicted"].get(spec.name)) for spec in confusable},
                "fr": [_result_entry(r, fieldset) for r in row["field_results"]],
            }
    rows = [by_image[i] for i in order]
    rows.sort(key=lambda r: r["p"])
    # The value filter: each categorical field's values, by how they group for scoring (catalogue first).
    values: dict[str, dict[str, Counter]] = {spec.name: defaultdict(Counter) for spec in confusable}
    for row in rows:
        first = next(run for run in row["runs"] if run is not None)
        row["g"] = {}
        for spec in confusable:
            value = row["truth"].get(spec.name) if row["truth"] else first["v"].get(spec.name)
            row["g"][spec.name] = _category_key(value)
            values[spec.name][row["g"][spec.name]][" ".join(value.split()) if value else "(none)"] += 1
    return {
        "fields": list(fieldset.names),
        "kinds": {spec.name: [spec.kind, spec.unit] for spec in fieldset},
        "display": {spec.name: kind_of(spec).display for spec in fieldset},
        "runs": [{"id": v["info"].id, "label": v["info"].label, "letter": v["letter"]} for v in views],
        "groups": [
            [
                spec.name,
                spec.label,
                sorted(
                    (
                        [key, counts.most_common(1)[0][0], sum(counts.values())]
                        for key, counts in values[spec.name].items()
                    ),
                    key=lambda c: (-c[2], c[1]),
                ),
            ]
            for spec in confusable
        ],
        "mismatches": list(MISMATCHES),
        "rows": rows,
    }


def _result_entry(result: dict, fieldset: FieldSet) -> list:
    """A field result for the page: field, outcome, model value, catalogue value, score, confidence, and which
    side is outside the field's declared values. Categories show no score (older runs stored 1/0 there for "one of
    the declared values", which read as a contradiction beside "wrong")."""
    spec = fieldset.get(result["field"])
    category = spec is not None and kind_of(spec).categorical
    return [
        result["field"],
        result["outcome"],
        result["predicted"],
        result["expected"],
        None if category else result["score"],
        result["confidence"],
        outside_sides(spec, result["predicted"], result["expected"]) if category else None,
    ]


def _data_uri(thumbnail: bytes | None) -> str | None:
    """Only image bytes we recognise become data: URIs."""
    if not thumbnail:
        return None
    if thumbnail.startswith(b"\xff\xd8"):
        mime = "image/jpeg"
    elif thumbnail.startswith(b"\x89PNG\r\n\x1a\n"):
        mime = "image/png"
    elif thumbnail[:4] == b"RIFF" and thumbnail[8:12] == b"WEBP":
        mime = "image/webp"
    else:
        return None
    return f"data:{mime};base64,{base64.b64encode(thumbnail).decode('ascii')}"


def _clean_json(value: Any) -> Any:
    """NaN and infinities are not JSON: the browser's JSON.parse would reject the whole report."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------ filters


def _flat_items(mapping: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings/versions as (dotted key, text) pairs for a two-column table."""
    items: list[tuple[str, str]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            items.extend(_flat_items(value, prefix=f"{name}."))
        elif isinstance(value, list | tuple):
            items.append((name, ", ".join(str(v) for v in value)))
        else:
            items.append((name, "" if value is None else str(value)))
    return items


def _pct(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _num(value: float | int | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _when(moment: datetime | None) -> str:
    return "–" if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
