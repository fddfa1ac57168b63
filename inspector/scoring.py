"""Compare an answer with the catalogue, field by field, and sum the outcomes up per field.

Outcomes follow attribute-value-extraction benchmarks: correct, wrong, missed (the catalogue has a value, the
model gave none), spurious (the model gave a value, the catalogue has none), both_empty.

- categories (brand, category): equal after `normalise_label` (case, accents, punctuation, whitespace, "&" = "and");
- text (title): token F1 of the normalised words (as SQuAD scores answers) at least `title_threshold`; score = F1;
- price and each size's price: absolute difference within a `PriceTolerance`; score = absolute error;
- currency: the same ISO 4217 code;
- number fields: equal within the field's tolerance after unit conversion; score = absolute error.

Each field is scored by its kind object (`inspector.kinds`: `FieldKind.score`), so user-declared fields are
scored like the built-ins. The comparison primitives (tolerance, label normalisation, similarity) are
`inspector.matching`'s, re-exported here.

Per field, `summarise` gives:

- accuracy  = (correct + both_empty) / all results: how often the field was right, including rightly empty;
- precision = correct / (correct + wrong + spurious): of the values the model gave, how many were right;
- recall    = correct / (correct + wrong + missed): of the catalogue's values, how many the model got right;
- f1        = harmonic mean of precision and recall;
- mean_abs_error (price, size_price and number fields) over the results where both sides have a value; prices
  per currency (`mean_abs_error_by_currency`), and no single figure when a field's prices are in several;
- outside_values / catalogue_outside_values: category values, answered / in the catalogue, that are not one of
  the field's declared `values`.

Results whose catalogue cell could not be read (`Outcome.UNREADABLE`) are counted apart (`unreadable`) and left
out of `n` and every rate: a cell nobody can read cannot say whether the model was right.

A ratio with an empty denominator is None (nothing to measure), not 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from inspector.fields import BUILTIN_FIELDS, FieldResult, FieldSet, Outcome, ProductFields
from inspector.kinds import FieldKind, ScoreSettings, kind_of
from inspector.matching import (
    SIZE_FIELD,
    SIZE_FIELD_PREFIX,
    PriceTolerance,
    format_amount,
    normalise_label,
    outside_sides,
    outside_values,
    present,
    size_sort_key,
    title_similarity,
)
from inspector.parsing import normalise_currency

__all__ = [
    "FieldMetrics",
    "answer_currency",
    "PriceTolerance",
    "format_amount",
    "format_errors",
    "normalise_label",
    "score_answer",
    "size_sort_key",
    "summarise",
    "summarise_answers",
    "outside_sides",
    "outside_values",
    "title_similarity",
]

# --------------------------------------------------------------------------------------------------------------
# Scoring one answer
# --------------------------------------------------------------------------------------------------------------


def score_answer(
    predicted: ProductFields,
    truth: ProductFields,
    tolerance: PriceTolerance = PriceTolerance(),
    title_threshold: float = 0.6,
    fieldset: FieldSet = BUILTIN_FIELDS,
    unreadable: Mapping[str, str] | None = None,
) -> list[FieldResult]:
    """One FieldResult per declared field (size tables aside), then one "size_price:<size>" per size that either
    side has, sizes in `size_sort_key` order. `title_threshold` is the threshold of text fields that declare none.

    `unreadable` maps result names ("weight", "size_price:7.5", or the size table's name for a size cell that
    names no size) to the text of the catalogue cell that could not be read (`TruthRecord.unreadable`). Such a
    field is `Outcome.UNREADABLE`, with the cell text as its expected value: not judged, for or against the
    model. A size table cell that names no readable size leaves unjudged every size the catalogue lacks."""
    unreadable = unreadable or {}
    settings = ScoreSettings(tolerance, title_threshold)
    results: list[FieldResult] = []
    for spec in sorted(fieldset, key=lambda spec: kind_of(spec).results_last):
        results += kind_of(spec).score(spec, predicted[spec.name], truth[spec.name], settings, unreadable)
    return results


# --------------------------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------------------------


@dataclass
class FieldMetrics:
    """Outcome counts and rates for one field over many answers (see the module docstring for definitions)."""

    field: str
    n: int = 0
    correct: int = 0
    wrong: int = 0
    missed: int = 0
    spurious: int = 0
    both_empty: int = 0
    #: Results not judged because the catalogue cell could not be read; not part of `n` or of any rate.
    unreadable: int = 0
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    #: Price and number fields only: mean absolute error where both sides have a value. Prices in more than one
    #: currency have none (an average of euros and yen means nothing): see `mean_abs_error_by_currency`.
    mean_abs_error: float | None = None
    #: Price and number fields only: how many results the mean absolute errors are over.
    error_count: int = 0
    #: Price fields only: currency (the catalogue's, else the answer's; "" when neither has one) -> mean absolute
    #: error of the results in that currency.
    mean_abs_error_by_currency: dict[str, float] = field(default_factory=dict)
    #: Category fields with declared `values`: answers, and catalogue values, that are not one of them.
    outside_values: int = 0
    catalogue_outside_values: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _field_group(name: str) -> str:
    return SIZE_FIELD if name.startswith(SIZE_FIELD_PREFIX) else name


def answer_currency(results: Iterable[FieldResult], fieldset: FieldSet = BUILTIN_FIELDS) -> str:
    """The currency an answer's prices are in, for per-currency errors: the catalogue's, else the answer's
    (ISO code), "" when neither says."""
    spec = fieldset.first("currency")
    if spec is None:
        return ""
    for result in results:
        if result.field == spec.name:
            for value in (result.expected, result.predicted):
                code = normalise_currency(value) if present(value) else None
                if code:
                    return code
    return ""


def summarise(results: Iterable[FieldResult], fieldset: FieldSet = BUILTIN_FIELDS) -> dict[str, FieldMetrics]:
    """Metrics per field, in field order; all "size_price:<size>" results are added up as "size_price".

    The results' prices are taken to share one currency: summarise many answers with `summarise_answers`."""
    return summarise_answers([list(results)], fieldset, currencies=[""])


