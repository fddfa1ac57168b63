"""The field kind interface (`FieldKind`), its registry (`register_kind`, `kind_of`) and what the readers share.

A kind is one class in one module of this package: how a value of the kind is read from an answer's JSON, from a
"Label: value" line and from a catalogue cell, how the prompt hints it, how a reviewer's correction is read, how
it is scored, and a few declarative traits (class attributes) that the rest of the code asks instead of naming
kinds. `inspector.kinds` imports every module of the package, so dropping a file there is all a new kind needs.

Logic that combines kinds (the currency written next to the main price feeding the currency field, the size
table collected across the whole answer, "1,290" settled by the currency) stays with the readers in
`inspector.parsing.answers` and `inspector.truth`; it goes through these objects' methods and traits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import ClassVar

from inspector.errors import InputError
from inspector.fieldspec import FieldResult, FieldSpec, FieldValue, Outcome
from inspector.matching import PriceTolerance
from inspector.numbers import AMBIGUOUS
from inspector.values import _price_value, clean_text, normalise_currency, normalise_size, read_price

__all__ = [
    "AnswerValues",
    "CellReading",
    "FieldKind",
    "JsonReading",
    "LabelLine",
    "ScoreSettings",
    "kind_of",
    "kind_names",
    "register_kind",
    "registered_kinds",
    "unregister_kind",
]


# --------------------------------------------------------------------------------------------------------------
# What the answer readers collect
# --------------------------------------------------------------------------------------------------------------


@dataclass
class AnswerValues:
    """What one answer reader found, by field name; `merge` lets an earlier reader win field by field.

    The stores are shared by kinds that are read alike: `text` holds text, category and number values as written
    (numbers are converted at the end), `prices` amounts with the currency written next to them."""

    text: dict[str, str] = field(default_factory=dict)
    prices: dict[str, tuple[float, str | None]] = field(default_factory=dict)
    currency: str | None = None
    currency_given: bool = False
    #: The size table, collected across the answer (size lines, "Size 8: $115", free sentences, JSON keys).
    sizes: dict[str, float] = field(default_factory=dict)
    #: Currencies written next to the sizes' prices: they feed the currency field when they agree.
    size_currencies: list[str] = field(default_factory=list)
    #: price fields: a price whose separators only a currency can settle ("1,290"), read again once the
    #: currency is known.
    ambiguous: dict[str, str] = field(default_factory=dict)
    #: Fields given a number that no float holds (`numbers.finite_float`): left empty, and counted.
    unrepresentable: set[str] = field(default_factory=set)
    #: "Label: value" lines: the best-ranked label's value per field so far (rank, value), settled by `settle`.
    ranked_text: dict[str, tuple[int, str]] = field(default_factory=dict)
    ranked_prices: dict[str, tuple[int, float, str | None]] = field(default_factory=dict)

    def set_text(self, name: str, value: object) -> None:
        cleaned = clean_text(value)
        if cleaned is not None and name not in self.text:
            self.text[name] = cleaned

    def set_price(self, name: str | None, value: object, currency: str | None = None) -> None:
        if name is None or name in self.prices:
            return
        amount, found_currency = _price_value(value)
        if amount is not None:
            self.prices[name] = (amount, found_currency or currency)
        elif isinstance(value, str) and name not in self.ambiguous and read_price(value).problem == AMBIGUOUS:
            self.ambiguous[name] = value

    def set_currency(self, value: object) -> None:
        if self.currency_given:
            return
        if value is None or isinstance(value, str):
            self.currency_given = clean_text(value) is not None
            self.currency = normalise_currency(value)

    def add_size(self, size: object, price: object) -> None:
        label = normalise_size(size)
        amount = _price_value(price)[0]
        if label and amount is not None:
            self.sizes.setdefault(label, amount)

    def add_sizes(self, sizes: Mapping[str, float]) -> None:
        for size, amount in sizes.items():
            self.sizes.setdefault(size, amount)

    def offer_text(self, name: str, rank: int, value: str) -> None:
        """A labelled value: kept if its label ranks better than the one kept so far."""
        if clean_text(value) is not None and (name not in self.ranked_text or rank < self.ranked_text[name][0]):
            self.ranked_text[name] = (rank, value)

    def offer_price(self, name: str, rank: int, amount: float, currency: str | None) -> None:
        best = self.ranked_prices.get(name)
        if best is None or rank < best[0]:
            self.ranked_prices[name] = (rank, amount, currency)

    def settle(self) -> None:
        """The best-ranked labelled values become the found ones."""
        for name, (_, value) in self.ranked_text.items():
            self.set_text(name, value)
        for name, (_, amount, currency) in self.ranked_prices.items():
            self.prices.setdefault(name, (amount, currency))

    def merge(self, later: AnswerValues) -> None:
        for name, value in later.text.items():
            self.text.setdefault(name, value)
        for name, value in later.prices.items():
            self.prices.setdefault(name, value)
        for name, value in later.ambiguous.items():
            self.ambiguous.setdefault(name, value)
        if not self.currency_given:
            self.currency, self.currency_given = later.currency, later.currency_given
        self.add_sizes(later.sizes)
        self.size_currencies += later.size_currencies
        self.unrepresentable |= later.unrepresentable


@dataclass
class JsonReading:
    """What a JSON value's reader may need beyond its field: the main price field (a bare number under a size
    table key is the price), and where to put a nested object to read as its own answer."""

    main_price: str | None = None
    nested: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class LabelLine:
    """One "Label: value" line of an answer."""

    value: str
    #: What stood in brackets after the label ("Volume (ml): 500", "Price (EUR): 12"), and as a currency.
    paren: str | None
    paren_currency: str | None
    #: Where the label stands among the field's synonyms (lower is better; unknown spellings last).
    rank: int


@dataclass(frozen=True)
class CellReading:
    """A catalogue cell read as a field: the value, and the problems that kept it (or parts of it) unread.

    Each problem is (the text that could not be read, what is wrong, the result name it leaves unjudged)."""

    value: FieldValue = None
    problems: tuple[tuple[str, str, str | None], ...] = ()
    #: A currency the cell itself wrote ("€12"): a price's feeds the currency field when its column is empty.
    currency: str | None = None


@dataclass(frozen=True)
class ScoreSettings:
    """The scan's scoring settings: the price tolerance, and the threshold of text fields that declare none."""

    tolerance: PriceTolerance = PriceTolerance()
    title_threshold: float = 0.6


