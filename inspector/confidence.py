"""How sure the model was of each value it gave: per-field confidence from its tokens' log-probabilities.

The rule: a field's confidence is the probability of its whole value string, the product of the probabilities of
the tokens that wrote it (exp of their summed log-probabilities; a token that also holds a neighbouring quote or
space counts whole). Why the product and not the least sure token: it is a probability in the plain sense (the
chance that the model, asked again under the same prompt, writes exactly this value), every token of a price or a
category is a decision (a "1" that was 60% sure and a "5" that was 60% sure make a 36% sure "15"), and it needs no
arbitrary choice of which token matters. Its cost is that long values (titles) score lower than short ones, so
confidences are compared within a field (the report's accuracy at coverage is per field).

A value the parser found but whose characters cannot be located in the answer, or an answer from a backend that
gives no token log-probabilities, gets no confidence (None, stored as NULL): unknown is never guessed.
"""

from __future__ import annotations

from inspector.backends.base import Generation
from inspector.fields import BUILTIN_FIELDS, FieldResult, FieldSet, ProductFields
from inspector.parsing import value_spans
from inspector.scoring import SIZE_FIELD_PREFIX


def field_values(parsed: ProductFields) -> dict[str, object]:
    """Each parsed value under the name its FieldResult carries (per-size prices as "size_price:<size>")."""
    values: dict[str, object] = {}
    for name, value in parsed.items():
        if isinstance(value, dict):
            values.update({f"{SIZE_FIELD_PREFIX}{size}": amount for size, amount in value.items()})
        else:
            values[name] = value
    return values


def field_confidences(
    answer: Generation, parsed: ProductFields, fieldset: FieldSet = BUILTIN_FIELDS
) -> dict[str, float]:
    """Confidence in [0, 1] of each parsed value that could be located among the answer's tokens."""
    if not answer.has_tokens:
        return {}
    confidences: dict[str, float] = {}
    for name, (start, end) in value_spans(answer.text, field_values(parsed), fieldset).items():
        confidence = answer.span_confidence(start, end)
        if confidence is not None:
            confidences[name] = confidence
    return confidences


def with_confidence(results: list[FieldResult], confidences: dict[str, float]) -> list[FieldResult]:
    """The results with `confidence` set where the model gave a value and its confidence is known."""
    for result in results:
        if result.predicted is not None:
            result.confidence = confidences.get(result.field)
    return results
