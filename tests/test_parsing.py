"""Reading model answers: JSON (fenced, truncated, lenient), key-value text, the original format, free sentences."""

from __future__ import annotations

import math
import random
import time

import pytest

from inspector.fields import ProductFields
from inspector.parsing import (
    AMBIGUOUS,
    ISO_CURRENCIES,
    NEGATIVE,
    TOO_LARGE,
    UNREADABLE,
    PriceReading,
    clean_text,
    normalise_currency,
    normalise_size,
    parse_answer,
    parse_price,
    parse_size_prices,
    read_answer,
    read_price,
)

# --------------------------------------------------------------------------------------------------------------
# Prices
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "amount", "currency"),
    [
        ("$115.00", 115.0, "USD"),
        ("US$ 99", 99.0, "USD"),
        ("USD 1,290.00", 1290.0, "USD"),
        ("1.290,00 €", 1290.0, "EUR"),
        ("2,15 €", 2.15, "EUR"),
        ("£45", 45.0, "GBP"),
        ("¥1200", 1200.0, "JPY"),
        ("120 dollars", 120.0, "USD"),
        ("EUR 12.50", 12.5, "EUR"),
        ("1,290,000.50", 1290000.5, None),
        ("1.290.000,50 €", 1290000.5, "EUR"),
        ("1.290 €", 1290.0, "EUR"),
        ("$1.290", 1290.0, "USD"),  # was 1.29: a dollar amount has two decimals, so "." groups thousands
        ("0.290", 0.29, None),
        ("1'290.50 CHF", 1290.5, "CHF"),
        ("1 290,00 €", 1290.0, "EUR"),
        ("€ 95", 95.0, "EUR"),
        ("95€", 95.0, "EUR"),
        ("45 GBP", 45.0, "GBP"),
        ("120 usd", 120.0, "USD"),
        ("C$ 40", 40.0, "CAD"),
        ("A$40", 40.0, "AUD"),
        ("HK$ 1,000", 1000.0, "HKD"),
        ("₹ 2,499", 2499.0, "INR"),
        ("115", 115.0, None),
        ("115.5", 115.5, None),
        ("Price: $115.00 (was $150)", 115.0, "USD"),
        ("Sale 20% off: 99 EUR", 99.0, "EUR"),
        ("about 30 euros", 30.0, "EUR"),
        ("450 pounds", 450.0, "GBP"),
        ("1200 yen", 1200.0, "JPY"),
        # issue 8: one rule for separators whichever side the currency stands on
        ("EUR 1.299", 1299.0, "EUR"),
        ("1.234 €", 1234.0, "EUR"),
        ("1 299,00 kr", 1299.0, "SEK"),
        ("1.299,- €", 1299.0, "EUR"),
        ("49,-", 49.0, None),
        ("CHF 1'299.–", 1299.0, "CHF"),
        ("¥1.200", 1200.0, "JPY"),
        ("1 299,00", 1299.0, None),
        ("€ 12 500", 12500.0, "EUR"),
        ("0,290", 0.29, None),
        ("1290.500", 1290.5, None),
        ("1,2345", 1.2345, None),
        ("100-120 EUR", 120.0, "EUR"),
        ("115 (USD)", 115.0, "USD"),
    ],
)
def test_parse_price(text: str, amount: float, currency: str | None) -> None:
    assert parse_price(text) == (pytest.approx(amount), currency)


