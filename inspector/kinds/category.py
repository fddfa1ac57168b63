"""``category``: a label compared after normalisation (case, accents, punctuation, "&"); optional allowed
``values``: answers and catalogue values outside them are flagged and counted (`matching.outside_values`)."""

from __future__ import annotations

from inspector.fieldspec import FieldResult, FieldSpec
from inspector.kinds.base import FieldKind, ScoreSettings, register_kind
from inspector.matching import bucket, normalise_label, present, shown


@register_kind
class Category(FieldKind):
    name = "category"
    order = 1
    categorical = True
    free_phrases = True
    declaration_keys = ("values",)

    def hint(self, spec: FieldSpec) -> tuple[str, ...]:
        return ("one of: " + ", ".join(spec.values),) if spec.values else ()

    def compare(self, spec: FieldSpec, predicted: object, expected: object, settings: ScoreSettings) -> FieldResult:
        # No score: equal or not is all there is (a 1.0 for "one of the declared values" beside "wrong" read as a
        # contradiction); `outside_values` flags values outside the declared ones.
        equal = present(predicted) and present(expected) and normalise_label(predicted) == normalise_label(expected)
        return FieldResult(spec.name, bucket(predicted, expected, equal), shown(predicted), shown(expected))
