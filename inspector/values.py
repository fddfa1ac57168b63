"""Value readers shared by model answers and catalogue cells: text values, currencies, prices and sizes.

Below the field kinds (`inspector.kinds`), which read with them, and below `inspector.parsing`, which re-exports
the public ones."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation

from inspector.fieldspec import normalise_key
from inspector.numbers import NUMBER_RE, UNREADABLE, finite_float, read_number

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
    ``5e-5`` ``1.5E+3``           0.00005,     exponent notation is read as written
                                  1500
    ``1,290e3`` ``1e400``         empty,       an exponent after a grouped number, or beyond a float's range
                                  UNREADABLE
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
