"""``number``: a quantity, optionally with a ``unit``; "500 ml" and "0.5 l" are compared after conversion."""

from __future__ import annotations

import math
import re

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
from inspector.matching import bucket, present
from inspector.numbers import finite_float
from inspector.units import decimal_text, format_quantity, parse_quantity
from inspector.values import _first_key, clean_text


def quantity_from_json(value: object) -> object:
    """A number field's JSON value: 500, "500 ml" or {"value": 500, "unit": "ml"} -> text to convert."""
    if isinstance(value, dict):
        amount_key = _first_key(value, ("value", "amount", "number", "quantity"))
        unit_key = _first_key(value, ("unit", "units", "uom"))
        if amount_key is None:
            return None
        unit = value[unit_key] if unit_key is not None and isinstance(value[unit_key], str) else ""
        amount = quantity_from_json(value[amount_key])
        return None if amount is None else f"{amount} {unit}".strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # Written out, not repr(): 0.00005 and 1e16 would be "5e-05" and "1e+16", which no quantity reader takes.
        number = finite_float(value)
        return None if number is None else decimal_text(number)
    return value


@register_kind
class Number(FieldKind):
    name = "number"
    order = 4
    numeric = True
    free_phrases = True
    amount = True
    declaration_keys = ("unit",)
    display = "quantity"

    def read_json(self, spec: FieldSpec, value: object, found: AnswerValues, reading: JsonReading) -> bool:
        found.set_text(spec.name, quantity_from_json(value))
        return True

    def read_label(self, spec: FieldSpec, line: LabelLine, found: AnswerValues) -> None:
        value = line.value
        if clean_text(value) is None:
            return
        if line.paren and not re.search(r"[A-Za-z]", value):
            value = f"{value} {line.paren}"  # "Volume (ml): 500"
        found.offer_text(spec.name, line.rank, value)

    def answer_value(self, spec: FieldSpec, found: AnswerValues, currency: str | None) -> FieldValue:
        return parse_quantity(found.text.get(spec.name), spec.unit)

    def read_cell(self, spec: FieldSpec, raw: str, currency: str | None) -> CellReading:
        value = parse_quantity(raw, spec.unit)
        if value is None:
            unit = f" in {spec.unit} (or a unit convertible to it)" if spec.unit else ""
            return CellReading(None, ((raw, f"not a number{unit}", spec.name),))
        return CellReading(value)

    def hint(self, spec: FieldSpec) -> tuple[str, ...]:
        return (f"a number in {spec.unit}" if spec.unit else "a number",)

    def json_value(self, spec: FieldSpec, value: FieldValue) -> object:
        return float(value) if value is not None and math.isfinite(value) else None

    def answer_text(self, spec: FieldSpec, value: FieldValue) -> str | None:
        return None if value is None else format_quantity(value, spec.unit)

    def compare(self, spec: FieldSpec, predicted: object, expected: object, settings: ScoreSettings) -> FieldResult:
        both = present(predicted) and present(expected)
        error = abs(predicted - expected) if both else None
        allowed = spec.tolerance if spec.tolerance is not None else 0.0
        equal = both and error <= allowed + 1e-9 * max(1.0, abs(expected))
        return FieldResult(
            spec.name,
            bucket(predicted, expected, equal),
            format_quantity(predicted, spec.unit) if present(predicted) else None,
            format_quantity(expected, spec.unit) if present(expected) else None,
            error,
        )
