"""``currency``: an ISO 4217 code (at most one such field). A price's currency symbol feeds it when the answer or
the catalogue row gives none (`inspector.parsing.answers`, `inspector.truth`)."""

from __future__ import annotations

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
from inspector.matching import bucket, present, shown
from inspector.values import clean_text, normalise_currency


@register_kind
class Currency(FieldKind):
    name = "currency"
    order = 3
    single = True
    currency_code = True

    def read_json(self, spec: FieldSpec, value: object, found: AnswerValues, reading: JsonReading) -> bool:
        found.set_currency(value if isinstance(value, str) or value is None else None)
        return True

    def read_label(self, spec: FieldSpec, line: LabelLine, found: AnswerValues) -> None:
        found.set_currency(line.value)

    def has(self, spec: FieldSpec, found: AnswerValues) -> bool:
        return found.currency_given

    def answer_value(self, spec: FieldSpec, found: AnswerValues, currency: str | None) -> FieldValue:
        return currency

    def read_cell(self, spec: FieldSpec, raw: str, currency: str | None) -> CellReading:
        code = normalise_currency(raw)
        if code is None:
            return CellReading(None, ((raw, "not a currency (use an ISO 4217 code such as USD)", spec.name),))
        return CellReading(code)

    def read_correction(self, spec: FieldSpec, text: str, currency: str | None) -> FieldValue:
        return normalise_currency(text) if clean_text(text) else None

    def compare(self, spec: FieldSpec, predicted: object, expected: object, settings: ScoreSettings) -> FieldResult:
        ours = normalise_currency(predicted) if present(predicted) else None
        theirs = normalise_currency(expected) if present(expected) else None
        # An unrecognised code still counts as a value given (it is wrong), not as no value.
        equal = ours is not None and ours == theirs
        if present(predicted) and present(expected) and ours is None and theirs is None:
            equal = str(predicted).strip().upper() == str(expected).strip().upper()
        return FieldResult(spec.name, bucket(predicted, expected, equal), shown(predicted), shown(expected))