@pytest.mark.parametrize("text", ["", "   ", "free", "abc", "$", "N/A", "size M", "%", "20%", "1,29.00", "1.2.3"])
def test_parse_price_without_amount(text: str) -> None:
    assert parse_price(text) == (None, None)
    assert read_price(text).problem is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        # issue 8: "-5.00" was read as 5.0 and "-$5.00" as $5: a price is never negative
        ("-5.00", NEGATIVE),
        ("-$5.00", NEGATIVE),
        ("$-5", NEGATIVE),
        ("−12,50 €", NEGATIVE),
        ("Price: -5", NEGATIVE),
        ("Price:-5", NEGATIVE),
        ("Preis: –12,50 €", NEGATIVE),
        (-5, NEGATIVE),
        (-0.5, NEGATIVE),
        # one separator before three digits and no currency that settles it: 1290 or 1.29?
        ("1,290", AMBIGUOUS),
        ("1.299", AMBIGUOUS),
        ("KWD 1.250", AMBIGUOUS),  # three-decimal currency
        ("1,290 (was 1,500)", AMBIGUOUS),  # never the next number instead
    ],
)
def test_negative_and_ambiguous_prices_are_empty_with_the_reason(text: object, problem: str) -> None:
    assert read_price(text) == PriceReading(None, None, problem)
    assert parse_price(text) == (None, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # exponent notation was read as its mantissa (5.0, 1.0) or its exponent (16.0): read as written
        ("5e-5", PriceReading(5e-05, None)),
        ("1e16", PriceReading(1e16, None)),
        ("1.5E+3", PriceReading(1500.0, None)),
        ("$5e-5", PriceReading(5e-05, "USD")),
        ("price 1e16 USD", PriceReading(1e16, "USD")),
        ("2.5e2 €", PriceReading(250.0, "EUR")),
        # an exponent on a grouped number, or beyond a float: unreadable, never the mantissa or the next number
        ("1,290e3", PriceReading(None, None, UNREADABLE)),
        ("1,5e3 (was 20)", PriceReading(None, None, UNREADABLE)),
        ("1e400", PriceReading(None, None, UNREADABLE)),
        ("5e-5%", PriceReading(None, None)),  # a percentage, not a price, and never 5
        (5e-5, PriceReading(5e-05, None)),  # a JSON number literal is a float already
    ],
)
def test_prices_in_exponent_notation_are_read_exactly_or_left_empty(text: object, expected: PriceReading) -> None:
    assert read_price(text) == expected


@pytest.mark.parametrize(
    ("answer", "price"),
    [
        ('{"price": "5e-5"}', 5e-05),
        ('{"price": 5e-5}', 5e-05),
        ("{'price': 1e16, 'brand': 'Nik", 1e16),  # the lenient reader
        ('{"price": "1,290e3"}', None),
        ("Price: 1e16", 1e16),
        ("It costs $5e-5.", 5e-05),
    ],
)
def test_answers_with_exponent_prices_are_read_exactly_or_left_empty(answer: str, price: float | None) -> None:
    assert parse_answer(answer).price == price


@pytest.mark.parametrize(
    ("text", "currency", "amount"),
    [
        ("1.299", "EUR", 1299.0),
        ("1,290", "USD", 1290.0),
        ("1.200", "JPY", 1200.0),
        ("1.250", "KWD", None),
        ("1,290", None, None),
        ("$1.290", "KWD", 1290.0),  # the currency written with the amount wins
        ("1.290 (EUR)", None, 1290.0),  # a currency anywhere in the value settles it too
    ],
)
def test_a_known_currency_settles_the_separator(text: str, currency: str | None, amount: float | None) -> None:
    assert read_price(text, currency).amount == amount


def test_parse_price_numbers_and_junk_types() -> None:
    assert parse_price(115) == (115.0, None)
    assert parse_price(99.5) == (99.5, None)
    assert parse_price(float("nan")) == (None, None)
    assert parse_price(None) == (None, None)  # type: ignore[arg-type]
    assert parse_price(True) == (None, None)  # type: ignore[arg-type]


def test_parse_price_keeps_exact_decimal_value() -> None:
    # Amounts come from the digits, not from arithmetic on parts, so they equal Python's float of the text.
    assert parse_price("1,290.07")[0] == 1290.07
    assert parse_price("0.1 EUR")[0] == 0.1


def test_lowercase_words_are_not_currencies_unless_common() -> None:
    # "all" and "top" are ISO codes (Albanian lek, Tongan pa'anga) but also words: only upper case counts.
    assert parse_price("all 3") == (3.0, None)
    assert parse_price("3 ALL") == (3.0, "ALL")
    assert parse_price("15 (for all sizes)") == (15.0, None)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("usd", "USD"),
        ("USD", "USD"),
        ("US$", "USD"),
        ("us$", "USD"),
        ("$", "USD"),
        ("€", "EUR"),
        ("Euros", "EUR"),
        ("euro", "EUR"),
        ("US Dollar", "USD"),
        ("dollars", "USD"),
        ("£", "GBP"),
        ("Pound Sterling", "GBP"),
        ("¥", "JPY"),
        ("yen", "JPY"),
        ("USD ($)", "USD"),
        (" gbp ", "GBP"),
        ("chf", "CHF"),
        ("bananas", None),
        ("", None),
        (None, None),
        ("N/A", None),
        ("XYZ", None),
    ],
)
def test_normalise_currency(text: str | None, code: str | None) -> None:
    assert normalise_currency(text) == code


