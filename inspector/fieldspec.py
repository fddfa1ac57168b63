"""What a field is, below everything that reads or scores one: `FieldSpec`, a value, a result, an outcome.

Kept apart from `inspector.fields` (the field set, the built-ins and the fields file, which ask the field kinds
in `inspector.kinds`) so that the kinds can use these without an import cycle; `inspector.fields` re-exports all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, Union

__all__ = ["FieldResult", "FieldSpec", "FieldValue", "Outcome", "normalise_key"]

#: One field's value: text (text, category, currency), a float (price, number in its unit) or size -> price.
FieldValue = Union[str, float, dict[str, float], None]  # noqa: UP007 - a runtime alias on Python 3.10


def normalise_key(key: object) -> str:
    """A key, label or column name compared loosely: lower case, words separated by single spaces."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", str(key).casefold()).split())


@dataclass(frozen=True)
class FieldSpec:
    """One field: how the model is asked for it, how answers and catalogue cells are read, how it is scored."""

    name: str
    kind: str
    #: Other names for the field in answers (JSON keys, "Label:" lines) and, unless `columns` is given, in the
    #: catalogue's header; earlier ones win where several are present.
    synonyms: tuple[str, ...] = ()
    #: How the prompt describes the value ("the main colour of the product"); shown in brackets after the key.
    description: str = ""
    #: The JSON key the prompt asks for and training answers use (default: the name).
    key: str = ""
    #: "Label" of the field in "Label: value" answers and in the report (default: the name, capitalised).
    label: str = ""
    #: Catalogue column names, best first (default: the name, the key and the synonyms).
    columns: tuple[str, ...] = ()
    #: category: the allowed values (normalised before comparing); empty means any value.
    values: tuple[str, ...] = ()
    #: number: the unit values are compared and stored in ("ml", "g", "cm"); empty means a plain number.
    unit: str = ""
    #: number and price: largest absolute difference still counted as correct (price: the scan's default).
    tolerance: float | None = None
    #: text: smallest token F1 counted as correct (default: the scan's --title-threshold, 0.6).
    threshold: float | None = None
    #: Regular expressions with a ``value`` group that read the field from free sentences ("made by X").
    phrases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.key or self.name)
        object.__setattr__(self, "label", self.label or self.name.replace("_", " ").capitalize())

    @property
    def answer_keys(self) -> tuple[str, ...]:
        """Normalised answer keys, best first."""
        return tuple(dict.fromkeys(normalise_key(k) for k in (self.key, self.name, *self.synonyms)))

    @property
    def column_names(self) -> tuple[str, ...]:
        """Normalised catalogue column names, best first."""
        names = self.columns or (self.name, self.key, *self.synonyms)
        return tuple(dict.fromkeys(normalise_key(name) for name in names))

    def to_json(self) -> dict[str, Any]:
        """The declaration as plain JSON (stored with each run, so an old run's report knows its fields)."""
        data = {f.name: getattr(self, f.name) for f in dataclass_fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FieldSpec:
        known = {f.name for f in dataclass_fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values)


class Outcome:
    """Per-field outcome buckets, as attribute-value-extraction benchmarks count them."""

    CORRECT = "correct"
    WRONG = "wrong"
    #: The catalogue has a value, the model gave none.
    MISSED = "missed"
    #: The model gave a value, the catalogue has none.
    SPURIOUS = "spurious"
    BOTH_EMPTY = "both_empty"
    #: The catalogue cell could not be read (a weight "heavy", an ambiguous price "1,290"): the field is not
    #: judged, for or against the model, and is left out of every metric.
    UNREADABLE = "unreadable"

    #: The outcomes that judge the model; metrics are computed over these.
    SCORED: tuple[str, ...] = (CORRECT, WRONG, MISSED, SPURIOUS, BOTH_EMPTY)
    ALL: tuple[str, ...] = (*SCORED, UNREADABLE)


@dataclass
class FieldResult:
    """How one field of one answer compares with the catalogue."""

    #: A declared field name, or "size_price:<size>" for one size's price.
    field: str
    outcome: str
    predicted: str | None
    expected: str | None
    #: Text similarity (0..1) or absolute price/number error; None where it means nothing (categories: equal or
    #: not is the outcome).
    score: float | None = None
    #: How sure the model was of its value (0..1, see `inspector.confidence`); None without a value or token
    #: log-probabilities.
    confidence: float | None = None
