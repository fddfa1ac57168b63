"""Where each parsed value was written in the raw answer (for per-field confidence)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from inspector.fields import BUILTIN_FIELDS, FieldSet
from inspector.kinds import kind_of
from inspector.numbers import NUMBER_RE
from inspector.parsing.answers import _key_pattern
from inspector.values import _MARKER_RE, _marker_currency, _number_readings, normalise_currency

# --------------------------------------------------------------------------------------------------------------
# Where each value was written (for per-field confidence)
# --------------------------------------------------------------------------------------------------------------

#: How far before a value its label may stand ('"category": "' or 'Price: $').
_LABEL_REACH = 48
_SIZE_PRICE_PREFIX = "size_price:"


def value_spans(
    text: str, values: Mapping[str, object], fieldset: FieldSet = BUILTIN_FIELDS
) -> dict[str, tuple[int, int]]:
    """The character span in the raw answer `text` where each parsed value was written, keyed like `values`
    (field names; "size_price:<size>" for one size's price). Text values are found as written (or
    JSON-escaped, or case-folded), numbers as any number token of that value, currencies as their code, word or
    symbol. A value written several times is taken where its own label ("price": ..., Size 6.5: ...) precedes
    it, else where it is first written: with greedy decoding the first writing is where the model chose it and
    later copies only repeat it. A value that cannot be found gets no span (its confidence stays unknown)."""
    spans: dict[str, tuple[int, int]] = {}
    for name, value in values.items():
        if value is None or value == "":
            continue
        spec = fieldset.get(name)
        if spec is not None and kind_of(spec).currency_code and isinstance(value, str):
            candidates = _currency_spans(text, value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            candidates = _number_spans(text, float(value))
        elif isinstance(value, str):
            candidates = _text_spans(text, value)
        else:
            continue
        if not candidates:
            continue
        labelled = [span for span in candidates if _has_label(text, span[0], name, fieldset)]
        spans[name] = (labelled or candidates)[0]
    return spans


def _text_spans(text: str, value: str) -> list[tuple[int, int]]:
    escaped = (json.dumps(value, ensure_ascii=ascii_only)[1:-1] for ascii_only in (False, True))
    for form in dict.fromkeys((value, *escaped)):
        found = [(m.start(), m.end()) for m in re.finditer(re.escape(form), text)]
        if found:
            return found
    return [(m.start(), m.end()) for m in re.finditer(re.escape(value), text, re.IGNORECASE)]


def _number_spans(text: str, value: float) -> list[tuple[int, int]]:
    spans = []
    for match in re.finditer(rf"(?<![\d.,]){NUMBER_RE}(?!\d)", text):
        token = match.group(0)
        readings = _number_readings(token)
        if any(reading is not None and math.isclose(reading, value, rel_tol=1e-9) for reading in readings):
            spans.append(match.span())
    return spans


def _currency_spans(text: str, code: str) -> list[tuple[int, int]]:
    return [
        match.span()
        for match in re.finditer(_MARKER_RE, text, re.IGNORECASE)
        if _marker_currency(match.group(0)) == code or normalise_currency(match.group(0)) == code
    ]


def _has_label(text: str, start: int, name: str, fieldset: FieldSet = BUILTIN_FIELDS) -> bool:
    """Whether the field's own label stands just before `start` on the same line."""
    line_start = text.rfind("\n", 0, start) + 1
    before = text[max(line_start, start - _LABEL_REACH) : start]
    if name.startswith(_SIZE_PRICE_PREFIX):
        size = re.escape(name.removeprefix(_SIZE_PRICE_PREFIX))
        return re.search(rf"(?<![\w.]){size}(?![\w.])", before, re.IGNORECASE) is not None
    spec = fieldset.get(name)
    if spec is None:
        return False
    pattern = "|".join(_key_pattern(key) for key in sorted(spec.answer_keys, key=len, reverse=True))
    label = rf"(?:^|[^\w])(?:{pattern})[\"']?\s*(?:[:=]|\bis\b)[^:=]*$"
    return re.search(label, before, re.IGNORECASE) is not None