def summarise_answers(
    answers: Iterable[list[FieldResult]],
    fieldset: FieldSet = BUILTIN_FIELDS,
    currencies: Iterable[str] | None = None,
) -> dict[str, FieldMetrics]:
    """`summarise` over the results of many answers (one list per answer), price errors kept apart per currency
    (`answer_currency`, unless `currencies` gives one per answer)."""
    metrics: dict[str, FieldMetrics] = {}
    errors: dict[str, dict[str, list[float]]] = {}
    answers = list(answers)
    currency_list = list(currencies) if currencies is not None else [answer_currency(a, fieldset) for a in answers]
    for results, currency in zip(answers, currency_list, strict=True):
        for result in results:
            _count(metrics, errors, result, currency, fieldset)
    for group, entry in metrics.items():
        entry.accuracy = _ratio(entry.correct + entry.both_empty, entry.n)
        entry.precision = _ratio(entry.correct, entry.correct + entry.wrong + entry.spurious)
        entry.recall = _ratio(entry.correct, entry.correct + entry.wrong + entry.missed)
        if entry.precision is not None and entry.recall is not None:
            total = entry.precision + entry.recall
            entry.f1 = 2 * entry.precision * entry.recall / total if total else 0.0
        by_currency = errors.get(group)
        if by_currency:
            means = {currency: sum(values) / len(values) for currency, values in sorted(by_currency.items())}
            entry.error_count = sum(len(values) for values in by_currency.values())
            if len(means) == 1:
                entry.mean_abs_error = next(iter(means.values()))
            kind = _group_kind(group, fieldset)
            if kind is not None and kind.money:
                entry.mean_abs_error_by_currency = means
    listed = sorted(fieldset, key=lambda spec: kind_of(spec).results_last)
    order = [kind_of(spec).result_group(spec) for spec in listed] + [SIZE_FIELD]
    return dict(
        sorted(metrics.items(), key=lambda item: (order.index(item[0]) if item[0] in order else 99, item[0]))
    )


def format_errors(metrics: dict) -> str:
    """A field's mean absolute error for display (`FieldMetrics.to_dict()`): "5.00", or per currency
    ("12.50 EUR · 300.00 JPY") when its prices are in several; "" when there is none."""
    by_currency = metrics.get("mean_abs_error_by_currency") or {}
    if len(by_currency) > 1:
        return " · ".join(f"{error:,.2f} {currency or '(no currency)'}" for currency, error in by_currency.items())
    error = metrics.get("mean_abs_error")
    if error is None or not math.isfinite(error):
        return ""
    currency = next(iter(by_currency), "")
    return f"{error:,.2f}" + (f" {currency}" if currency else "")


def _group_kind(group: str, fieldset: FieldSet) -> FieldKind | None:
    """The kind of the field whose results are summed up as `group` (a field's name, or "size_price")."""
    spec = fieldset.get(group)
    if spec is not None and kind_of(spec).result_group(spec) == group:
        return kind_of(spec)
    return next((kind_of(spec) for spec in fieldset if kind_of(spec).result_group(spec) == group), None)


def _count(
    metrics: dict[str, FieldMetrics],
    errors: dict[str, dict[str, list[float]]],
    result: FieldResult,
    currency: str,
    fieldset: FieldSet,
) -> None:
    """Adds one result to its field's counts, and its error (prices: under `currency`) to `errors`."""
    group = _field_group(result.field)
    entry = metrics.setdefault(group, FieldMetrics(group))
    if result.outcome not in Outcome.ALL:
        raise ValueError(f"Unknown outcome {result.outcome!r} for field {result.field!r}.")
    setattr(entry, result.outcome, getattr(entry, result.outcome) + 1)
    spec = fieldset.get(group)
    entry.outside_values += outside_values(spec, result.predicted)
    if result.outcome == Outcome.UNREADABLE:
        return
    entry.catalogue_outside_values += outside_values(spec, result.expected)
    entry.n += 1
    kind = _group_kind(group, fieldset)
    if kind is not None and kind.amount and result.outcome in (Outcome.CORRECT, Outcome.WRONG) and result.score is not None:
        key = currency if kind.money else ""
        errors.setdefault(group, {}).setdefault(key, []).append(float(result.score))