# --------------------------------------------------------------------------------------------------------------
# Sizes and text
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("6.50", "6.5"),
        ("6.5", "6.5"),
        ("8.0", "8"),
        ("8", "8"),
        ("08", "8"),
        ("10", "10"),
        ("100", "100"),
        ("6,5", "6.5"),
        ("6½", "6.5"),
        ("6 1/2", "6.5"),
        ("Size 6.5", "6.5"),
        ("size: 7", "7"),
        ("US 6.5", "6.5"),
        ("EU 42", "42"),
        ("42 EU", "42"),
        ("UK8", "8"),
        ("6.5w", "6.5W"),
        ("7.5 C", "7.5C"),
        ("xl", "XL"),
        (" xs ", "XS"),
        ("one  size", "ONE SIZE"),
        ("W32/L34", "W32/L34"),
        (6.5, "6.5"),
        (8.0, "8"),
        (8, "8"),
        ("", ""),
        (None, ""),
    ],
)
def test_normalise_size(text: object, size: str) -> None:
    assert normalise_size(text) == size
    assert normalise_size(size) == size  # idempotent


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  Nike   Dunk\tLow ", "Nike Dunk Low"),
        ("N/A", None),
        ("unknown", None),
        ("Not visible.", None),
        ("null", None),
        ("-", None),
        ("", None),
        (None, None),
        (float("nan"), None),
        (123, "123"),
        ("NAvy", "NAvy"),
    ],
)
def test_clean_text(text: object, expected: str | None) -> None:
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    ("text", "sizes", "bad"),
    [
        ("6.5:115;7.5:120", {"6.5": 115.0, "7.5": 120.0}, []),
        ("6.5=$115 | 7.5=$120", {"6.5": 115.0, "7.5": 120.0}, []),
        ("6.5: $115, 7.5: $1,120.00", {"6.5": 115.0, "7.5": 1120.0}, []),
        ("S: 40 €; M: 42,50 €", {"S": 40.0, "M": 42.5}, []),
        ("6.50 ($115)\n8 ($125)", {"6.5": 115.0, "8": 125.0}, []),
        ('{"6.5": 115, "7.5": "$120"}', {"6.5": 115.0, "7.5": 120.0}, []),
        ('[{"size": "6.5", "price": 115}]', {"6.5": 115.0}, []),
        ("6.5:115;7.5:cheap", {"6.5": 115.0}, ["7.5:cheap"]),
        ("nonsense", {}, ["nonsense"]),
        ("", {}, []),
        ("6.5:115;6.50:999", {"6.5": 115.0}, []),
    ],
)
def test_parse_size_prices(text: str, sizes: dict, bad: list) -> None:
    assert parse_size_prices(text) == (sizes, bad)


# --------------------------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------------------------

NIKE = ProductFields(
    brand="Nike",
    title="Dunk Low",
    category="Sneakers",
    price=115.0,
    currency="USD",
    size_prices={"6.5": 115.0, "7.5": 120.0},
)