# --------------------------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------------------------


class FieldKind:
    """One kind of field. Subclass it in one module of `inspector.kinds`, decorate it with `@register_kind`."""

    #: The name written as ``kind = "..."`` in fields files and stored with each run's fields.
    name: ClassVar[str] = ""
    #: Where the kind stands when kinds are listed (messages, docs); ties by name.
    order: ClassVar[int] = 100
    #: The report draws a confusion table and a value filter for it, and shows no score (equal or not is all).
    categorical: ClassVar[bool] = False
    #: At most one field of the kind: its readers combine values across the answer and the catalogue row.
    single: ClassVar[bool] = False
    #: Its values are numbers: a JSON number that no float holds is counted (`ReadAnswer.unrepresentable`).
    numeric: ClassVar[bool] = False
    #: Free sentences read it, through the field's `phrases` or "<label> is <value>".
    free_phrases: ClassVar[bool] = False
    #: Declaration keys that apply to this kind and no other unless it lists them too (`unit`, `values`).
    declaration_keys: ClassVar[tuple[str, ...]] = ()
    #: More labels that name it in "Label: value" answers, beside its key and synonyms.
    extra_labels: ClassVar[tuple[str, ...]] = ()
    #: A label with an empty value is followed by its entries, one a line ("Sizes:" then "- 8: $115").
    entries_below: ClassVar[bool] = False
    #: A label's bracket may name a size instead of a currency ("Price (size 8): 115").
    size_in_label: ClassVar[bool] = False
    #: What an answer or a row without a value stores (`ProductFields.to_dict`).
    empty: ClassVar[FieldValue] = None
    #: Its values are amounts: a mean absolute error in metrics and training logs.
    amount: ClassVar[bool] = False
    #: Its amounts are money: errors are kept per currency.
    money: ClassVar[bool] = False
    #: Its results and training answer lines are listed after the other fields' (one per size for a size table).
    results_last: ClassVar[bool] = False
    #: How the report shows a value: "text" (as it is), "amount" (a price: two decimals), "quantity" (with the
    #: field's unit) or "sizes" (size: amount pairs).
    display: ClassVar[str] = "text"
    #: Its values are currency codes, written in answers as a code, a word or a symbol (confidence spans).
    currency_code: ClassVar[bool] = False

    # ---------------------------------------------------------------------------------------------- reading

    def read_json(self, spec: FieldSpec, value: object, found: AnswerValues, reading: JsonReading) -> bool:
        """Reads one JSON value given under one of the field's keys into `found`; False when the value was not
        read as this field's (so another of its keys is still tried)."""
        found.set_text(spec.name, value)
        return True

    def read_label(self, spec: FieldSpec, line: LabelLine, found: AnswerValues) -> None:
        """Reads one "Label: value" line of the field into `found`."""
        found.offer_text(spec.name, line.rank, line.value)

    def has(self, spec: FieldSpec, found: AnswerValues) -> bool:
        """Whether `found` holds a value of the field."""
        return spec.name in found.text

    def answer_value(self, spec: FieldSpec, found: AnswerValues, currency: str | None) -> FieldValue:
        """The field's value from what the readers found (`currency`: the answer's, settled across fields)."""
        return found.text.get(spec.name)

    def read_cell(self, spec: FieldSpec, raw: str, currency: str | None) -> CellReading:
        """A non-empty catalogue cell read as the field (`currency`: the row's, which settles separators)."""
        return CellReading(clean_text(raw))

    def read_correction(self, spec: FieldSpec, text: str, currency: str | None) -> FieldValue:
        """A reviewer's corrected value, read as a catalogue cell is; None when it cannot be read."""
        return self.read_cell(spec, text, currency).value

    # ---------------------------------------------------------------------------------------------- writing

    def hint(self, spec: FieldSpec) -> tuple[str, ...]:
        """What the JSON prompt says about the value after the field's description ("a number in ml")."""
        return ()

    def json_value(self, spec: FieldSpec, value: FieldValue) -> object:
        """The value in a training answer's JSON."""
        return value

    def answer_text(self, spec: FieldSpec, value: FieldValue) -> str | None:
        """The value as "Label: value" training answers write it; None for no value."""
        return None if value is None else str(value)

    def answer_lines(self, spec: FieldSpec, value: FieldValue) -> list[tuple[str, str]]:
        """The "Label: value" lines of a training answer for the value (none for no value)."""
        text = self.answer_text(spec, value)
        return [] if text is None else [(spec.label, text)]

    # ---------------------------------------------------------------------------------------------- scoring

    def compare(self, spec: FieldSpec, predicted: object, expected: object, settings: ScoreSettings) -> FieldResult:
        """One answer's value against the catalogue's."""
        raise NotImplementedError(f"kind {self.name!r} compares no single value")

    def score(
        self,
        spec: FieldSpec,
        predicted: object,
        expected: object,
        settings: ScoreSettings,
        unreadable: Mapping[str, str],
    ) -> list[FieldResult]:
        """The field's results; one whose catalogue cell could not be read (`unreadable`: result name -> cell
        text) is `Outcome.UNREADABLE`, with the cell's text as its expected value."""
        return [judged(self.compare(spec, predicted, expected, settings), unreadable.get(spec.name))]

    def result_group(self, spec: FieldSpec) -> str:
        """The name its results are summed up under in metrics (its own name; "size_price" for a size table)."""
        return spec.name


