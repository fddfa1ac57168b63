"""``price``: an amount compared within a tolerance. The first price field is the main price: the currency written
next to it feeds the currency field, and free sentences ("it costs €95") read it."""

from __future__ import annotations

import math

from inspector.fieldspec import FieldResult, FieldSpec, FieldValue
from inspector.kinds.base import (
    AnswerValues,
    CellReading,
    FieldKind,
    JsonReading,
    LabelLine,
    ScoreSettings,
    register_kind,
)
from inspector.matching import PriceTolerance, score_amount
from inspector.numbers import AMBIGUOUS
from inspector.values import NEGATIVE, PriceReading, _first_key, _sizes_from_json, read_price

#: What is wrong with a catalogue price cell, by `read_price`'s problem.
PRICE_PROBLEMS = {
    NEGATIVE: "negative price (a price is never below zero)",
    AMBIGUOUS: "ambiguous price: one separator before three digits is a thousands separator or decimals; "
    "write 1290.00 or 1.29, or give the currency",
}


def read_price_cell(raw: str, currency: str | None, result_name: str | None) -> CellReading:
    """A catalogue cell read as a price by `read_price`'s rules (`currency` settling separators), or a problem."""
    reading = read_price(raw, currency)
    if reading.amount is None:
        return CellReading(None, ((raw, PRICE_PROBLEMS.get(reading.problem, "not a price"), result_name),))
    return CellReading(reading.amount, currency=reading.currency)


def written_number(value: float) -> str:
    """A price as written in answers: Python's shortest round-tripping form, never in exponent notation."""
    text = repr(float(value))
    if "e" in text or "E" in text:
        text = format(value, ".2f")
    return text


@register_kind
class Price(FieldKind):
    name = "price"
    order = 2
    numeric = True
    amount = True
    money = True
    size_in_label = True
    display = "amount"

    def read_json(self, spec: FieldSpec, value: object, found: AnswerValues, reading: JsonReading) -> bool:
        if isinstance(value, dict) and _first_key(value, ("amount", "value", "price")) is None:
            found.add_sizes(_sizes_from_json(value)[0])  # "price": {"8": 115, "9": 120} is a size table
            return False
        found.set_price(spec.name, value)
        return True

    def read_label(self, spec: FieldSpec, line: LabelLine, found: AnswerValues) -> None:
        reading = read_price(line.value, line.paren_currency) if line.value else PriceReading(None, None)
        if reading.amount is not None:
            found.offer_price(spec.name, line.rank, reading.amount, reading.currency or line.paren_currency)
        elif reading.problem == AMBIGUOUS and spec.name not in found.ambiguous:
            found.ambiguous[spec.name] = line.value

    def has(self, spec: FieldSpec, found: AnswerValues) -> bool:
        return spec.name in found.prices

    def answer_value(self, spec: FieldSpec, found: AnswerValues, currency: str | None) -> FieldValue:
        if spec.name in found.prices:
            return found.prices[spec.name][0]
        if spec.name in found.ambiguous and currency is not None:
            # "1,290": only the currency settles what the separator means.
            return read_price(found.ambiguous[spec.name], currency).amount
        return None

    def read_cell(self, spec: FieldSpec, raw: str, currency: str | None) -> CellReading:
        return read_price_cell(raw, currency, spec.name)

    def read_correction(self, spec: FieldSpec, text: str, currency: str | None) -> FieldValue:
        return read_price(text, currency).amount

    def json_value(self, spec: FieldSpec, value: FieldValue) -> object:
        return float(value) if value is not None and math.isfinite(value) else None

    def answer_text(self, spec: FieldSpec, value: FieldValue) -> str | None:
        if value is None:
            return None
        return written_number(value) if math.isfinite(value) else None

    def compare(self, spec: FieldSpec, predicted: object, expected: object, settings: ScoreSettings) -> FieldResult:
        tolerance = settings.tolerance if spec.tolerance is None else PriceTolerance(absolute=spec.tolerance)
        return score_amount(spec.name, predicted, expected, tolerance)
