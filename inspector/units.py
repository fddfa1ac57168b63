"""Units of measure for number fields: "500 ml" equals "0.5 l", "1.5 kg" equals "1500 g".

A quantity is read as a number and an optional unit; with a unit of the same dimension as the field's it is
converted to the field's unit, with none it is taken to be in the field's unit, and with a unit of another
dimension ("500 g" for a volume) it is not read at all: guessing would give a silently wrong answer.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from inspector.numbers import NUMBER_RE, finite_float, read_number

__all__ = ["UNITS", "decimal_text", "format_quantity", "parse_quantity", "unit_dimension"]

#: unit spelling (lower case) -> (dimension, factor to the dimension's base unit).
UNITS: dict[str, tuple[str, float]] = {}


def _add(dimension: str, factor: float, *spellings: str) -> None:
    for spelling in spellings:
        UNITS[spelling] = (dimension, factor)


_add("volume", 1e-3, "ml", "millilitre", "millilitres", "milliliter", "milliliters", "mls")
_add("volume", 1e-2, "cl", "centilitre", "centilitres", "centiliter", "centiliters")
_add("volume", 1e-1, "dl", "decilitre", "decilitres", "deciliter", "deciliters")
_add("volume", 1.0, "l", "litre", "litres", "liter", "liters", "ltr", "lt")
_add("volume", 0.0295735295625, "fl oz", "floz", "fl. oz", "fl.oz", "fluid ounce", "fluid ounces")
_add("volume", 3.785411784, "gal", "gallon", "gallons")
_add("mass", 1e-6, "mg", "milligram", "milligrams")
_add("mass", 1e-3, "g", "gr", "gram", "grams", "gramme", "grammes")
_add("mass", 1.0, "kg", "kgs", "kilo", "kilos", "kilogram", "kilograms")
_add("mass", 0.028349523125, "oz", "ounce", "ounces")
_add("mass", 0.45359237, "lb", "lbs", "pound", "pounds")
_add("length", 1e-3, "mm", "millimetre", "millimetres", "millimeter", "millimeters")
_add("length", 1e-2, "cm", "centimetre", "centimetres", "centimeter", "centimeters")
_add("length", 1.0, "m", "metre", "metres", "meter", "meters")
_add("length", 0.0254, "in", "inch", "inches", '"')
_add("length", 0.3048, "ft", "foot", "feet")
_add("count", 1.0, "pcs", "pc", "pieces", "piece", "pack", "count", "ct", "x")

_QUANTITY_RE = re.compile(
    rf"^\s*(?P<sign>[-+])?(?:(?P<number>{NUMBER_RE})|(?P<fraction>[.,]\d+))\s*"
    r"(?P<unit>[a-zA-Z\"][a-zA-Z. \"]*)?\s*$"
)


def unit_dimension(unit: str) -> str | None:
    """The dimension of a unit ("volume" for "ml"), or None if the unit is unknown."""
    entry = UNITS.get(" ".join(str(unit).casefold().split()))
    return entry[0] if entry else None


def parse_quantity(value: object, unit: str = "") -> float | None:
    """The value of a quantity in `unit`: parse_quantity("0.5 l", "ml") == 500.0. None where it can't be read.

    A bare number is in `unit`; a unit of another dimension, an unknown unit or two numbers give None.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return finite_float(value)
    match = _QUANTITY_RE.match(str(value))
    if not match:
        return None
    if re.search(r"\d[eE]", match.group("number") or ""):
        return None  # exponent notation ("1e308") is not how quantities are written: left empty, never guessed
    if match.group("fraction"):
        number: float | None = float(match.group("fraction").replace(",", "."))
    else:
        # "1,500 ml" is 1500 ml or 1.5 ml: `read_number` leaves it empty rather than guess (inspector.numbers).
        number, _ = read_number(match.group("number"))
    if number is None or not math.isfinite(number):
        return None
    if match.group("sign") == "-":
        number = -number
    written = " ".join((match.group("unit") or "").casefold().split()).rstrip(".")
    if not written:
        return number
    if not unit:
        return None  # a field without a unit can't say what "500 g" is in
    source, target = UNITS.get(written), UNITS.get(" ".join(unit.casefold().split()))
    if source is None or target is None or source[0] != target[0]:
        return None
    # Twelve significant digits: 0.35 l is 350 ml, not 349.99999999999994 (binary floating point). A conversion
    # beyond a float's range (1e308 l in ml) is infinite: left empty.
    converted = float(f"{number * source[1] / target[1]:.12g}")
    return converted if math.isfinite(converted) else None


def decimal_text(number: float) -> str:
    """A finite number written out without an exponent, as parsers of written quantities read it: 5e-05 ->
    "0.00005", 1e+16 -> "10000000000000000", -0.0 -> "0" (the shortest digits that give the same float)."""
    if number == 0:
        return "0"
    return format(Decimal(repr(float(number))), "f").removesuffix(".0")


def format_quantity(value: float | None, unit: str = "") -> str | None:
    """A quantity for display and answers: "500 ml", "1.5 kg" (up to 6 significant digits where that needs no
    exponent; very small and very large values in full, never rounded to "0" nor shown as "-0")."""
    if value is None or not math.isfinite(value):
        return None
    text = f"{value:.6g}"
    if "e" in text or value == 0:
        text = decimal_text(value)
    return f"{text} {unit}".strip()