@pytest.mark.parametrize(
    "text",
    [
        '{"brand": "Nike", "title": "Dunk Low", "category": "Sneakers", "price": 115.0, "currency": "USD", '
        '"sizes": {"6.5": 115, "7.5": 120}}',
        '```json\n{"brand": "Nike", "title": "Dunk Low", "category": "Sneakers", "price": 115, "currency": "USD",'
        ' "sizes": {"6.50": 115.0, "7.5": 120.0}}\n```',
        'Sure! Here is the JSON:\n```\n{\n  "Brand": "Nike",\n  "Product Name": "Dunk Low",\n  "Type": "Sneakers",\n'
        '  "Full Price": "$115.00",\n  "sizes": [{"size": "6.5", "price": "$115"}, {"size": "7.5", "price": 120}]\n}'
        "\n```\nLet me know if you need more.",
        '{"brand": "Nike", "name": "Dunk Low", "category": "Sneakers", "price": {"amount": 115, "currency": "usd"},'
        ' "size_prices": {"6.5": 115, "7.5": 120}}',
        "{'brand': 'Nike', 'title': 'Dunk Low', 'category': 'Sneakers', 'price': '$115', 'sizes': "
        "{'6.5': 115, '7.5': 120}}",
        "{brand: Nike, title: Dunk Low, category: Sneakers, price: 115, currency: USD, sizes: {6.5: 115, 7.5: 120}}",
        '[{"brand": "Nike", "title": "Dunk Low", "category": "Sneakers", "price": 115, "currency": "USD", '
        '"sizes": {"6.5": 115, "7.5": 120}}]',
        '{"product": {"brand": "Nike", "title": "Dunk Low", "category": "Sneakers"}, "price": "USD 115",'
        ' "price_6.5": 115, "price_7.5": 120}',
    ],
)
def test_json_answers(text: str) -> None:
    assert parse_answer(text) == NIKE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Cut off inside a string: that key is dropped, the complete ones stay.
        ('{"brand": "Nike", "title": "Dunk Lo', ProductFields(brand="Nike")),
        # Cut off inside the sizes object: complete sizes stay, the cut number is dropped.
        (
            '```json\n{"brand": "Nike", "price": 115.0, "sizes": {"6.5": 115, "7.5": 12',
            ProductFields(brand="Nike", price=115.0, size_prices={"6.5": 115.0}),
        ),
        # Cut off right after a number at the very end: it may be missing digits.
        ('{"brand": "Nike", "price": 11', ProductFields(brand="Nike")),
        ('{"brand": "Nike", "price": 115,', ProductFields(brand="Nike", price=115.0)),
        ('{"brand": "Nike", "currency": nu', ProductFields(brand="Nike")),
        ('{"title": "Say \\"hi\\" \\u00e9', ProductFields()),
        ('{"title": "Say \\"hi\\" \\u00e9", "brand"', ProductFields(title='Say "hi" é')),
        ("{", ProductFields()),
        ('{"brand": null, "title": "N/A", "price": null, "sizes": {}}', ProductFields()),
    ],
)
def test_truncated_and_empty_json(text: str, expected: ProductFields) -> None:
    assert parse_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Product: Burberry Check Scarf, Category: Scarves, Full Price: 450.0",
            ProductFields(title="Burberry Check Scarf", category="Scarves", price=450.0),
        ),
        (
            # Titles may hold commas: pairs are split only before a known key.
            "Product: Vintage Check Cashmere Scarf, Beige, Category: Scarves, Full Price: 1290.0",
            ProductFields(title="Vintage Check Cashmere Scarf, Beige", category="Scarves", price=1290.0),
        ),
        (
            "Brand: Nike\nTitle: Dunk Low\nCategory: Sneakers\nPrice: $115.00\nSize 6.5: $115\nSize 7.5: $120",
            NIKE,
        ),
        (
            "**Brand:** Nike\n**Product name:** Dunk Low\n**Category:** Sneakers\n**Price:** $115.00\n"
            "**Sizes:**\n- 6.5: $115\n- 7.5: $120\n",
            NIKE,
        ),
        (
            "- **Brand**: Nike\n- **Title**: Dunk Low\n- **Type**: Sneakers\n- **Price (USD)**: 115\n"
            "- **Price for size 6.5**: 115\n- **Price for size 7.5**: 120",
            NIKE,
        ),
        (
            "### Product\n| Field | Value |\n|---|---|\n| Brand | Nike |\n| Name | Dunk Low |\n"
            "| Category | Sneakers |\n| Price | $115 |\n\n| Size | Price |\n|---|---|\n| 6.5 | $115 |\n| 7.5 | $120 |",
            NIKE,
        ),
        (
            'brand: "Nike", title: "Dunk Low", category: "Sneakers", price: "115 USD", sizes: "6.5: 115, 7.5: 120"',
            NIKE,
        ),
        (
            "Brand - Nike\nTitle - Dunk Low\nCategory - Sneakers\nPrice - US$115\nSizes: 6.5=115; 7.5=120",
            NIKE,
        ),
        (
            "Marque: Nike\nPrix: 115",  # not English: nothing known, nothing invented
            ProductFields(),
        ),
        (
            "Brand: N/A\nTitle: Dunk Low\nPrice: not shown\nCurrency: EUR",
            ProductFields(title="Dunk Low", currency="EUR"),
        ),
        (
            "Price: 1.290,00 €\nCurrency: unknown",
            ProductFields(price=1290.0, currency="EUR"),
        ),
    ],
)
def test_key_value_answers(text: str, expected: ProductFields) -> None:
    assert parse_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "1. The price for size 6.5 is $115.00. 2. The good is Nike Dunk Low DD1503-101 Women's White Black "
            "Leather Sneaker",
            ProductFields(
                title="Nike Dunk Low DD1503-101 Women's White Black Leather Sneaker",
                currency="USD",
                size_prices={"6.5": 115.0},
            ),
        ),
        (
            "1. The price for size 6.5 is $115.00.\n2. The price for size 7.5 is $120.00.\n3. The price for size 8"
            " is $125.00.",
            ProductFields(currency="USD", size_prices={"6.5": 115.0, "7.5": 120.0, "8": 125.0}),
        ),
        (
            "Size 6.5 costs €95,50 and size 7 costs €99. The brand is Adidas.",
            ProductFields(brand="Adidas", currency="EUR", size_prices={"6.5": 95.5, "7": 99.0}),
        ),
        (
            "It is $115 for size 6.5.",
            ProductFields(currency="USD", size_prices={"6.5": 115.0}),
        ),
        (
            "This is a Burberry trench coat priced at £1,290.",
            ProductFields(title="Burberry trench coat", price=1290.0, currency="GBP"),
        ),
        (
            "The product shown in the image is the Vintage Check Scarf. Its category is Scarves and the full "
            "price is $450.",
            ProductFields(title="Vintage Check Scarf", category="Scarves", price=450.0, currency="USD"),
        ),
        (
            "The brand is Nike. The category is Sneakers. The price is 115 dollars.",
            ProductFields(brand="Nike", category="Sneakers", price=115.0, currency="USD"),
        ),
        ("Nike Dunk Low - $115", ProductFields(price=115.0, currency="USD")),
        ("Made by Burberry in England.", ProductFields(brand="Burberry")),
        # Two different amounts and no "price" word: which one is the price is unknown, so none is taken.
        ("Was $150, now $115", ProductFields()),
        ("I cannot tell what is in this image.", ProductFields()),
    ],
)
def test_free_sentence_answers(text: str, expected: ProductFields) -> None:
    assert parse_answer(text) == expected


