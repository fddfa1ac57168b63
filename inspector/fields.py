"""The product fields that the model is asked for, that the catalogue holds and that scoring compares."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

#: Every field, in the order reports and tables show them.
FIELD_NAMES: tuple[str, ...] = ("brand", "title", "category", "price", "currency", "size_prices")


@dataclass
class ProductFields:
    """What one answer (or one catalogue row) says about a product. Missing values are None / empty."""

    brand: str | None = None
    title: str | None = None
    category: str | None = None
    price: float | None = None
    #: ISO 4217 code, upper-case ("USD").
    currency: str | None = None
    #: size -> price; numeric sizes without trailing zeros ("6.5", "8"), letter sizes upper-case ("XL").
    size_prices: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ProductFields:
        return cls(**{name: data.get(name) for name in FIELD_NAMES if name in data})

    def is_empty(self) -> bool:
        return all(getattr(self, name) in (None, "", {}) for name in FIELD_NAMES)


@dataclass
class TruthRecord:
    """One catalogue row, as read from the ground-truth CSV."""

    #: 1-based data row number in the CSV (header excluded), for messages and the report.
    row_number: int
    #: Value of the key column (e.g. product_code) or the image reference, whichever matched the image.
    key: str | None
    fields: ProductFields
    #: The image path/name the row points at, as written in the CSV, if it has such a column.
    image_ref: str | None = None


class Outcome:
    """Per-field outcome buckets, as attribute-value-extraction benchmarks count them."""

    CORRECT = "correct"
    WRONG = "wrong"
    #: The catalogue has a value, the model gave none.
    MISSED = "missed"
    #: The model gave a value, the catalogue has none.
    SPURIOUS = "spurious"
    BOTH_EMPTY = "both_empty"

    ALL: tuple[str, ...] = (CORRECT, WRONG, MISSED, SPURIOUS, BOTH_EMPTY)


@dataclass
class FieldResult:
    """How one field of one answer compares with the catalogue."""

    #: A name from FIELD_NAMES, or "size_price:<size>" for one size's price.
    field: str
    outcome: str
    predicted: str | None
    expected: str | None
    #: Title similarity (0..1) or absolute price error; None where it means nothing.
    score: float | None = None
    #: How sure the model was of its value (0..1, see `inspector.confidence`); None without a value or token
    #: log-probabilities.
    confidence: float | None = None
