"""How two values are compared, below the field kinds that compare them and `inspector.scoring` that sums up.

Label normalisation, text similarity, price tolerance, display of amounts, and the outcome bucket of one
comparison (`bucket`): the pieces every kind's scorer (`inspector.kinds`) shares. `inspector.scoring`
re-exports the public ones.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

from inspector.errors import InputError
from inspector.fieldspec import FieldResult, FieldSpec, Outcome

#: Prefix of the per-size field names ("size_price:6.5"); `summarise` adds them up as "size_price".
SIZE_FIELD_PREFIX = "size_price:"
SIZE_FIELD = "size_price"



@dataclass(frozen=True)
class PriceTolerance:
    """How far a price may be from the catalogue's and still count as correct: the larger of `absolute` and
    `relative` × catalogue price. The default, half a cent, means "equal to the cent"."""

    absolute: float = 0.005
    relative: float | None = None

    @classmethod
    def parse(cls, text: str) -> PriceTolerance:
        """``--price-tolerance``: an amount ("0.01", "1") or a percentage of the catalogue price ("2%")."""
        raw = str(text).strip() if text is not None else ""
        hint = "write an amount like 0.01 or a percentage like 2%"
        try:
            if raw.endswith("%"):
                percent = float(raw[:-1].strip())
                if not math.isfinite(percent) or percent < 0:
                    raise ValueError
                return cls(relative=percent / 100)
            amount = float(raw)
            if not math.isfinite(amount) or amount < 0:
                raise ValueError
            return cls(absolute=amount)
        except ValueError:
            raise InputError(f"Price tolerance {raw!r} is not valid: {hint}.") from None

    def allows(self, predicted: float, expected: float) -> bool:
        allowed = self.absolute
        if self.relative is not None:
            allowed = max(allowed, self.relative * abs(expected))
        # A hair of slack for binary floating point: 115.10 - 115.00 is 0.0999999...
        return abs(predicted - expected) <= allowed + 1e-9 * max(1.0, abs(expected))

    def __str__(self) -> str:
        if self.relative is not None:
            return f"{self.relative * 100:g}%"
        return f"{self.absolute:g}"



def normalise_label(text: str | None) -> str:
    """A brand or category in a form that ignores case, accents, punctuation, spacing and "&" vs "and".

    "Hermès", "HERMES" and "hermes " are equal; so are "T-Shirts & Tops" and "t shirts and tops".
    Apostrophes join ("Levi's" = "Levis").
    """
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", str(text))
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()
    stripped = stripped.replace("&", " and ").replace("+", " and ")
    stripped = re.sub(r"['’`´]", "", stripped)
    return " ".join(re.sub(r"[\W_]+", " ", stripped).split())


def title_similarity(predicted: str, expected: str) -> float:
    """Token F1 between two titles after `normalise_label` (word order ignored, repeated words counted)."""
    predicted_tokens = normalise_label(predicted).split()
    expected_tokens = normalise_label(expected).split()
    if not predicted_tokens or not expected_tokens:
        return 1.0 if predicted_tokens == expected_tokens and predicted.strip() == expected.strip() else 0.0
    common = sum((Counter(predicted_tokens) & Counter(expected_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted_tokens)
    recall = common / len(expected_tokens)
    return 2 * precision * recall / (precision + recall)


def format_amount(value: float | None) -> str | None:
    """A price for display: two decimals, more only where they matter (115.0 -> "115.00", 115.004 -> "115.004")."""
    if value is None:
        return None
    if not math.isfinite(value):
        return str(value)
    if round(value, 2) == value:
        return f"{value:.2f}"
    return f"{value:.6f}".rstrip("0")


_LETTER_SIZES = ["XXXS", "XXS", "XS", "S", "M", "L", "XL", "XXL", "XXXL", "2XL", "3XL", "4XL"]


def size_sort_key(size: str) -> tuple:
    """Numeric sizes by value, then letter sizes from small to large, then the rest alphabetically."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(.*)", size)
    if match:
        return (0, float(match.group(1)), match.group(2))
    if size in _LETTER_SIZES:
        return (1, float(_LETTER_SIZES.index(size)), "")
    return (2, 0.0, size)



# --------------------------------------------------------------------------------------------------------------
# One comparison
# --------------------------------------------------------------------------------------------------------------


def present(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return bool(str(value).strip())


def bucket(predicted: object, expected: object, equal: bool) -> str:
    has_predicted, has_expected = present(predicted), present(expected)
    if not has_predicted and not has_expected:
        return Outcome.BOTH_EMPTY
    if not has_predicted:
        return Outcome.MISSED
    if not has_expected:
        return Outcome.SPURIOUS
    return Outcome.CORRECT if equal else Outcome.WRONG


def shown(value: object) -> str | None:
    return str(value) if present(value) else None


def score_amount(
    name: str, predicted: float | None, expected: float | None, tolerance: PriceTolerance
) -> FieldResult:
    both = present(predicted) and present(expected)
    error = abs(predicted - expected) if both else None
    outcome = bucket(predicted, expected, both and tolerance.allows(predicted, expected))
    shown_predicted = format_amount(predicted) if present(predicted) else None
    shown_expected = format_amount(expected) if present(expected) else None
    return FieldResult(name, outcome, shown_predicted, shown_expected, error)


def outside_values(spec: FieldSpec | None, value: object) -> bool:
    """Whether `value` (an answer's or a catalogue cell's) is not one of the field's declared `values`: flagged
    and counted (`FieldMetrics.outside_values`), on either side. False for fields that declare none."""
    if spec is None or not spec.values or not present(value):
        return False
    return normalise_label(str(value)) not in {normalise_label(allowed) for allowed in spec.values}


def outside_sides(spec: FieldSpec | None, predicted: object, expected: object) -> str | None:
    """Which side of a result has a value outside the field's declared values: "model", "catalogue", "both", or
    None (for the report's and the export's flag)."""
    model, catalogue = outside_values(spec, predicted), outside_values(spec, expected)
    if model and catalogue:
        return "both"
    return "model" if model else "catalogue" if catalogue else None
