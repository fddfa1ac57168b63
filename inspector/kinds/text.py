"""``text``: free text (a title), scored by token F1 against a threshold."""

from __future__ import annotations

from inspector.fieldspec import FieldResult, FieldSpec
from inspector.kinds.base import AnswerValues, FieldKind, JsonReading, ScoreSettings, register_kind
from inspector.matching import bucket, present, shown, title_similarity


@register_kind
class Text(FieldKind):
    name = "text"
    order = 0
    free_phrases = True

    def read_json(self, spec: FieldSpec, value: object, found: AnswerValues, reading: JsonReading) -> bool:
        if isinstance(value, dict):
            reading.nested.append(value)  # {"product": {"name": ...}}: read as its own answer
            return False
        found.set_text(spec.name, value)
        return True

    def compare(self, spec: FieldSpec, predicted: object, expected: object, settings: ScoreSettings) -> FieldResult:
        threshold = spec.threshold if spec.threshold is not None else settings.title_threshold
        both = present(predicted) and present(expected)
        similarity = title_similarity(str(predicted), str(expected)) if both else None
        outcome = bucket(predicted, expected, both and similarity >= threshold)
        return FieldResult(spec.name, outcome, shown(predicted), shown(expected), similarity)