def test_json_wins_over_text_around_it() -> None:
    text = 'Price: $999\n{"brand": "Nike", "price": 115, "currency": "USD"}\nCategory: Sneakers'
    assert parse_answer(text) == ProductFields(brand="Nike", category="Sneakers", price=115.0, currency="USD")


def test_explicit_currency_wins_over_price_symbol() -> None:
    assert parse_answer('{"price": "$115", "currency": "CAD"}').currency == "CAD"
    assert parse_answer('{"price": "$115", "currency": "bananas"}').currency == "USD"
    assert parse_answer('{"price": 115, "price_eur": 99}') == ProductFields(price=115.0)
    assert parse_answer('{"price_eur": 99}') == ProductFields(price=99.0, currency="EUR")


def test_synonym_priority_is_by_key_not_position() -> None:
    assert parse_answer('{"full_price": 150, "price": 115}').price == 115.0
    assert parse_answer('{"description": "Long text", "title": "Dunk Low"}').title == "Dunk Low"


def test_json_per_size_keys() -> None:
    parsed = parse_answer(
        '{"price_6_5": 115, "size_xl": "$40", "price_us_8": 120, "price_range": "100", "size_chart": 3}'
    )
    assert parsed == ProductFields(size_prices={"6.5": 115.0, "XL": 40.0, "8": 120.0})


def test_json_number_types() -> None:
    parsed = parse_answer('{"title": 2024, "price": -5, "sizes": {"6.5": true, "7": "NaN", "8": 1e999}}')
    assert parsed == ProductFields(title="2024")


# --------------------------------------------------------------------------------------------------------------
# Never raises
# --------------------------------------------------------------------------------------------------------------

