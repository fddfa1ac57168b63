"""Read a model's answer into ProductFields, and read prices, currencies and sizes the same way everywhere.

`parse_answer` tries, in order, and lets earlier readers win field by field:

1. a JSON object (bare, inside ``` fences, or cut off mid-generation: only the complete keys are kept);
2. "Key: value" text: one pair a line, markdown (bold keys, bullets, tables) or the original fine-tune format
   "Product: X, Category: Y, Full Price: 123.0" (pairs separated by commas on one line);
3. free sentences: "The price for size 6.5 is $115.00", "The good is Nike Dunk Low ...", "It costs €95".

The catalogue loader (`inspector.truth`) uses `clean_text`, `read_price`, `normalise_currency`,
`normalise_size` and `parse_size_prices` too, so that answers and catalogue cells are read alike: one set of
price rules (the table in `read_price`), and an ambiguous or negative price is left empty, never guessed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation
from functools import lru_cache

from inspector.fields import BUILTIN_FIELDS, SENTENCE_END, FieldSet, FieldSpec, ProductFields, normalise_key
from inspector.numbers import AMBIGUOUS, NUMBER_RE, UNREADABLE, finite_float, read_number
from inspector.units import decimal_text, parse_quantity

__all__ = [
    "AMBIGUOUS",
    "ISO_CURRENCIES",
    "NEGATIVE",
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
]

# --------------------------------------------------------------------------------------------------------------
# Text values
# --------------------------------------------------------------------------------------------------------------

#: Values that mean "no value" in answers and catalogue cells (compared case-insensitively, trailing "." ignored).
_NULL_WORDS_TEXT = (
    "|none|null|nil|nan|n/a|na|n.a|#n/a|<na>|undefined|unknown|not visible|not shown|not available|not specified"
    "|not provided|not applicable|not found|not given|not stated|-|--|---|—|–|?|...|…"
)
NULL_WORDS: frozenset[str] = frozenset(_NULL_WORDS_TEXT.split("|"))


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _valid_unicode(text: str) -> str:
    """`text` with escaped surrogate pairs joined ("\\ud83d\\ude00" read one half at a time) and lone halves
    replaced, so that it always encodes to UTF-8 (SQLite and HTML need that)."""
    if not _SURROGATE_RE.search(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean_text(value: object) -> str | None:
    """A text value with whitespace collapsed, or None for missing / null-like values ("N/A", "unknown", NaN)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (dict, list, tuple, set)):
        return None
    text = " ".join(_valid_unicode(str(value)).split())
    if text.casefold().rstrip(".") in NULL_WORDS or text.casefold() in NULL_WORDS:
        return None
    return text


# --------------------------------------------------------------------------------------------------------------
# Currencies
# --------------------------------------------------------------------------------------------------------------

_ISO_CODES_TEXT = """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF
    CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL
    HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL
    MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON
    RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS
    UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL"""
#: Active ISO 4217 codes.
ISO_CURRENCIES: frozenset[str] = frozenset(_ISO_CODES_TEXT.split())

#: Codes also recognised in lower case next to an amount ("120 usd"). Other codes must be upper case, because
#: many are English words ("all", "top", "try", "mad") that would turn "all 3 sizes" into a price.
_LOWERCASE_CODES_TEXT = (
    "usd eur gbp jpy cny cad aud chf inr krw hkd sgd sek nok dkk pln brl mxn rub nzd zar try"
)
_LOWERCASE_CODES = frozenset(_LOWERCASE_CODES_TEXT.split())

#: Currency symbols, longest first so that "US$" wins over "$".
_SYMBOLS: dict[str, str] = {
    "US$": "USD",
    "USD$": "USD",
    "CA$": "CAD",
    "CAD$": "CAD",
    "AU$": "AUD",
    "AUD$": "AUD",
    "HK$": "HKD",
    "NZ$": "NZD",
    "NT$": "TWD",
    "MX$": "MXN",
    "SG$": "SGD",
    "C$": "CAD",
    "A$": "AUD",
    "S$": "SGD",
    "R$": "BRL",
    "$": "USD",
    "£": "GBP",
    "€": "EUR",
    "¥": "JPY",
    "￥": "JPY",
    "円": "JPY",
    "元": "CNY",
    "₹": "INR",
    "₩": "KRW",
    "₽": "RUB",
    "₺": "TRY",
    "₪": "ILS",
    "₫": "VND",
    "₱": "PHP",
    "฿": "THB",
    "₴": "UAH",
    "zł": "PLN",
}

#: Currency words (singular and plural), longest first where one contains another.
_WORDS: dict[str, str] = {
    "us dollars": "USD",
    "us dollar": "USD",
    "u.s. dollars": "USD",
    "american dollars": "USD",
    "canadian dollars": "CAD",
    "canadian dollar": "CAD",
    "australian dollars": "AUD",
    "australian dollar": "AUD",
    "hong kong dollars": "HKD",
    "british pounds": "GBP",
    "british pound": "GBP",
    "pounds sterling": "GBP",
    "pound sterling": "GBP",
    "swiss francs": "CHF",
    "swiss franc": "CHF",
    "japanese yen": "JPY",
    "chinese yuan": "CNY",
    "indian rupees": "INR",
    "dollars": "USD",
    "dollar": "USD",
    "euros": "EUR",
    "euro": "EUR",
    "pounds": "GBP",
    "pound": "GBP",
    "sterling": "GBP",
    "quid": "GBP",
    "yen": "JPY",
    "yuan": "CNY",
    "renminbi": "CNY",
    "rmb": "CNY",
    "rupees": "INR",
    "rupee": "INR",
    "francs": "CHF",
    "franc": "CHF",
    # "kr" is also NOK, DKK and ISK: a currency column or "currency" key naming one of those wins.
    "kronor": "SEK",
    "kr": "SEK",
    "kč": "CZK",
}


_SYMBOLS_FOLDED = {symbol.casefold(): code for symbol, code in _SYMBOLS.items()}


def _alternation(options: Iterable[str]) -> str:
    return "|".join(re.escape(option) for option in sorted(options, key=len, reverse=True))


_SYMBOL_RE = _alternation(_SYMBOLS)
_WORD_RE = r"\b(?:" + _alternation(_WORDS) + r")\b"
_CODE_RE = r"\b[A-Za-z]{3}\b"
#: Any currency marker: a symbol, a currency word or a 3-letter code (codes are checked in `_marker_currency`).
_MARKER_RE = rf"(?:{_SYMBOL_RE}|{_WORD_RE}|{_CODE_RE})"


