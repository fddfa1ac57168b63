"""Read a model's answer into ProductFields, and read prices, currencies and sizes the same way everywhere.

`parse_answer` tries, in order, and lets earlier readers win field by field:

1. a JSON object (bare, inside ``` fences, or cut off mid-generation: only the complete keys are kept);
2. "Key: value" text: one pair a line, markdown (bold keys, bullets, tables) or the original fine-tune format
   "Product: X, Category: Y, Full Price: 123.0" (pairs separated by commas on one line);
3. free sentences: "The price for size 6.5 is $115.00", "The good is Nike Dunk Low ...", "It costs €95".

The catalogue loader (`inspector.truth`) uses `clean_text`, `read_price`, `normalise_currency`,
`normalise_size` and `parse_size_prices` too, so that answers and catalogue cells are read alike: one set of
price rules (the table in `read_price`), and an ambiguous or negative price is left empty, never guessed.

The package is split by concern: `lenient_json` (finding the JSON object in an answer), `answers` (reading a
whole answer) and `spans` (where each value was written). The value readers (text values, currencies, prices,
sizes) are `inspector.values`, outside the package: the field kinds (`inspector.kinds`) read cells and answer
values with them, and reading a whole answer builds on the kinds, so they sit a floor below this package.
"""

from __future__ import annotations

from inspector.numbers import AMBIGUOUS, UNREADABLE
from inspector.parsing.answers import ReadAnswer, parse_answer, read_answer
from inspector.parsing.spans import value_spans
from inspector.values import (
    ISO_CURRENCIES,
    NEGATIVE,
    NULL_WORDS,
    TOO_LARGE,
    PriceReading,
    clean_text,
    normalise_currency,
    normalise_size,
    parse_price,
    parse_size_prices,
    read_price,
)

__all__ = [
    "AMBIGUOUS",
    "ISO_CURRENCIES",
    "NEGATIVE",
    "NULL_WORDS",
    "TOO_LARGE",
    "UNREADABLE",
    "PriceReading",
    "ReadAnswer",
    "clean_text",
    "normalise_currency",
    "normalise_size",
    "parse_answer",
    "parse_price",
    "parse_size_prices",
    "read_answer",
    "read_price",
    "value_spans",
]
