"""Compare an answer with the catalogue, field by field, and sum the outcomes up per field.

Outcomes follow attribute-value-extraction benchmarks: correct, wrong, missed (the catalogue has a value, the
model gave none), spurious (the model gave a value, the catalogue has none), both_empty.

- categories (brand, category): equal after `normalise_label` (case, accents, punctuation, whitespace, "&" = "and");
- text (title): token F1 of the normalised words (as SQuAD scores answers) at least `title_threshold`; score = F1;
- price and each size's price: absolute difference within a `PriceTolerance`; score = absolute error;
- currency: the same ISO 4217 code;
- number fields: equal within the field's tolerance after unit conversion; score = absolute error.

Each field is scored by its kind (`SCORERS`), so user-declared fields are scored like the built-ins.

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
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from inspector.errors import InputError
from inspector.fields import BUILTIN_FIELDS, FieldResult, FieldSet, FieldSpec, Outcome, ProductFields
from inspector.parsing import normalise_currency, normalise_size
from inspector.units import format_quantity

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

#: Prefix of the per-size field names ("size_price:6.5"); `summarise` adds them up as "size_price".
SIZE_FIELD_PREFIX = "size_price:"
SIZE_FIELD = "size_price"


@dataclass(frozen=True)
class PriceTolerance:
    """How far a price may be from the catalogue's and still count as correct: the larger of `absolute` and
    `relative` × catalogue price. The default, half a cent, means "equal to the cent"."""

    absolute: float = 0.005
    relative: float | None = None

    @classmethod
    def parse(cls, text: str) -> PriceTolerance:
        """``--price-tolerance``: an amount ("0.01", "1") or a percentage of the catalogue price ("2%")."""
        raw = str(text).strip() if text is not None else ""
        hint = "write an amount like 0.01 or a percentage like 2%"
        try:
            if raw.endswith("%"):
                percent = float(raw[:-1].strip())
                if not math.isfinite(percent) or percent < 0:
                    raise ValueError
                return cls(relative=percent / 100)
            amount = float(raw)
            if not math.isfinite(amount) or amount < 0:
                raise ValueError
            return cls(absolute=amount)
        except ValueError:
            raise InputError(f"Price tolerance {raw!r} is not valid: {hint}.") from None

    def allows(self, predicted: float, expected: float) -> bool:
        allowed = self.absolute
        if self.relative is not None:
            allowed = max(allowed, self.relative * abs(expected))
        # A hair of slack for binary floating point: 115.10 - 115.00 is 0.0999999...
        return abs(predicted - expected) <= allowed + 1e-9 * max(1.0, abs(expected))

    def __str__(self) -> str:
        if self.relative is not None:
            return f"{self.relative * 100:g}%"
        return f"{self.absolute:g}"


# --------------------------------------------------------------------------------------------------------------
# Normalisation and similarity
# --------------------------------------------------------------------------------------------------------------


def normalise_label(text: str | None) -> str:
    """A brand or category in a form that ignores case, accents, punctuation, spacing and "&" vs "and".

    "Hermès", "HERMES" and "hermes " are equal; so are "T-Shirts & Tops" and "t shirts and tops".
    Apostrophes join ("Levi's" = "Levis").
    """
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", str(text))
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()
    stripped = stripped.replace("&", " and ").replace("+", " and ")
    stripped = re.sub(r"['’`´]", "", stripped)
    return " ".join(re.sub(r"[\W_]+", " ", stripped).split())


def title_similarity(predicted: str, expected: str) -> float:
    """Token F1 between two titles after `normalise_label` (word order ignored, repeated words counted)."""
    predicted_tokens = normalise_label(predicted).split()
    expected_tokens = normalise_label(expected).split()
    if not predicted_tokens or not expected_tokens:
        return 1.0 if predicted_tokens == expected_tokens and predicted.strip() == expected.strip() else 0.0
    common = sum((Counter(predicted_tokens) & Counter(expected_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted_tokens)
    recall = common / len(expected_tokens)
    return 2 * precision * recall / (precision + recall)


def format_amount(value: float | None) -> str | None:
    """A price for display: two decimals, more only where they matter (115.0 -> "115.00", 115.004 -> "115.004")."""
    if value is None:
        return None
    if not math.isfinite(value):
        return str(value)
    if round(value, 2) == value:
        return f"{value:.2f}"
    return f"{value:.6f}".rstrip("0")


_LETTER_SIZES = ["XXXS", "XXS", "XS", "S", "M", "L", "XL", "XXL", "XXXL", "2XL", "3XL", "4XL"]


def size_sort_key(size: str) -> tuple:
    """Numeric sizes by value, then letter sizes from small to large, then the rest alphabetically."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(.*)", size)
    if match:
        return (0, float(match.group(1)), match.group(2))
    if size in _LETTER_SIZES:
        return (1, float(_LETTER_SIZES.index(size)), "")
    return (2, 0.0, size)