def _marker_currency(marker: str | None) -> str | None:
    """The ISO code a marker found next to an amount stands for, or None if it is not a currency."""
    if not marker:
        return None
    if marker in _SYMBOLS:
        return _SYMBOLS[marker]
    lowered = " ".join(marker.lower().split())
    if lowered in _WORDS:
        return _WORDS[lowered]
    if len(marker) == 3 and marker.isalpha():
        if marker.isupper() and marker in ISO_CURRENCIES:
            return marker
        if marker.lower() == marker and marker in _LOWERCASE_CODES:
            return marker.upper()
        if marker.upper() in _LOWERCASE_CODES and marker[0].isupper():  # "Usd", "Eur"
            return marker.upper()
    return None


def normalise_currency(text: str | None) -> str | None:
    """ISO 4217 code for a currency value ("usd", "US$", "€", "Euros", "US Dollar"), or None if not a currency."""
    value = clean_text(text)
    if value is None:
        return None
    value = value.strip(" .,:;()[]\"'")
    if not value:
        return None
    symbol = _SYMBOLS_FOLDED.get(value.casefold())
    if symbol:
        return symbol
    upper = value.upper()
    if upper in ISO_CURRENCIES:
        return upper
    lowered = value.lower()
    if lowered in _WORDS:
        return _WORDS[lowered]
    if lowered.endswith("s") and lowered[:-1] in _WORDS:
        return _WORDS[lowered[:-1]]
    # "USD ($)", "$ (USD)", "EUR - Euro": take the first part that is a currency.
    for part in re.split(r"[\s()\[\]/,;-]+", value):
        if part and part != value:
            code = normalise_currency(part)
            if code:
                return code
    return None


# --------------------------------------------------------------------------------------------------------------
# Amounts
# --------------------------------------------------------------------------------------------------------------

#: Minus signs, as a regex character class body: hyphen-minus, the minus sign and the en dash that word
#: processors put in its place (the hyphen escaped, so that the class never reads as a range).
_MINUS = r"\-−–"
#: ",-" or ".–" after an amount: no minor units ("1.299,- €" is 1299 euros).
_NO_CENTS_RE = r"[.,][-–—]{1,2}"
_MONEY_RE = re.compile(
    rf"(?P<sign>(?<![\w.,{_MINUS}])[{_MINUS}](?=\S))?"
    rf"(?:(?P<pre>{_MARKER_RE})[ \u00a0\u202f]*(?P<inner_sign>[{_MINUS}](?=\d))?)?"
    rf"(?P<num>(?<![\d.,]){NUMBER_RE}(?![\d]))(?P<no_cents>{_NO_CENTS_RE}(?![\d]))?(?!\s*%)"
    rf"(?:[ \u00a0\u202f]*(?P<post>{_MARKER_RE}))?",
    re.IGNORECASE,
)

