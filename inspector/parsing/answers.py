"""Reading a whole model answer into ProductFields: JSON, then "Key: value" text, then free sentences.

Each field's own values are read by its kind object (`inspector.kinds`: `read_json`, `read_label`,
`answer_value`); what combines fields stays here: the size table collected across the answer, the currency
settled from the currency field, the main price or the sizes, free sentences about the price and currency."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from inspector.fields import BUILTIN_FIELDS, SENTENCE_END, FieldSet, FieldSpec, ProductFields, normalise_key
from inspector.kinds import AnswerValues, JsonReading, LabelLine, kind_of
from inspector.numbers import AMBIGUOUS, NUMBER_RE, finite_float
from inspector.parsing.lenient_json import _MAX_DEPTH, _find_json
from inspector.values import (
    _MARKER_RE,
    _SIZE_TOKEN,
    _find_amounts,
    normalise_currency,
    parse_price,
)

# --------------------------------------------------------------------------------------------------------------
# Collected values
# --------------------------------------------------------------------------------------------------------------


def _settled_currency(found: AnswerValues, fieldset: FieldSet) -> str | None:
    """The answer's currency: the one given for the currency field, else the one written next to the main price,
    else the one all the sizes' prices were written in."""
    main_price = fieldset.first("price")
    currency = found.currency if found.currency_given else None
    if currency is None and main_price is not None and main_price.name in found.prices:
        currency = found.prices[main_price.name][1]
    if currency is None and found.size_currencies and len(set(found.size_currencies)) == 1:
        currency = found.size_currencies[0]
    return currency


def _fields(found: AnswerValues, fieldset: FieldSet) -> ProductFields:
    currency = _settled_currency(found, fieldset)
    return ProductFields({spec.name: kind_of(spec).answer_value(spec, found, currency) for spec in fieldset})


def _is_size_key(text: str) -> bool:
    """Whether the end of a key like "price_6_5" or "size_xl" is a size ("price_range" is not)."""
    return bool(re.fullmatch(rf"(?:{_SIZE_TOKEN})", re.sub(r"^(\d+) (\d+)$", r"\1.\2", text), re.IGNORECASE))


def _main_price(fieldset: FieldSet) -> str | None:
    spec = fieldset.first("price")
    return spec.name if spec is not None else None


def _holds_unrepresentable(value: object, depth: int = 0) -> bool:
    """Whether a JSON value is, or holds, a number that no float holds (a 309+ digit integer, 1e400)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return finite_float(value) is None and not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, dict) and depth < _MAX_DEPTH:
        return any(_holds_unrepresentable(item, depth + 1) for item in value.values())
    if isinstance(value, list) and depth < _MAX_DEPTH:
        return any(_holds_unrepresentable(item, depth + 1) for item in value)
    return False


def _read_json_object(data: dict, found: AnswerValues, fieldset: FieldSet, depth: int = 0) -> None:
    keys = _answer_keys(fieldset)
    reading = JsonReading(main_price=_main_price(fieldset))
    sizes_field = fieldset.first("size_prices")
    by_field: dict[str, list[tuple[int, object]]] = {}
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
                reading.nested.append(value)
            continue
        rank = fieldset[name].answer_keys.index(normalised)
        by_field.setdefault(name, []).append((rank, value))
    for name, candidates in by_field.items():
        spec = fieldset[name]
        kind = kind_of(spec)
        candidates.sort(key=lambda item: item[0])
        for _, value in candidates:
            if kind.numeric and _holds_unrepresentable(value):
                found.unrepresentable.add(name)
            if kind.read_json(spec, value, found, reading) and kind.has(spec, found):
                break
    for value, currency in late_prices:
        found.set_price(reading.main_price, value, currency)
        if reading.main_price is not None and _holds_unrepresentable(value):
            found.unrepresentable.add(reading.main_price)
    if depth < 3:
        for value in reading.nested:
            inner = AnswerValues()
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
        keys = [*sorted(spec.answer_keys, key=len, reverse=True), *kind_of(spec).extra_labels]
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
    for spec in (spec for spec in fieldset if kind_of(spec).free_phrases):
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


def _read_size_lines(text: str, position: int, found: AnswerValues, label_re: re.Pattern[str]) -> list[tuple[int, int]]:
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
                found.size_currencies.append(currency)
            used.append((position, end))
        position = end + 1
    return used


def _read_labelled_text(text: str, found: AnswerValues, fieldset: FieldSet) -> list[tuple[int, int]]:
    """Reads "Key: value" pairs; returns the spans it used so the free-sentence reader skips them.

    Where a field has several labels, the best-ranked synonym wins wherever it stands ("Title:" beats
    "Description:", "Price:" beats "Full Price:"), as for JSON keys.
    """
    label_re = _patterns(fieldset).label
    specs = fieldset.specs
    used: list[tuple[int, int]] = []
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
        kind = kind_of(spec) if spec is not None else None
        size = match.group("size_a") or match.group("size_b")
        if size is None and paren and kind is not None and kind.size_in_label and not paren_currency:
            paren_size = re.fullmatch(rf"(?:size\s*)?({_SIZE_TOKEN})", paren.strip(), re.IGNORECASE)
            size = paren_size.group(1) if paren_size else None
        if size is not None or spec is None or kind is None:
            amount, currency = parse_price(value)
            if amount is not None and size is not None:
                found.add_size(size, amount)
                if currency:
                    found.size_currencies.append(currency)
            continue
        rank = _label_rank(spec, match.group(f"f{specs.index(spec)}"))
        kind.read_label(spec, LabelLine(value, paren, paren_currency, rank), found)
        if kind.entries_below and not value:
            used += _read_size_lines(text, line_end + 1, found, label_re)
    found.settle()
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


def _read_free_text(text: str, found: AnswerValues, fieldset: FieldSet) -> None:
    size_spans: list[tuple[int, int]] = []
    for match in _FREE_PRICE_BEFORE_SIZE_RE.finditer(text):
        amount, currency = parse_price(match.group("price"))
        if amount is not None:
            found.add_size(match.group("size"), amount)
            size_spans.append(match.span())
            if currency:
                found.size_currencies.append(currency)
    blanked = _blank(text, size_spans)
    for match in _FREE_SIZE_RE.finditer(blanked):
        rest = match.group("rest")
        amounts = _find_amounts(rest)
        chosen = next((money for money in amounts if money.marked), amounts[0] if amounts else None)
        if chosen is None:
            continue
        found.add_size(match.group("size"), chosen.amount)
        if chosen.currency:
            found.size_currencies.append(chosen.currency)
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
    found = AnswerValues()
    data, start, end = _find_json(text)
    if data is not None:
        _read_json_object(data, found, fieldset)
        text = text[:start] + text[end:]
    text = re.sub(r"```[a-zA-Z]*", "", text)
    if text.strip():
        lines = _BULLET_RE.sub("", _MARKUP_RE.sub("", _tables_to_lines(text)))
        labelled = AnswerValues()
        used = _read_labelled_text(lines, labelled, fieldset)
        found.merge(labelled)

        free = AnswerValues()
        _read_free_text(_blank(lines, used), free, fieldset)
        found.merge(free)
    return ReadAnswer(_fields(found, fieldset), tuple(sorted(found.unrepresentable)))