_FRAGMENTS = [
    "{",
    "}",
    "[",
    "]",
    '"',
    "'",
    ":",
    ",",
    ";",
    "|",
    "\n",
    " ",
    "\\",
    "\\u12",
    "```json",
    "```",
    "**",
    "- ",
    "1. ",
    "brand",
    "Brand:",
    '"title": ',
    "Product: ",
    "Category: ",
    "Full Price: ",
    "price",
    "sizes",
    '"sizes": {',
    "size 6.5",
    "Size 7.5: ",
    "The price for size ",
    " is ",
    "The good is ",
    "currency",
    "$",
    "US$",
    "€",
    "£",
    "¥",
    "USD",
    "eur",
    "dollars",
    "1,290.00",
    "1.290,00",
    "2,15",
    "115",
    "6.5",
    "-",
    "1e999",
    "NaN",
    "null",
    "true",
    "%",
    "½",
    "é",
    "\u00a0",
    "\x00",
    "\ud7ff",
    "\ud83d",
    "\\ud83d\\ude00",
    "\\udc00",
    "|---|",
    "| Size | Price |",
    "| 6.5 | $1 |",
]


def _assert_well_formed(fields: ProductFields) -> None:
    assert isinstance(fields, ProductFields)
    for name in ("brand", "title", "category"):
        value = getattr(fields, name)
        assert value is None or (isinstance(value, str) and value and value == " ".join(value.split()))
        assert value is None or value.encode("utf-8")
    assert fields.price is None or (isinstance(fields.price, float) and math.isfinite(fields.price))
    assert fields.price is None or fields.price >= 0
    assert fields.currency is None or fields.currency in ISO_CURRENCIES
    assert fields.size_prices is None or isinstance(fields.size_prices, dict)
    for size, amount in (fields.size_prices or {}).items():
        assert isinstance(size, str) and size and normalise_size(size) == size and size.encode("utf-8")
        assert isinstance(amount, float) and math.isfinite(amount) and amount >= 0


def test_parse_answer_never_raises_on_random_text() -> None:
    rng = random.Random(1234)
    for _ in range(2500):
        if rng.random() < 0.5:
            text = "".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(0, 40)))
        else:
            text = "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 80)))
        _assert_well_formed(parse_answer(text))
        parse_price(text)
        parse_size_prices(text)
        normalise_currency(text)
        normalise_size(text)


def test_parse_answer_never_raises_on_mutated_answers() -> None:
    rng = random.Random(99)
    seeds = [
        '{"brand": "Nike", "title": "Dunk Low", "category": "Sneakers", "price": 115.0, "currency": "USD", '
        '"sizes": {"6.5": 115, "7.5": 120}}',
        "Product: Burberry Check Scarf, Category: Scarves, Full Price: 450.0",
        "1. The price for size 6.5 is $115.00. 2. The good is Nike Dunk Low DD1503-101 Women's Sneaker",
        "**Brand:** Nike\n**Sizes:**\n- 6.5: $115\n| Size | Price |\n|---|---|\n| 6.5 | $115 |",
    ]
    for _ in range(2000):
        text = list(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(text) + 1)
            action = rng.random()
            if action < 0.4 and text:
                del text[min(position, len(text) - 1)]
            elif action < 0.8:
                text.insert(position, rng.choice(_FRAGMENTS))
            else:
                text = text[:position]  # cut off mid-generation
        _assert_well_formed(parse_answer("".join(text)))


@pytest.mark.parametrize(
    "text",
    [
        "{" * 50_000,
        "[" * 50_000,
        '{"a":' * 20_000,
        "1," * 20_000,
        "size 6.5 " * 5_000,
        "Brand: " * 10_000,
        "| a | b |\n" * 5_000,
        "$" * 50_000,
        "The good is " + "x" * 50_000,
        "9" * 5_000,
        "6.5: $1, " * 5_000,
    ],
)
def test_parse_answer_is_fast_on_pathological_text(text: str) -> None:
    start = time.perf_counter()
    _assert_well_formed(parse_answer(text))
    assert time.perf_counter() - start < 5.0


def test_parse_answer_accepts_non_strings() -> None:
    assert parse_answer(None) == ProductFields()  # type: ignore[arg-type]
    assert parse_answer(b"{}") == ProductFields()  # type: ignore[arg-type]