# --------------------------------------------------------------------------------------------------------------
# Scoring one answer
# --------------------------------------------------------------------------------------------------------------


def _present(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return bool(str(value).strip())


def _bucket(predicted: object, expected: object, equal: bool) -> str:
    has_predicted, has_expected = _present(predicted), _present(expected)
    if not has_predicted and not has_expected:
        return Outcome.BOTH_EMPTY
    if not has_predicted:
        return Outcome.MISSED
    if not has_expected:
        return Outcome.SPURIOUS
    return Outcome.CORRECT if equal else Outcome.WRONG


def _text(value: object) -> str | None:
    return str(value) if _present(value) else None


def _score_amount(
    name: str, predicted: float | None, expected: float | None, tolerance: PriceTolerance
) -> FieldResult:
    both = _present(predicted) and _present(expected)
    error = abs(predicted - expected) if both else None
    outcome = _bucket(predicted, expected, both and tolerance.allows(predicted, expected))
    shown_predicted = format_amount(predicted) if _present(predicted) else None
    shown_expected = format_amount(expected) if _present(expected) else None
    return FieldResult(name, outcome, shown_predicted, shown_expected, error)


def _sizes(prices: dict | None) -> dict[str, float]:
    result: dict[str, float] = {}
    for size, amount in (prices or {}).items():
        label = normalise_size(size)
        if label and isinstance(amount, (int, float)) and not isinstance(amount, bool):
            result.setdefault(label, float(amount))
    return result


def _score_text(spec: FieldSpec, ours: object, theirs: object, tolerance: PriceTolerance) -> FieldResult:
    both = _present(ours) and _present(theirs)
    similarity = title_similarity(str(ours), str(theirs)) if both else None
    outcome = _bucket(
        ours, theirs, both and similarity >= (spec.threshold if spec.threshold is not None else 0.6)
    )
    return FieldResult(spec.name, outcome, _text(ours), _text(theirs), similarity)


def outside_values(spec: FieldSpec | None, value: object) -> bool:
    """Whether `value` (an answer's or a catalogue cell's) is not one of the field's declared `values`: flagged
    and counted (`FieldMetrics.outside_values`), on either side. False for fields that declare none."""
    if spec is None or not spec.values or not _present(value):
        return False
    return normalise_label(str(value)) not in {normalise_label(allowed) for allowed in spec.values}


def outside_sides(spec: FieldSpec | None, predicted: object, expected: object) -> str | None:
    """Which side of a result has a value outside the field's declared values: "model", "catalogue", "both", or
    None (for the report's and the export's flag)."""
    model, catalogue = outside_values(spec, predicted), outside_values(spec, expected)
    if model and catalogue:
        return "both"
    return "model" if model else "catalogue" if catalogue else None


def _score_category(spec: FieldSpec, ours: object, theirs: object, tolerance: PriceTolerance) -> FieldResult:
    # No score: equal or not is all there is (a 1.0 for "one of the declared values" beside "wrong" read as a
    # contradiction); `outside_values` flags values outside the declared ones.
    equal = _present(ours) and _present(theirs) and normalise_label(ours) == normalise_label(theirs)
    return FieldResult(spec.name, _bucket(ours, theirs, equal), _text(ours), _text(theirs))


def _score_currency(spec: FieldSpec, ours: object, theirs: object, tolerance: PriceTolerance) -> FieldResult:
    ours_code = normalise_currency(ours) if _present(ours) else None
    theirs_code = normalise_currency(theirs) if _present(theirs) else None
    # An unrecognised code still counts as a value given (it is wrong), not as no value.
    equal = ours_code is not None and ours_code == theirs_code
    if _present(ours) and _present(theirs) and ours_code is None and theirs_code is None:
        equal = str(ours).strip().upper() == str(theirs).strip().upper()
    return FieldResult(spec.name, _bucket(ours, theirs, equal), _text(ours), _text(theirs))


def _score_price(spec: FieldSpec, ours: object, theirs: object, tolerance: PriceTolerance) -> FieldResult:
    if spec.tolerance is not None:
        tolerance = PriceTolerance(absolute=spec.tolerance)
    return _score_amount(spec.name, ours, theirs, tolerance)


def _score_number(spec: FieldSpec, ours: object, theirs: object, tolerance: PriceTolerance) -> FieldResult:
    both = _present(ours) and _present(theirs)
    error = abs(ours - theirs) if both else None
    allowed = spec.tolerance if spec.tolerance is not None else 0.0
    equal = both and error <= allowed + 1e-9 * max(1.0, abs(theirs))
    return FieldResult(
        spec.name,
        _bucket(ours, theirs, equal),
        format_quantity(ours, spec.unit) if _present(ours) else None,
        format_quantity(theirs, spec.unit) if _present(theirs) else None,
        error,
    )


#: How each kind of field is compared (size_prices is scored size by size in `score_answer`).
SCORERS: dict[str, Callable[[FieldSpec, Any, Any, PriceTolerance], FieldResult]] = {
    "text": _score_text,
    "category": _score_category,
    "currency": _score_currency,
    "price": _score_price,
    "number": _score_number,
}


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

    def judged(result: FieldResult, cell: str | None) -> FieldResult:
        if cell is None:
            return result
        return replace(result, outcome=Outcome.UNREADABLE, expected=cell, score=None)

    results: list[FieldResult] = []
    for spec in fieldset:
        if spec.kind == "size_prices":
            continue
        if spec.kind == "text" and spec.threshold is None:
            spec = replace(spec, threshold=title_threshold)
        result = SCORERS[spec.kind](spec, predicted[spec.name], truth[spec.name], tolerance)
        results.append(judged(result, unreadable.get(spec.name)))
    sizes = fieldset.first("size_prices")
    if sizes is not None:
        our_sizes, their_sizes = _sizes(predicted[sizes.name]), _sizes(truth[sizes.name])
        unread_sizes = {
            name[len(SIZE_FIELD_PREFIX) :] for name in unreadable if name.startswith(SIZE_FIELD_PREFIX)
        }
        for size in sorted(set(our_sizes) | set(their_sizes) | unread_sizes, key=size_sort_key):
            name = SIZE_FIELD_PREFIX + size
            cell = unreadable.get(name)
            if cell is None and size not in their_sizes:
                cell = unreadable.get(sizes.name)
            results.append(judged(_score_amount(name, our_sizes.get(size), their_sizes.get(size), tolerance), cell))
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
                code = normalise_currency(value) if _present(value) else None
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
            if _is_price(group, fieldset):
                entry.mean_abs_error_by_currency = means
    order = [spec.name for spec in fieldset if spec.kind != "size_prices"] + [SIZE_FIELD]
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


def _is_price(group: str, fieldset: FieldSet) -> bool:
    spec = fieldset.get(group)
    return group == SIZE_FIELD or (spec is not None and spec.kind == "price")


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
    is_amount = group == SIZE_FIELD or (spec is not None and spec.kind in ("price", "number"))
    if is_amount and result.outcome in (Outcome.CORRECT, Outcome.WRONG) and result.score is not None:
        key = currency if _is_price(group, fieldset) else ""
        errors.setdefault(group, {}).setdefault(key, []).append(float(result.score))
