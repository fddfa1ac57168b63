"""Reading one number as written in a price or a quantity: which separator groups thousands, which is decimal.

One rule set for prices (`inspector.parsing.read_price`, which adds currencies and signs) and quantities
(`inspector.units.parse_quantity`, which adds units), for model answers and catalogue cells alike:

- both "," and ".": the last one is the decimal mark, the other groups thousands ("1,290.50", "1.290,50");
- one separator repeated groups thousands ("1,290,000");
- apostrophes, no-break and thin spaces between groups of three digits group thousands ("1'290.50");
- one separator before 1, 2 or 4+ digits, after "0", or after more than three digits is the decimal mark
  ("2,15", "0.290", "1290.500");
- one separator before exactly three digits ("1,290", "1.500") is a thousands separator or a decimal mark
  before three decimals: `AMBIGUOUS` unless the caller knows which (a currency with 0 or 2 decimals settles it
  for prices; nothing settles it for quantities), and an ambiguous number is left empty, never guessed.
- an exponent ("5e-5", "1.5E+3") is read as written after plain digits; after grouped digits ("1,290e3") or
  beyond a float's range it is `UNREADABLE` (`inspector.units.parse_quantity` leaves every exponent empty).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

__all__ = ["AMBIGUOUS", "GROUP_CHARS", "NUMBER_RE", "UNREADABLE", "finite_float", "read_number"]

#: Characters used between groups of thousands besides "," and "." (apostrophe, no-break and thin spaces).
GROUP_CHARS = "'’\u00a0\u202f\u2009"
#: An exponent after a number ("5e-5", "1.5E+3").
_EXPONENT = r"[eE][+\-]?\d+"
#: A numeric token: digits with separators inside ("1,290.00", "1.290,00", "1'290", "2,15"; not ".5"), with
#: an optional exponent ("5e-5"). The lookarounds keep a regex from taking a part of "5e-5" for the number
#: (the mantissa 5 or the exponent 5), which was read as 5.0 silently.
NUMBER_RE = (
    rf"(?<!\d[eE])(?<!\d[eE][+\-])\d(?:[\d,.{GROUP_CHARS}]*\d)?(?:{_EXPONENT}(?!\d))?(?![eE][+\-]?\d)"
)

#: Why a token gives no number.
UNREADABLE = "unreadable"
AMBIGUOUS = "ambiguous"


def finite_float(value: int | float) -> float | None:
    """A JSON number as a float, or None where no float holds it: an integer of 309+ digits (float() raises
    OverflowError), 1e400 (read as infinity), NaN. Such a value is left empty by every reader, never rounded to
    infinity and never an exception that ends a scan."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _grouped(text: str, mark: str) -> float | None:
    """The value of "1,290,000" (groups of three after the first), or None if the groups are not of three."""
    if re.fullmatch(rf"\d{{1,3}}(?:{re.escape(mark)}\d{{3}})+", text):
        return float(text.replace(mark, ""))
    return None


def _read_exponent(token: str, mantissa: str) -> tuple[float | None, str | None]:
    """The value of "5e-5" or "1.5E+3" as written; `UNREADABLE` where the mantissa has thousands separators or
    a decimal comma ("1,290e3": no rule says which), or no float holds the value (1e400, 1e-400)."""
    if not re.fullmatch(r"\d+(?:\.\d+)?", mantissa):
        return None, UNREADABLE
    number = float(token)
    if not math.isfinite(number) or (number == 0 and Decimal(token) != 0):
        return None, UNREADABLE
    return number, None


def read_number(
    token: str, thousands_settled: bool = False, whole: bool = False
) -> tuple[float | None, str | None]:
    """The value of a numeric token (`NUMBER_RE`), or None and why (`UNREADABLE`, `AMBIGUOUS`). An exponent
    ("5e-5") is read exactly when the number before it is plain digits with at most a decimal point.

    `thousands_settled`: the caller knows that a single separator before three digits groups thousands (a
    price in a currency with 0 or 2 decimals). `whole`: the number has no decimals ("1.299,-"), so every
    separator groups thousands.
    """
    exponent = re.search(_EXPONENT + "$", token)
    if exponent:
        return _read_exponent(token, token[: exponent.start()])
    text = re.sub(rf"(?<=\d)[{GROUP_CHARS}](?=\d{{3}}(?!\d))", "", token)
    if any(char in text for char in GROUP_CHARS) or not re.fullmatch(r"[\d,.]+", text):
        return None, UNREADABLE
    commas, dots = text.count(","), text.count(".")
    if not commas and not dots:
        return float(text), None
    if commas and dots:
        last = max(text.rfind(","), text.rfind("."))
        decimal_mark = text[last]
        integer, fraction = text[:last], text[last + 1 :]
        thousands = "." if decimal_mark == "," else ","
        value = None if whole else _grouped(integer, thousands) if thousands in integer else None
        return (
            (None, UNREADABLE) if value is None or not fraction else (float(f"{int(value)}.{fraction}"), None)
        )
    mark = "," if commas else "."
    if text.count(mark) > 1 or whole:
        value = _grouped(text, mark)
        return (None, UNREADABLE) if value is None else (value, None)
    integer, fraction = text.split(mark)
    if not integer or not fraction:
        return None, UNREADABLE
    if len(fraction) != 3 or len(integer) > 3 or integer == "0":
        return float(f"{integer}.{fraction}"), None
    # "1,290" / "1.299": thousands, or a decimal mark before three decimals? Only the caller can know.
    if not thousands_settled:
        return None, AMBIGUOUS
    return float(integer + fraction), None