def test_escaped_surrogates_become_valid_unicode() -> None:
    assert parse_answer('{"title": "Smile \\ud83d\\ude00", "brand": "\\ud83d"}') == ProductFields(
        title="Smile 😀", brand="\ufffd"
    )
    assert parse_answer('{"title": "Smile \\ud83d\\ude00", "brand": "\\ud83d') == ProductFields(
        title="Smile 😀"
    )
    assert clean_text("a\ud800b") == "a\ufffdb"


def test_key_value_synonym_priority_is_by_key_not_position() -> None:
    text = "Description: A warm scarf in check\nTitle: Vintage Check Scarf\nFull Price: 490\nPrice: 450"
    assert parse_answer(text) == ProductFields(title="Vintage Check Scarf", price=450.0)


# --------------------------------------------------------------------------------------------------------------
# Numbers no float holds (issue 15: a JSON integer of 309+ digits raised OverflowError and ended the scan)
# --------------------------------------------------------------------------------------------------------------

HUGE = "9" * 400


@pytest.mark.parametrize(
    ("answer", "expected", "unrepresentable"),
    [
        (f'{{"brand": "A", "price": {HUGE}}}', ProductFields(brand="A"), ("price",)),
        (f'{{"brand": "A", "price": {{"amount": {HUGE}, "currency": "USD"}}}}', ProductFields(brand="A"), ("price",)),
        ('{"brand": "A", "price": 1e400}', ProductFields(brand="A"), ("price",)),
        (f'{{"brand": "A", "price_usd": {HUGE}}}', ProductFields(brand="A"), ("price",)),
        (f'{{"brand": "A", "sizes": {{"6.5": {HUGE}, "7": 120}}}}', ProductFields(brand="A", size_prices={"7": 120.0}), ("size_prices",)),
        (f'{{"brand": "A", "sizes": [["6.5", {HUGE}]]}}', ProductFields(brand="A"), ("size_prices",)),
        (f'{{"brand": "A", "price_6_5": {HUGE}}}', ProductFields(brand="A"), ("size_prices",)),
        (f'{{"brand": {HUGE}, "price": 5}}', ProductFields(brand=HUGE, price=5.0), ()),  # text: kept as written
        (f'{{"brand": "A", "price": 5, "title": "{HUGE}"}}', ProductFields(brand="A", price=5.0, title=HUGE), ()),
        (f"Price: {HUGE}", ProductFields(), ()),  # text is read as written: no amount, nothing to represent
    ],
)  # fmt: skip
def test_a_number_no_float_holds_is_left_empty_and_named(answer, expected, unrepresentable) -> None:
    read = read_answer(answer)
    assert read.fields == expected
    assert read.unrepresentable == unrepresentable
    assert parse_answer(answer) == expected


def test_a_huge_number_field_is_left_empty_and_named(tmp_path) -> None:
    from inspector.fields import load_fields

    declared = tmp_path / "fields.toml"
    declared.write_text('[fields.volume]\nkind = "number"\nunit = "ml"\n')
    fields = load_fields(str(declared))
    for answer in (f'{{"volume": {HUGE}}}', f'{{"volume": {{"value": {HUGE}, "unit": "l"}}}}', '{"volume": 1e400}'):
        read = read_answer(answer, fields)
        assert (read.fields, read.unrepresentable) == (ProductFields(), ("volume",)), answer
    assert read_answer('{"volume": "1e308 l"}', fields).fields == ProductFields()  # 1e311 ml: no float either


def test_readers_of_single_values_never_raise_on_huge_numbers() -> None:
    from inspector.units import parse_quantity

    assert read_price(10**400) == PriceReading(None, None, TOO_LARGE)
    assert read_price(-(10**400)) == PriceReading(None, None, TOO_LARGE)
    assert read_price(float("nan")) == PriceReading(None, None)
    assert parse_size_prices(f'{{"6.5": {HUGE}, "7": 5}}') == ({"7": 5.0}, [f"6.5: {HUGE}"])
    assert parse_quantity(10**400, "ml") is None
    assert parse_quantity(1e308, "ml") == 1e308
    assert parse_quantity("1e308", "ml") is None  # not a number as written
    assert normalise_size("1" * 30) == "1" * 30  # 28 significant digits rounded it to another size