#: ISO 4217 currencies with three decimals; all others have two or none. The currency settles what a single
#: separator before three digits means: "¥1.200" and "EUR 1.299" are grouped thousands (1200, 1299), because
#: neither currency writes three decimals; "KWD 1.250" is not settled.
_THREE_DECIMAL_CURRENCIES = frozenset(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"])

#: Why a text holding a number gives no price (besides `AMBIGUOUS`, from `inspector.numbers`).
NEGATIVE = "negative"
#: A number beyond a float's range (a JSON integer of 309+ digits, 1e400): it cannot be represented.
TOO_LARGE = "too large"


def _read_number(token: str, currency: str | None, no_cents: bool = False) -> tuple[float | None, str | None]:
    """The value of a numeric token in a price, or None and why (`UNREADABLE`, `AMBIGUOUS`): the rules of
    `inspector.numbers.read_number`, where a currency with 0 or 2 decimals settles "1,290" as thousands."""
    settled = currency is not None and currency not in _THREE_DECIMAL_CURRENCIES
    return read_number(token, thousands_settled=settled, whole=no_cents)


def _number_readings(token: str) -> set[float]:
    """Every value a numeric token may stand for (grouped thousands or decimals), for finding a value in text."""
    readings = {_read_number(token, "USD")[0], _read_number(token, "KWD")[0]}
    single = re.fullmatch(r"(\d{1,3})[.,](\d{3})", token)
    if single:
        readings.add(float(f"{single.group(1)}.{single.group(2)}"))
    return {reading for reading in readings if reading is not None}


@dataclass
class _Money:
    #: None when the number is not a price (`problem` says why).
    amount: float | None
    currency: str | None
    start: int
    end: int
    #: True when a currency marker stood next to the amount.
    marked: bool
    problem: str | None = None


def _find_amounts(text: str, marked_only: bool = False, currency: str | None = None) -> list[_Money]:
    """Every amount in `text`, with the currency written next to it (if any). `currency` is the currency known
    for amounts written without one (it only settles separators, see `read_price`). Numbers that are negative
    or ambiguous are listed with their problem, so that a caller never takes the next number in their place."""
    found: list[_Money] = []
    for match in _MONEY_RE.finditer(text):
        pre_currency = _marker_currency(match.group("pre"))
        post_currency = _marker_currency(match.group("post"))
        written = pre_currency or post_currency
        if marked_only and not written:
            continue
        amount, problem = _read_number(match.group("num"), written or currency, bool(match.group("no_cents")))
        if amount is not None and not math.isfinite(amount):
            amount, problem = None, UNREADABLE
        if problem == UNREADABLE and not re.search(r"\d[eE]", match.group("num")):
            # Not a number ("1,2,3"); but "1,290e3" is a number that cannot be read, never skipped for the next.
            continue
        if amount is not None and (match.group("sign") or (pre_currency and match.group("inner_sign"))):
            amount, problem = None, NEGATIVE
        start = (
            match.start("sign")
            if match.group("sign")
            else match.start("pre")
            if pre_currency
            else match.start("num")
        )
        end = match.end("post") if post_currency else match.end("num")
        found.append(_Money(amount, written, start, end, bool(written), problem))
    return found


def _any_currency(text: str) -> str | None:
    """The first currency symbol, word or common code ("USD", "eur") anywhere in `text`.

    Rare codes only count next to an amount: standing alone, "ALL" or "TOP" is more likely a word.
    """
    for match in re.finditer(_MARKER_RE, text, re.IGNORECASE):
        marker = match.group(0)
        if len(marker) == 3 and marker.isalpha() and marker.lower() not in _LOWERCASE_CODES:
            continue
        code = _marker_currency(marker)
        if code:
            return code
    return None


#: A value that is one amount grouped with plain spaces ("1 299,00 kr", "€ 12 500"): only when the whole value
#: is that amount with at most a currency and a sign may a space join digits (in "size 8 115.00" it separates).
_SPACE_GROUPED_RE = re.compile(
    rf"\s*(?:{_MARKER_RE}\s*)?[{_MINUS}]?(?:{_MARKER_RE}\s*)?\d{{1,3}}(?: \d{{3}})+(?:[.,]\d+|{_NO_CENTS_RE})?"
    rf"(?:\s*{_MARKER_RE})?\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PriceReading:
    """What `read_price` made of a text: the amount and currency, or why there is no amount."""

    amount: float | None
    currency: str | None
    #: None when the amount was read or the text holds no number; else `NEGATIVE`, `AMBIGUOUS` or `UNREADABLE`
    #: (a number in exponent notation that cannot be read: "1,290e3", "1e400").
    problem: str | None = None


def read_price(text: object, currency: str | None = None) -> PriceReading:
    """The price in `text`, by one set of rules for model answers and catalogue cells alike.

    `currency` is the currency known from elsewhere (the catalogue's currency column, the answer's "currency"
    key); a currency written in `text` wins over it. The first amount written with a currency wins, else the
    first amount. How an amount is read:

    ============================  ===========  ==================================================================
    written                       read as      rule
    ============================  ===========  ==================================================================
    ``115`` ``115.5`` ``2,15 €``  115, 115.5,  one separator before 1, 2 or 4+ digits is the decimal mark
                                  2.15
    ``1,290.00`` ``1.290,00 €``   1290         both "," and ".": the last is the decimal mark, the other
                                               groups thousands (groups of three, else not a price)
    ``1,290,000`` ``1.290.000``   1290000      one separator repeated groups thousands
    ``1 299,00 kr`` ``1'290.50``  1299, 1290.5 spaces (when the value is this one amount), apostrophes,
                                               no-break and thin spaces group thousands
    ``1.299,- €`` ``49,-``        1299, 49     ",-" / ".–" means no cents: the separators group thousands
    ``EUR 1.299`` ``1.234 €``     1299, 1234   one separator before three digits groups thousands when the
    ``$1,290`` ``¥1.200``         1290, 1200   currency (written, or `currency`) has 0 or 2 decimals
    ``0.290`` ``1290.500``        0.29, 1290.5 ... but not after "0" or more than three digits: decimals
    ``1,290`` ``1.299``           empty,       one separator before three digits, with no currency or a
    ``KWD 1.250``                 AMBIGUOUS    3-decimal one (KWD, BHD, …): 1290 or 1.29 cannot be told
    ``-5.00`` ``-$5`` ``€-5``     empty,       a minus sign: a price is never negative ("100-120" is a
                                  NEGATIVE     range, not a sign; a JSON -5 is refused the same way)
    ``20%`` ``size M`` ``free``   empty        no amount (percentages are not prices)
    ============================  ===========  ==================================================================

    Currencies: ISO codes (upper case; common ones in any case: "usd"), symbols ("$" is USD, "US$", "C$",
    "€", "£", "¥" JPY, "₹", …), words ("dollars", "euros", "kr" SEK, …); an explicit currency column or key
    wins over them, so "kr" with NOK in the currency column is NOK.
    """
    if isinstance(text, bool) or text is None:
        return PriceReading(None, None)
    if isinstance(text, (int, float)):
        amount = finite_float(text)
        if amount is None:
            return PriceReading(None, None, None if isinstance(text, float) and math.isnan(text) else TOO_LARGE)
        return PriceReading(None, None, NEGATIVE) if amount < 0 else PriceReading(amount, None)
    if not isinstance(text, str):
        return PriceReading(None, None)
    if _SPACE_GROUPED_RE.fullmatch(text):
        text = re.sub(r"(?<=\d) (?=\d{3}(?!\d))", "\u00a0", text)
    context = _any_currency(text) or currency
    amounts = _find_amounts(text, currency=context)
    if not amounts:
        return PriceReading(None, None)
    chosen = next((money for money in amounts if money.marked), amounts[0])
    if chosen.amount is None:
        return PriceReading(None, None, chosen.problem)
    return PriceReading(chosen.amount, chosen.currency or _any_currency(text))


def parse_price(text: object, currency: str | None = None) -> tuple[float | None, str | None]:
    """Amount and ISO 4217 currency of a price (see `read_price` for the rules): "$115.00", "US$ 99",
    "USD 1,290.00", "1.290,00 €", "2,15 €", "£45", "¥1200", "120 dollars", "1 299,00 kr". Plain numbers give
    (amount, None); no price, a negative or an ambiguous one give (None, None). Never raises."""
    reading = read_price(text, currency)
    return reading.amount, reading.currency


# --------------------------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------------------------

_SIZE_WORD_RE = re.compile(r"^(?:size|sz|taglia|talla|taille|größe|grösse)\b[\s:.#-]*", re.IGNORECASE)
_REGION = r"(?:us|uk|eu|eur|fr|it|jp|cn|au|mx|br)"
_REGION_PREFIX_RE = re.compile(rf"^{_REGION}[\s:.-]*(?=\d)", re.IGNORECASE)
_REGION_SUFFIX_RE = re.compile(rf"(?<=\d)\s+{_REGION}\.?$", re.IGNORECASE)
_NUMERIC_SIZE_RE = re.compile(r"(\d+)(?:\s*[.,]\s*(\d+))?\s*([A-Za-z]{0,2})")


def normalise_size(text: object) -> str:
    """A size label in one canonical spelling, so "6.50", "6,5", "6½", "Size 6.5" and "US 6.5" are all "6.5".

    - a leading "Size"/"Sz" word and a region prefix or suffix before/after a number ("US", "EU", "UK") are
      dropped: within one product every size uses the same system, and models often add or omit the region;
    - numeric sizes lose leading and trailing zeros ("08" -> "8", "8.0" -> "8"), a decimal comma becomes a point,
      and "½" / " 1/2" become ".5"; a letter suffix stays, upper-case ("6.5w" -> "6.5W");
    - anything else is upper-cased with whitespace collapsed ("xl" -> "XL", "one size" -> "ONE SIZE").

    Empty or missing sizes give "".
    """
    if text is None or isinstance(text, bool):
        return ""
    if isinstance(text, float):
        if not math.isfinite(text):
            return ""
        text = repr(text)
    value = " ".join(_valid_unicode(str(text)).split()).strip(" .:;,#")
    value = _SIZE_WORD_RE.sub("", value)
    value = _REGION_PREFIX_RE.sub("", value)
    value = _REGION_SUFFIX_RE.sub("", value)
    value = re.sub(r"(?<=\d)\s*(?:½|[ -]1/2)", ".5", value)
    match = _NUMERIC_SIZE_RE.fullmatch(value)
    if match:
        whole, fraction, suffix = match.groups()
        digits = f"{whole}.{fraction}" if fraction else whole
        try:
            number = Decimal(digits)
        except InvalidOperation:  # pragma: no cover - the regex only lets digits through
            return value.upper()
        # As many significant digits as written: the default context's 28 rounded a 30-digit size to another one.
        return format(number.normalize(Context(prec=len(digits))), "f") + suffix.upper()
    return value.upper()


#: Size labels inside answers: "6.5", "US 6.5", "10W", "XL", "xxs", "2XL".
_SIZE_TOKEN = (
    r"(?:(?:us|uk|eu)\s?)?\d{1,2}(?:[.,]\d{1,2})?(?:\s?½)?[a-z]?(?![\d.,]*\d)|\d?x{0,3}[sml]\b|\d?xl\b"
)

_SIZE_ENTRY_RE = re.compile(
    r"^\s*(?:size\s*)?(?P<size>[^:=()]+?)\s*(?:[:=]|\s[-–—]\s|\((?=[^)]*\d)|\s(?=[$£€¥]))\s*(?P<price>.+?)\)?\s*$",
    re.IGNORECASE,
)


def parse_size_prices(text: object, currency: str | None = None) -> tuple[dict[str, float], list[str]]:
    """Per-size prices from one text value, and the entries that could not be read.

    Reads "6.5:115;7.5:120", "6.5=$115 | 7.5=$120", "6.5: $115, 7.5: $120", one entry a line, and JSON
    ('{"6.5": 115}' or '[{"size": "6.5", "price": 115}]'). Sizes go through `normalise_size`; the first price
    of a size wins. Prices follow `read_price`'s rules, `currency` being the currency known for them.
    """
    if isinstance(text, (dict, list)):
        return _sizes_from_json(text, currency)
    if clean_text(text) is None:
        return {}, []
    raw = str(text).strip()
    if raw[:1] in "{[":
        try:
            decoded = json.loads(raw)
        except (ValueError, RecursionError):
            decoded = None
        if isinstance(decoded, (dict, list)):
            return _sizes_from_json(decoded, currency)
    entries = re.split(r"[;|\n]+", raw)
    if len(entries) == 1:
        # "6.5: $115, 7.5: $120": commas separate entries only where another "size:" follows.
        entries = re.split(r",(?=\s*(?:size\s*)?[^,:;=]{1,12}?\s*[:=])", raw, flags=re.IGNORECASE)
    sizes: dict[str, float] = {}
    bad: list[str] = []
    for entry in entries:
        entry = entry.strip(" ,\t")
        if not entry:
            continue
        match = _SIZE_ENTRY_RE.match(entry) if len(entry) <= 200 else None
        amount = parse_price(match.group("price"), currency)[0] if match else None
        size = normalise_size(match.group("size")) if match else ""
        if amount is None or not size:
            bad.append(entry)
            continue
        sizes.setdefault(size, amount)
    return sizes, bad


def _price_value(value: object, currency: str | None = None) -> tuple[float | None, str | None]:
    """Amount and currency of a JSON value: a number, a price string, or {"amount": .., "currency": ..}."""
    if isinstance(value, dict):
        amount_key = _first_key(value, ("amount", "value", "price", "full price", "number"))
        currency_key = _first_key(value, ("currency", "currency code", "unit"))
        given = value[currency_key] if currency_key is not None else None
        given = normalise_currency(given) if isinstance(given, str) else None
        amount, written = (
            _price_value(value[amount_key], given or currency) if amount_key is not None else (None, None)
        )
        return amount, given or written
    if isinstance(value, (str, int, float)):
        return parse_price(value, currency)
    return None, None


def _first_key(mapping: dict, wanted: tuple[str, ...]) -> object | None:
    keys = {normalise_key(key): key for key in mapping}
    for name in wanted:
        if name in keys:
            return keys[name]
    return None


def _sizes_from_json(value: object, currency: str | None = None) -> tuple[dict[str, float], list[str]]:
    sizes: dict[str, float] = {}
    bad: list[str] = []

    def add(size: object, price: object) -> None:
        label = (
            normalise_size(size) if isinstance(size, (str, int, float)) and not isinstance(size, bool) else ""
        )
        amount = _price_value(price, currency)[0]
        if not label or amount is None:
            bad.append(f"{size}: {price}")
        else:
            sizes.setdefault(label, amount)

    if isinstance(value, dict):
        for size, price in value.items():
            add(size, price)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                size_key = _first_key(item, ("size", "size label", "label", "name"))
                price_key = _first_key(item, ("price", "amount", "value", "cost", "full price"))
                if size_key is None or price_key is None:
                    bad.append(str(item))
                else:
                    add(item[size_key], item[price_key])
            elif isinstance(item, str):
                entry_sizes, entry_bad = parse_size_prices(item, currency)
                for size, price in entry_sizes.items():
                    sizes.setdefault(size, price)
                bad.extend(entry_bad)
            elif isinstance(item, list) and len(item) == 2:
                add(item[0], item[1])
            else:
                bad.append(str(item))
    return sizes, bad


# --------------------------------------------------------------------------------------------------------------
# JSON, strict and lenient
# --------------------------------------------------------------------------------------------------------------

_INCOMPLETE = object()
_MAX_DEPTH = 24


class _LenientJson:
    """Reads a JSON-like object that may be cut off, single-quoted, or written with bare words.

    Values cut off by the end of the text are dropped (a number at the very end may be missing digits), but
    containers keep their complete entries, so '{"brand": "Nike", "sizes": {"6.5": 115, "7' gives the brand and
    size 6.5.
    """

    def __init__(self, text: str, start: int):
        self.text = text
        self.pos = start
        self.truncated = False

    def _skip_space(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        self.pos = pos

    def _at_end(self) -> bool:
        return self.pos >= len(self.text)

    def value(self, depth: int = 0) -> object:
        self._skip_space()
        if self._at_end() or depth > _MAX_DEPTH:
            self.truncated = True
            return _INCOMPLETE
        char = self.text[self.pos]
        if char == "{":
            return self._object(depth)
        if char == "[":
            return self._array(depth)
        if char in "\"'":
            return self._string()
        return self._bare()

    def _object(self, depth: int) -> object:
        result: dict = {}
        self.pos += 1
        while True:
            self._skip_space()
            while not self._at_end() and self.text[self.pos] == ",":
                self.pos += 1
                self._skip_space()
            if self._at_end():
                self.truncated = True
                return result
            if self.text[self.pos] == "}":
                self.pos += 1
                return result
            if self.text[self.pos] in "\"'":
                key = self._string()
            else:
                match = self._BARE_KEY_RE.match(self.text, self.pos)
                if not match:
                    return result  # junk: stop here and keep what we have
                key = match.group(0).strip()
                self.pos = match.end()
            if key is _INCOMPLETE:
                return result
            self._skip_space()
            if self._at_end():
                self.truncated = True
                return result
            if self.text[self.pos] not in ":=":
                return result
            self.pos += 1
            item = self.value(depth + 1)
            if item is _INCOMPLETE:
                return result
            result.setdefault(str(key), item)
            if self.truncated:
                return result
            self._skip_space()
            if not self._at_end() and self.text[self.pos] == "}":
                self.pos += 1
                return result
            if not self._at_end() and self.text[self.pos] not in ",\"'":
                return result

    def _array(self, depth: int) -> object:
        result: list = []
        self.pos += 1
        while True:
            self._skip_space()
            while not self._at_end() and self.text[self.pos] == ",":
                self.pos += 1
                self._skip_space()
            if self._at_end():
                self.truncated = True
                return result
            if self.text[self.pos] == "]":
                self.pos += 1
                return result
            item = self.value(depth + 1)
            if item is _INCOMPLETE:
                return result
            result.append(item)
            if self.truncated:
                return result
            self._skip_space()
            if not self._at_end() and self.text[self.pos] == "]":
                self.pos += 1
                return result
            if not self._at_end() and self.text[self.pos] != ",":
                return result

    _ESCAPES = {
        "n": "\n",
        "t": "\t",
        "r": "\r",
        "b": "\b",
        "f": "\f",
        "/": "/",
        "\\": "\\",
        '"': '"',
        "'": "'",
    }

    def _string(self) -> object:
        quote = self.text[self.pos]
        text = self.text
        pos = self.pos + 1
        parts: list[str] = []
        while pos < len(text):
            char = text[pos]
            if char == quote:
                self.pos = pos + 1
                return "".join(parts)
            if char == "\\":
                if pos + 1 >= len(text):
                    break
                code = text[pos + 1]
                if code == "u":
                    digits = text[pos + 2 : pos + 6]
                    if len(digits) < 4:
                        break
                    try:
                        parts.append(chr(int(digits, 16)))
                    except ValueError:
                        parts.append(digits)
                    pos += 6
                    continue
                parts.append(self._ESCAPES.get(code, code))
                pos += 2
                continue
            parts.append(char)
            pos += 1
        self.pos = len(text)
        self.truncated = True
        return _INCOMPLETE

    _BARE_RE = re.compile(r"[^,}\]\n]*")
    _BARE_KEY_RE = re.compile(r"[^:,{}\[\]\"'\n]+")
    _JSON_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")

    def _bare(self) -> object:
        match = self._BARE_RE.match(self.text, self.pos)
        token = match.group(0) if match else ""
        self.pos += len(token)
        if self._at_end():
            # The token may have been cut off ("11" of "115", "nu" of "null"): drop it.
            self.truncated = True
            return _INCOMPLETE
        word = token.strip()
        lowered = word.lower()
        if lowered in ("null", "none", "nil"):
            return None
        if lowered == "true":
            return True
        if lowered == "false":
            return False
        if self._JSON_NUMBER_RE.fullmatch(word):
            try:
                return float(word) if any(c in word for c in ".eE") else int(word)
            except ValueError:
                return word
        return word


def _find_json(text: str) -> tuple[dict | None, int, int]:
    """The first JSON object in `text` (or first object of a JSON list) and the span it covers."""
    decoder = json.JSONDecoder()
    starts = [match.start() for match in re.finditer(r"[{\[]", text)][:20]
    for start in starts:
        try:
            value, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, list):
            value = next((item for item in value if isinstance(item, dict)), None)
        if isinstance(value, dict) and value:
            return value, start, end
    brace = text.find("{")
    if brace < 0:
        return None, 0, 0
    reader = _LenientJson(text, brace)
    value = reader.value()
    if isinstance(value, dict) and value:
        return value, brace, reader.pos
    return None, 0, 0


# --------------------------------------------------------------------------------------------------------------
# Collected values
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Found:
    """What one reader found, by field name; `merge` lets an earlier reader win field by field."""

    #: text, category and number fields: the cleaned text as written (numbers are converted at the end).
    text: dict[str, str] = field(default_factory=dict)
    #: price fields: amount and the currency written next to it.
    prices: dict[str, tuple[float, str | None]] = field(default_factory=dict)
    currency: str | None = None
    currency_given: bool = False
    sizes: dict[str, float] = field(default_factory=dict)
    #: price fields: a price whose separators only a currency can settle ("1,290"), read again once the
    #: currency is known.
    ambiguous: dict[str, str] = field(default_factory=dict)
    #: Fields given a number that no float holds (`numbers.finite_float`): left empty, and counted.
    unrepresentable: set[str] = field(default_factory=set)

    def has(self, spec: FieldSpec) -> bool:
        if spec.kind == "price":
            return spec.name in self.prices
        if spec.kind == "currency":
            return self.currency_given
        if spec.kind == "size_prices":
            return bool(self.sizes)
        return spec.name in self.text

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

    def merge(self, later: _Found) -> None:
        for name, value in later.text.items():
            self.text.setdefault(name, value)
        for name, value in later.prices.items():
            self.prices.setdefault(name, value)
        for name, value in later.ambiguous.items():
            self.ambiguous.setdefault(name, value)
        if not self.currency_given:
            self.currency, self.currency_given = later.currency, later.currency_given
        for size, amount in later.sizes.items():
            self.sizes.setdefault(size, amount)
        self.unrepresentable |= later.unrepresentable

    def fields(self, fieldset: FieldSet, size_currencies: list[str]) -> ProductFields:
        main_price = fieldset.first("price")
        currency = self.currency if self.currency_given else None
        if currency is None and main_price is not None and main_price.name in self.prices:
            currency = self.prices[main_price.name][1]
        if currency is None and size_currencies and len(set(size_currencies)) == 1:
            currency = size_currencies[0]
        result = ProductFields()
        for spec in fieldset:
            if spec.kind in ("text", "category"):
                result[spec.name] = self.text.get(spec.name)
            elif spec.kind == "number":
                result[spec.name] = parse_quantity(self.text.get(spec.name), spec.unit)
            elif spec.kind == "price":
                if spec.name in self.prices:
                    result[spec.name] = self.prices[spec.name][0]
                elif spec.name in self.ambiguous and currency is not None:
                    # "1,290": only the currency settles what the separator means.
                    result[spec.name] = read_price(self.ambiguous[spec.name], currency).amount
            elif spec.kind == "size_prices":
                result[spec.name] = dict(self.sizes)
            elif spec.kind == "currency":
                result[spec.name] = currency
        return result


def _is_size_key(text: str) -> bool:
    """Whether the end of a key like "price_6_5" or "size_xl" is a size ("price_range" is not)."""
    return bool(re.fullmatch(rf"(?:{_SIZE_TOKEN})", re.sub(r"^(\d+) (\d+)$", r"\1.\2", text), re.IGNORECASE))


def _main_price(fieldset: FieldSet) -> str | None:
    spec = fieldset.first("price")
    return spec.name if spec is not None else None


def _quantity_from_json(value: object) -> object:
    """A number field's JSON value: 500, "500 ml" or {"value": 500, "unit": "ml"} -> text to convert."""
    if isinstance(value, dict):
        amount_key = _first_key(value, ("value", "amount", "number", "quantity"))
        unit_key = _first_key(value, ("unit", "units", "uom"))
        if amount_key is None:
            return None
        unit = value[unit_key] if unit_key is not None and isinstance(value[unit_key], str) else ""
        amount = _quantity_from_json(value[amount_key])
        return None if amount is None else f"{amount} {unit}".strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # Written out, not repr(): 0.00005 and 1e16 would be "5e-05" and "1e+16", which no quantity reader takes.
        number = finite_float(value)
        return None if number is None else decimal_text(number)
    return value


def _holds_unrepresentable(value: object, depth: int = 0) -> bool:
    """Whether a JSON value is, or holds, a number that no float holds (a 309+ digit integer, 1e400)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return finite_float(value) is None and not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, dict) and depth < _MAX_DEPTH:
        return any(_holds_unrepresentable(item, depth + 1) for item in value.values())
    if isinstance(value, list) and depth < _MAX_DEPTH:
        return any(_holds_unrepresentable(item, depth + 1) for item in value)
    return False


#: Field kinds whose values are numbers (a number as text, e.g. a brand, is kept as written).
_NUMERIC_KINDS = ("price", "number", "size_prices")


def _read_json_object(data: dict, found: _Found, fieldset: FieldSet, depth: int = 0) -> None:
    keys = _answer_keys(fieldset)
    main_price = _main_price(fieldset)
    sizes_field = fieldset.first("size_prices")
    by_field: dict[str, list[tuple[int, object]]] = {}
    nested: list[dict] = []
    late_prices: list[tuple[object, str]] = []
    for key, value in data.items():
        normalised = normalise_key(key)
        name = keys.get(normalised)
        if name is None:
            size_match = re.fullmatch(r"(?:price|size)\s+(?:for\s+|in\s+)?(?:size\s+)?(.+)", normalised)
            key_currency = normalise_currency(size_match.group(1)) if size_match else None
            if size_match and key_currency and normalised.startswith("price"):
                late_prices.append((value, key_currency))  # "price_usd": 115, used if there is no "price"
            elif size_match and not isinstance(value, (dict, list)) and _is_size_key(size_match.group(1)):
                found.add_size(re.sub(r"^(\d+) (\d+)$", r"\1.\2", size_match.group(1)), value)
                if sizes_field is not None and _holds_unrepresentable(value):
                    found.unrepresentable.add(sizes_field.name)
            elif isinstance(value, dict):
                nested.append(value)
            continue
        rank = fieldset[name].answer_keys.index(normalised)
        by_field.setdefault(name, []).append((rank, value))
    for name, candidates in by_field.items():
        spec = fieldset[name]
        candidates.sort(key=lambda item: item[0])
        for _, value in candidates:
            if spec.kind in _NUMERIC_KINDS and _holds_unrepresentable(value):
                found.unrepresentable.add(name)
            if spec.kind in ("text", "category"):
                if isinstance(value, dict) and spec.kind == "text":
                    nested.append(value)
                    continue
                found.set_text(name, value)
            elif spec.kind == "number":
                found.set_text(name, _quantity_from_json(value))
            elif spec.kind == "price":
                if isinstance(value, dict) and _first_key(value, ("amount", "value", "price")) is None:
                    found.sizes.update(
                        {k: v for k, v in _sizes_from_json(value)[0].items() if k not in found.sizes}
                    )
                    continue
                found.set_price(name, value)
            elif spec.kind == "currency":
                found.set_currency(value if isinstance(value, str) or value is None else None)
            elif spec.kind == "size_prices":
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    found.set_price(main_price, value)  # "prices": 115 is a price, not a size table
                    continue
                sizes, _ = parse_size_prices(value) if isinstance(value, str) else _sizes_from_json(value)
                for size, amount in sizes.items():
                    found.sizes.setdefault(size, amount)
            if found.has(spec):
                break
    for value, currency in late_prices:
        found.set_price(main_price, value, currency)
        if main_price is not None and _holds_unrepresentable(value):
            found.unrepresentable.add(main_price)
    if depth < 3:
        for value in nested:
            inner = _Found()
            _read_json_object(value, inner, fieldset, depth + 1)
            found.merge(inner)


# --------------------------------------------------------------------------------------------------------------
# What the declared fields look like in answers
# --------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _answer_keys(fieldset: FieldSet) -> dict[str, str]:
    """Normalised answer key -> field name."""
    return {key: spec.name for spec in fieldset for key in spec.answer_keys}


def _key_pattern(key: str) -> str:
    """A regular expression for a normalised key as a label: "full price" matches "Full_Price", "full-price"."""
    return r"[\s_/&-]*".join(re.escape(word) for word in key.split())


_SIZE_LABELS = (
    r"size[\s_]+(?P<size_a>[^:=\n,;|()\"']{1,16}?)(?:[\s_]+price)?"
    rf"|price[\s_]*(?:(?:for|in|of)[\s_]+)?(?:size[\s_]*)(?P<size_b>{_SIZE_TOKEN})"
)


@dataclass(frozen=True)
class _Patterns:
    """The regular expressions that read a field set's "Label: value" lines and free sentences."""

    label: re.Pattern[str]
    #: field name -> phrases that read it from free sentences
    phrases: dict[str, tuple[re.Pattern[str], ...]]


@lru_cache(maxsize=32)
def _patterns(fieldset: FieldSet) -> _Patterns:
    alternatives = []
    for index, spec in enumerate(fieldset):
        keys = sorted(spec.answer_keys, key=len, reverse=True)
        if spec.kind == "size_prices":
            keys = [*keys, "size price", "price for size", "prices for sizes"]
        alternatives.append(f"(?P<f{index}>" + "|".join(_key_pattern(key) for key in keys) + ")")
    label = re.compile(
        r"(?:^|(?<=[,;|]))[ \t]*[\"']?(?:"
        + "|".join(alternatives)
        + "|"
        + _SIZE_LABELS
        + r")[\"']?[ \t]*(?:\((?P<paren>[^()\n]{1,24})\))?[ \t]*(?::|=|[ \t][-–—](?=[ \t]))",
        re.IGNORECASE | re.MULTILINE,
    )
    phrases: dict[str, tuple[re.Pattern[str], ...]] = {}
    for spec in fieldset.of_kind("text", "category", "number"):
        sources = spec.phrases or (
            r"\b(?:"
            + "|".join(_key_pattern(key) for key in sorted(spec.answer_keys, key=len, reverse=True))
            + rf")\s+(?:is|:)\s+(?:the\s+)?(?P<value>[^,;\n]+?){SENTENCE_END}",
        )
        phrases[spec.name] = tuple(re.compile(source, re.IGNORECASE) for source in sources)
    return _Patterns(label, phrases)


# --------------------------------------------------------------------------------------------------------------
# "Key: value" text
# --------------------------------------------------------------------------------------------------------------

_BULLET_RE = re.compile(r"^[ \t]*(?:(?:[-*+•>]|#{1,6}|\d{1,2}[.)])[ \t]+)+", re.MULTILINE)
_MARKUP_RE = re.compile(r"\*\*|__|`")
_SIZE_LINE_RE = re.compile(
    rf"^[ \t]*(?:size[ \t]*)?(?P<size>{_SIZE_TOKEN})[ \t]*(?:[:=]|[-–—]|\()?[ \t]*(?P<price>.*?\d.*?)\)?[ \t]*$",
    re.IGNORECASE,
)


def _strip_value(value: str) -> str:
    value = value.strip().rstrip(",;|").strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1].strip()
    return value


def _tables_to_lines(text: str) -> str:
    """Markdown table rows become "key: value" lines ("| Brand | Nike |") or size lines under a size/price header."""
    lines = text.split("\n")
    size_column = price_column = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.startswith("|"):
            size_column = price_column = None
            continue
        cells = [cell.strip() for cell in stripped.strip("|").split("|")]
        if all(re.fullmatch(r":?-{2,}:?", cell) or not cell for cell in cells):
            lines[index] = ""
            continue
        lowered = [normalise_key(_MARKUP_RE.sub("", cell)) for cell in cells]
        if "size" in lowered and any(cell.startswith("price") for cell in lowered):
            size_column = lowered.index("size")
            price_column = next(i for i, cell in enumerate(lowered) if cell.startswith("price"))
            lines[index] = ""
            continue
        if (
            size_column is not None
            and price_column is not None
            and max(size_column, price_column) < len(cells)
        ):
            lines[index] = f"Size {cells[size_column]}: {cells[price_column]}"
        elif len(cells) >= 2:
            lines[index] = f"{cells[0]}: {' '.join(cells[1:])}"
    return "\n".join(lines)


def _label_rank(spec: FieldSpec, label: str) -> int:
    """Where a label stands among its field's synonyms (unknown spellings after all known ones)."""
    key = normalise_key(label)
    synonyms = spec.answer_keys
    return synonyms.index(key) if key in synonyms else len(synonyms)


def _read_size_lines(
    text: str, position: int, found: _Found, size_currencies: list[str], label_re: re.Pattern[str]
) -> list[tuple[int, int]]:
    """Sizes listed one a line after a "Sizes:" line ("- 6.5: $115"), up to the first line that is not one."""
    used: list[tuple[int, int]] = []
    while position < len(text):
        end = text.find("\n", position)
        end = len(text) if end < 0 else end
        line = text[position:end]
        if line.strip():
            match = None if label_re.match(line) else _SIZE_LINE_RE.match(line)
            amount, currency = parse_price(match.group("price")) if match else (None, None)
            if match is None or amount is None:
                break
            found.add_size(match.group("size"), amount)
            if currency:
                size_currencies.append(currency)
            used.append((position, end))
        position = end + 1
    return used


def _read_labelled_text(
    text: str, found: _Found, size_currencies: list[str], fieldset: FieldSet
) -> list[tuple[int, int]]:
    """Reads "Key: value" pairs; returns the spans it used so the free-sentence reader skips them.

    Where a field has several labels, the best-ranked synonym wins wherever it stands ("Title:" beats
    "Description:", "Price:" beats "Full Price:"), as for JSON keys.
    """
    label_re = _patterns(fieldset).label
    specs = fieldset.specs
    used: list[tuple[int, int]] = []
    texts: dict[str, tuple[int, str]] = {}
    prices: dict[str, tuple[int, float, str | None]] = {}
    matches = list(label_re.finditer(text))
    for index, match in enumerate(matches):
        line_end = text.find("\n", match.end())
        line_end = len(text) if line_end < 0 else line_end
        following = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        end = min(line_end, following)
        value = _strip_value(text[match.end() : end])
        used.append((match.start(), end))
        paren = match.group("paren")
        paren_currency = normalise_currency(paren) if paren else None
        spec = next((spec for i, spec in enumerate(specs) if match.group(f"f{i}")), None)
        size = match.group("size_a") or match.group("size_b")
        if size is None and paren and spec is not None and spec.kind == "price" and not paren_currency:
            paren_size = re.fullmatch(rf"(?:size\s*)?({_SIZE_TOKEN})", paren.strip(), re.IGNORECASE)
            size = paren_size.group(1) if paren_size else None
        if size is not None or spec is None:
            amount, currency = parse_price(value)
            if amount is not None and size is not None:
                found.add_size(size, amount)
                if currency:
                    size_currencies.append(currency)
            continue
        label = match.group(f"f{specs.index(spec)}")
        rank = _label_rank(spec, label)
        if spec.kind in ("text", "category", "number"):
            if clean_text(value) is not None and (spec.name not in texts or rank < texts[spec.name][0]):
                if spec.kind == "number" and paren and not re.search(r"[A-Za-z]", value):
                    value = f"{value} {paren}"  # "Volume (ml): 500"
                texts[spec.name] = (rank, value)
        elif spec.kind == "price":
            reading = read_price(value, paren_currency) if value else PriceReading(None, None)
            best = prices.get(spec.name)
            if reading.amount is not None and (best is None or rank < best[0]):
                prices[spec.name] = (rank, reading.amount, reading.currency or paren_currency)
            elif reading.problem == AMBIGUOUS and spec.name not in found.ambiguous:
                found.ambiguous[spec.name] = value
        elif spec.kind == "currency":
            found.set_currency(value)
        elif spec.kind == "size_prices":
            sizes, _ = parse_size_prices(value)
            for entry_size, amount in sizes.items():
                found.sizes.setdefault(entry_size, amount)
            currency = _any_currency(value)
            if currency:
                size_currencies.append(currency)
            if not value:
                used += _read_size_lines(text, line_end + 1, found, size_currencies, label_re)
    for name, (_, value) in texts.items():
        found.set_text(name, value)
    for name, (_, amount, currency) in prices.items():
        found.prices.setdefault(name, (amount, currency))
    return used


# --------------------------------------------------------------------------------------------------------------
# Free sentences
# --------------------------------------------------------------------------------------------------------------

_FREE_SIZE_RE = re.compile(
    rf"\bsize[ \t]+(?P<size>{_SIZE_TOKEN})(?P<rest>(?:(?!\bsizes?\b)[^.;\n]|\.\d)*)",
    re.IGNORECASE,
)
_FREE_PRICE_BEFORE_SIZE_RE = re.compile(
    rf"(?P<price>(?:(?:{_MARKER_RE})[ \u00a0]*)?(?<![\d.,]){NUMBER_RE}(?:[ \u00a0]*{_MARKER_RE})?)[ \t]+(?:for|in)[ \t]+"
    rf"(?:a[ \t]+|the[ \t]+)?size[ \t]+(?P<size>{_SIZE_TOKEN})",
    re.IGNORECASE,
)
_FREE_PRICE_RE = re.compile(
    r"\b(?:(?:full|regular|retail|list|original)\s+)?price(?:\s+tag)?\s*(?:is|was|of|:|=|at)?\s*"
    r"(?:about|around|approximately|roughly)?\s*(?P<value>[^\s].{0,40})"
    r"|\b(?:priced\s+at|costs?|sells\s+for|retails\s+(?:for|at))\s+(?P<verb>.{1,40})",
    re.IGNORECASE,
)
_FREE_CURRENCY_RE = re.compile(
    r"\bcurrency\s+(?:is|:)\s+(?P<value>[\w$£€¥ .]{1,20}?)(?=\.(?:\s|$)|[;\n]|$|\s\d{1,2}\.\s)", re.IGNORECASE
)


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with the given spans replaced by spaces (offsets stay valid)."""
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _read_free_text(text: str, found: _Found, size_currencies: list[str], fieldset: FieldSet) -> None:
    size_spans: list[tuple[int, int]] = []
    for match in _FREE_PRICE_BEFORE_SIZE_RE.finditer(text):
        amount, currency = parse_price(match.group("price"))
        if amount is not None:
            found.add_size(match.group("size"), amount)
            size_spans.append(match.span())
            if currency:
                size_currencies.append(currency)
    blanked = _blank(text, size_spans)
    for match in _FREE_SIZE_RE.finditer(blanked):
        rest = match.group("rest")
        amounts = _find_amounts(rest)
        chosen = next((money for money in amounts if money.marked), amounts[0] if amounts else None)
        if chosen is None:
            continue
        found.add_size(match.group("size"), chosen.amount)
        if chosen.currency:
            size_currencies.append(chosen.currency)
        # Blank the whole "price for size X is $Y" sentence so the overall price reader ignores it.
        sentence_start = max(blanked.rfind(".", 0, match.start()), blanked.rfind("\n", 0, match.start())) + 1
        size_spans.append((sentence_start, match.start() + len(match.group(0)) - len(rest) + chosen.end))
    remaining = _blank(text, size_spans)

    for name, phrases in _patterns(fieldset).phrases.items():
        if name in found.text:
            continue
        for pattern in phrases:
            match = pattern.search(remaining)
            if match and match.group("value"):
                found.set_text(name, _strip_value(match.group("value")))
                break
    if not found.currency_given and fieldset.first("currency") is not None:
        match = _FREE_CURRENCY_RE.search(remaining)
        if match and normalise_currency(match.group("value")):
            found.set_currency(match.group("value"))
    main_price = _main_price(fieldset)
    if main_price is not None and main_price not in found.prices:
        for match in _FREE_PRICE_RE.finditer(remaining):
            value = match.group("value") or match.group("verb") or ""
            amounts = _find_amounts(value)
            if amounts and amounts[0].start < 12:
                if amounts[0].amount is not None:
                    found.prices[main_price] = (amounts[0].amount, amounts[0].currency)
                if amounts[0].problem == AMBIGUOUS:
                    found.ambiguous[main_price] = value[amounts[0].start : amounts[0].end]
                break
    if main_price is not None and main_price not in found.prices:
        # A single amount written with its currency ("Burberry scarf - £450") is the price.
        amounts = _find_amounts(remaining, marked_only=True)
        if len({(money.amount, money.currency) for money in amounts}) == 1 and amounts[0].amount is not None:
            found.prices[main_price] = (amounts[0].amount, amounts[0].currency)


# --------------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadAnswer:
    """What `read_answer` made of an answer."""

    fields: ProductFields
    #: Fields the answer gave a number that cannot be represented (a JSON integer of 309+ digits, 1e400): left
    #: empty; a scan counts them (`ScanSummary.unrepresentable_values`).
    unrepresentable: tuple[str, ...] = ()


def parse_answer(text: str, fieldset: FieldSet = BUILTIN_FIELDS) -> ProductFields:
    """Every declared field an answer gives. Never raises; unreadable parts are simply left empty."""
    return read_answer(text, fieldset).fields


def read_answer(text: str, fieldset: FieldSet = BUILTIN_FIELDS) -> ReadAnswer:
    """`parse_answer`, and which fields were given a value that cannot be represented."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    size_currencies: list[str] = []

    found = _Found()
    data, start, end = _find_json(text)
    if data is not None:
        _read_json_object(data, found, fieldset)
        text = text[:start] + text[end:]
    text = re.sub(r"```[a-zA-Z]*", "", text)
    if text.strip():
        lines = _BULLET_RE.sub("", _MARKUP_RE.sub("", _tables_to_lines(text)))
        labelled = _Found()
        used = _read_labelled_text(lines, labelled, size_currencies, fieldset)
        found.merge(labelled)

        free = _Found()
        _read_free_text(_blank(lines, used), free, size_currencies, fieldset)
        found.merge(free)
    return ReadAnswer(found.fields(fieldset, size_currencies), tuple(sorted(found.unrepresentable)))


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
        if spec is not None and spec.kind == "currency" and isinstance(value, str):
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