def judged(result: FieldResult, cell: str | None) -> FieldResult:
    """`result`, not judged when its catalogue cell (`cell`, its text) could not be read."""
    if cell is None:
        return result
    return replace(result, outcome=Outcome.UNREADABLE, expected=cell, score=None)


# --------------------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------------------

_KINDS: dict[str, FieldKind] = {}


def register_kind(cls: type[FieldKind]) -> type[FieldKind]:
    """Class decorator: registers one instance of the kind under its `name`."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no kind name")
    if cls.name in _KINDS and type(_KINDS[cls.name]) is not cls:
        raise TypeError(f"kind {cls.name!r} is already registered by {type(_KINDS[cls.name]).__name__}")
    _KINDS[cls.name] = cls()
    return cls


def unregister_kind(name: str) -> None:
    """Removes a kind (tests that register a toy kind)."""
    _KINDS.pop(name, None)


def registered_kinds() -> tuple[FieldKind, ...]:
    """Every registered kind, in listing order."""
    return tuple(sorted(_KINDS.values(), key=lambda kind: (kind.order, kind.name)))


def kind_names() -> tuple[str, ...]:
    """Every kind a field can have, in listing order."""
    return tuple(kind.name for kind in registered_kinds())


def kind_of(spec: FieldSpec | str) -> FieldKind:
    """The kind object of a field (or a kind name); an unknown kind is an `InputError` listing the known ones."""
    name = spec if isinstance(spec, str) else spec.kind
    try:
        return _KINDS[name]
    except KeyError:
        raise InputError(f"kind {name!r} is not one of {', '.join(kind_names())}.") from None
