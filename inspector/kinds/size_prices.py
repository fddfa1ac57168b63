"""``size_prices``: a size -> price table (at most one such field), scored one size at a time ("size_price:8").

Sizes are collected across the whole answer (`inspector.parsing.answers`: "Size 8: $115" lines, a size/price
markdown table, "the price for size 8 is $115") and across the catalogue row (`inspector.truth`: one column per
size); this kind reads what is given under the table's own keys and labels."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from inspector.fieldspec import FieldResult, FieldSpec, FieldValue
from inspector.kinds.base import (
    AnswerValues,
    CellReading,
    FieldKind,
    JsonReading,
    LabelLine,
    ScoreSettings,
    judged,
    register_kind,
)
from inspector.kinds.price import read_price_cell, written_number
from inspector.matching import SIZE_FIELD, SIZE_FIELD_PREFIX, score_amount, size_sort_key
from inspector.values import (
    _any_currency,
    _sizes_from_json,
    normalise_size,
    parse_size_prices,
    read_price,
)


def size_table(prices: object) -> dict[str, float]:
    """A stored or answered size table with its sizes normalised and non-numbers dropped."""
    result: dict[str, float] = {}
    for size, amount in (prices if isinstance(prices, Mapping) else {}).items():
        label = normalise_size(size)
        if label and isinstance(amount, (int, float)) and not isinstance(amount, bool):
            result.setdefault(label, float(amount))
    return result


@register_kind
class SizePrices(FieldKind):
    name = "size_prices"
    order = 5
    single = True
    numeric = True
    amount = True
    money = True
    empty = {}  # noqa: RUF012 - never mutated: `ProductFields.to_dict` copies nothing into it
    extra_labels = ("size price", "price for size", "prices for sizes")
    entries_below = True
    results_last = True
    display = "sizes"

    def read_json(self, spec: FieldSpec, value: object, found: AnswerValues, reading: JsonReading) -> bool:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found.set_price(reading.main_price, value)  # "prices": 115 is a price, not a size table
            return False
        sizes, _ = parse_size_prices(value) if isinstance(value, str) else _sizes_from_json(value)
        found.add_sizes(sizes)
        return True

    def read_label(self, spec: FieldSpec, line: LabelLine, found: AnswerValues) -> None:
        found.add_sizes(parse_size_prices(line.value)[0])
        currency = _any_currency(line.value)
        if currency:
            found.size_currencies.append(currency)

    def has(self, spec: FieldSpec, found: AnswerValues) -> bool:
        return bool(found.sizes)

    def answer_value(self, spec: FieldSpec, found: AnswerValues, currency: str | None) -> FieldValue:
        return dict(found.sizes)

    def read_cell(self, spec: FieldSpec, raw: str, currency: str | None) -> CellReading:
        sizes, bad = parse_size_prices(raw, currency)
        problems = []
        for entry in bad:
            size = normalise_size(re.split(r"[:=]", entry, maxsplit=1)[0]) if re.search(r"[:=]", entry) else ""
            # An entry whose size cannot be read leaves every size the catalogue lacks unjudged.
            problems.append((entry, "not a size:price pair", SIZE_FIELD_PREFIX + size if size else spec.name))
        return CellReading(dict(sizes), tuple(problems))

    def read_size_cell(self, size: str, raw: str, currency: str | None) -> CellReading:
        """A catalogue column of one size's price ("price_8")."""
        return read_price_cell(raw, currency, SIZE_FIELD_PREFIX + size)

    def read_correction(self, spec: FieldSpec, text: str, currency: str | None) -> FieldValue:
        return read_price(text, currency).amount  # a correction is one size's price

    def json_value(self, spec: FieldSpec, value: FieldValue) -> object:
        table = value if isinstance(value, Mapping) else {}
        return {size: float(amount) for size, amount in table.items() if amount is not None and math.isfinite(amount)}

    def answer_lines(self, spec: FieldSpec, value: FieldValue) -> list[tuple[str, str]]:
        return [(f"Size {size}", written_number(amount)) for size, amount in self.json_value(spec, value).items()]

    def score(
        self,
        spec: FieldSpec,
        predicted: object,
        expected: object,
        settings: ScoreSettings,
        unreadable: Mapping[str, str],
    ) -> list[FieldResult]:
        ours, theirs = size_table(predicted), size_table(expected)
        unread = {name[len(SIZE_FIELD_PREFIX) :] for name in unreadable if name.startswith(SIZE_FIELD_PREFIX)}
        results = []
        for size in sorted(set(ours) | set(theirs) | unread, key=size_sort_key):
            name = SIZE_FIELD_PREFIX + size
            cell = unreadable.get(name)
            if cell is None and size not in theirs:
                cell = unreadable.get(spec.name)
            results.append(judged(score_amount(name, ours.get(size), theirs.get(size), settings.tolerance), cell))
        return results

    def result_group(self, spec: FieldSpec) -> str:
        return SIZE_FIELD
