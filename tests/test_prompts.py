"""Prompts, the canonical answer format, and its round trip through parse_answer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from inspector.errors import InputError
from inspector.fields import FIELD_NAMES, ProductFields
from inspector.parsing import parse_answer
from inspector.prompts import (
    BUILTIN_PROMPTS,
    Prompt,
    format_answer,
    get_prompt,
    parse_sizes_option,
)
from inspector.truth import load_truth

# --------------------------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------------------------


def test_default_prompt_asks_for_json_with_every_key() -> None:
    prompt = get_prompt()
    assert prompt == BUILTIN_PROMPTS["extract"]
    assert prompt.name == "extract" and prompt.answer_style == "json"
    for key in ("brand", "title", "category", "price", "currency", "sizes"):
        assert f'"{key}"' in prompt.text
    assert "JSON" in prompt.text and "null" in prompt.text


def test_original_prompt_is_the_fine_tune_question() -> None:
    prompt = get_prompt("original")
    assert prompt == Prompt("original", "What is shown in this image?", "original")


def test_prompt_names_ignore_case_and_space() -> None:
    assert get_prompt(" Original ") == BUILTIN_PROMPTS["original"]


def test_unknown_prompt_lists_available_names() -> None:
    with pytest.raises(InputError) as error:
        get_prompt("nonsense")
    assert (
        "extract" in str(error.value)
        and "original" in str(error.value)
        and "--prompt-file" in str(error.value)
    )


def test_sizes_question_per_style() -> None:
    extract = get_prompt(sizes=["6.5", "7.50", "8.0"])
    assert extract.text.startswith(BUILTIN_PROMPTS["extract"].text)
    assert extract.text.endswith('Fill "sizes" with the prices in sizes 6.5, 7.5, 8.')
    assert extract.name == "extract" and extract.answer_style == "json"
    original = get_prompt("original", sizes=["6.5", "7.5", "8"])
    assert original.text == "What is shown in this image? What are the prices in 6.5, 7.5, 8?"


def test_prompt_file(tmp_path: Path) -> None:
    path = tmp_path / "brand only.txt"
    path.write_text("\ufeffWhich brand is this?\n", encoding="utf-8")
    assert get_prompt(prompt_file=path) == Prompt("file:brand only", "Which brand is this?", "free")
    assert (
        get_prompt(prompt_file=str(path), sizes=["XL"]).text
        == "Which brand is this? What are the prices in XL?"
    )


def test_prompt_file_with_sizes_placeholder(tmp_path: Path) -> None:
    path = tmp_path / "sizes.txt"
    path.write_text('List the prices for sizes {sizes} as JSON like {"6.5": 115}.', encoding="utf-8")
    prompt = get_prompt(prompt_file=path, sizes=["6.5", "7.5"])
    assert prompt.text == 'List the prices for sizes 6.5, 7.5 as JSON like {"6.5": 115}.'
    with pytest.raises(InputError, match="--sizes"):
        get_prompt(prompt_file=path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), ("", "empty"), ("   \n", "empty"), (b"\xff\xfe\x00bad", "UTF-8")],
)
def test_bad_prompt_files(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    path = tmp_path / "prompt.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        get_prompt(prompt_file=path)


def test_prompt_file_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="folder"):
        get_prompt(prompt_file=tmp_path)


def test_name_and_file_together_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not both"):
        get_prompt("extract", prompt_file=tmp_path / "x.txt")


@pytest.mark.parametrize(
    ("text", "sizes"),
    [
        ("6.5,7.5,8", ["6.5", "7.5", "8"]),
        (" 6.50 ; 8.0 ,", ["6.5", "8"]),
        ("xs, m, XL", ["XS", "M", "XL"]),
        ("8,8.0,08", ["8"]),
        ("US 6.5, EU 42", ["6.5", "42"]),
    ],
)
def test_parse_sizes_option(text: str, sizes: list[str]) -> None:
    assert parse_sizes_option(text) == sizes


@pytest.mark.parametrize("text", ["", " ", ",,", ";"])
def test_parse_sizes_option_rejects_empty(text: str) -> None:
    with pytest.raises(InputError, match="--sizes"):
        parse_sizes_option(text)


# --------------------------------------------------------------------------------------------------------------
# Canonical answers
# --------------------------------------------------------------------------------------------------------------


def test_json_answer_has_every_key_in_field_order() -> None:
    fields = ProductFields(brand="Nike", price=115.0, size_prices={"6.5": 115.0})
    text = format_answer(fields)
    assert "\n" not in text
    data = json.loads(text)
    assert list(data) == ["brand", "title", "category", "price", "currency", "sizes"]
    assert data == {
        "brand": "Nike",
        "title": None,
        "category": None,
        "price": 115.0,
        "currency": None,
        "sizes": {"6.5": 115.0},
    }
    assert len(FIELD_NAMES) == len(data)


def test_empty_fields_answer() -> None:
    assert format_answer(ProductFields()) == (
        '{"brand": null, "title": null, "category": null, "price": null, "currency": null, "sizes": {}}'
    )
    assert format_answer(ProductFields(), "original") == ""
    assert parse_answer(format_answer(ProductFields())) == ProductFields()


def test_json_answer_keeps_non_ascii_readable() -> None:
    assert '"Hermès"' in format_answer(ProductFields(brand="Hermès"))


def test_original_style_matches_the_fine_tune_format() -> None:
    fields = ProductFields(title="Vintage Check Scarf", category="Scarves", price=450.0)
    assert (
        format_answer(fields, "original")
        == "Product: Vintage Check Scarf, Category: Scarves, Full Price: 450.0"
    )
    fields.size_prices = {"6.5": 115.0}
    fields.currency = "USD"
    assert format_answer(fields, "original") == (
        "Product: Vintage Check Scarf, Category: Scarves, Full Price: 450.0, Currency: USD, Size 6.5: 115.0"
    )


def test_free_style_is_key_value_lines() -> None:
    fields = ProductFields(brand="Nike", price=1e16, size_prices={"M": 0.1})
    assert format_answer(fields, "free") == "Brand: Nike\nPrice: 10000000000000000.00\nSize M: 0.1"


def test_unknown_style() -> None:
    with pytest.raises(InputError, match="json"):
        format_answer(ProductFields(), "yaml")


# --------------------------------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------------------------------

_WORDS = [
    "Nike",
    "Dunk",
    "Low",
    "Women's",
    "White/Black",
    "Leather",
    "Sneaker",
    "DD1503-101",
    "Burberry",
    "Vintage",
    "Check",
    "Cashmere",
    "Scarf,",
    "Beige",
    "Hermès",
    "Birkin",
    "25",
    "Togo",
    "T-Shirts",
    "&",
    "Tops",
    "Dolce",
    "Gabbana",
    "Crème",
    "100%",
    "Ø",
    "日本",
    "(Limited)",
    '12"',
    "No.5",
    "Eau",
    "de",
    "Parfum",
    "$",
    "2-Pack",
]
_PLAIN_WORDS = [word for word in _WORDS if word[0].isalnum() and word[-1].isalnum()]
_CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "INR"]
_SIZES = [
    "5",
    "5.5",
    "6.5",
    "7",
    "8",
    "10",
    "10.5",
    "42",
    "XS",
    "S",
    "M",
    "L",
    "XL",
    "XXL",
    "2XL",
    "ONE SIZE",
    "6.5W",
]


def _text(rng: random.Random, words: int, anything: bool) -> str | None:
    if rng.random() < 0.15:
        return None
    chosen = [rng.choice(_WORDS) for _ in range(rng.randint(1, words))]
    if not anything:
        # For the text styles, start and end with a plain word (a value wrapped in quotes is read unquoted).
        chosen = [rng.choice(_PLAIN_WORDS), *chosen, rng.choice(_PLAIN_WORDS)]
    return " ".join(chosen)


def _amount(rng: random.Random) -> float:
    return round(rng.choice([rng.uniform(0, 50), rng.uniform(50, 5000), rng.uniform(5000, 2_000_000)]), 2)


def random_fields(rng: random.Random, anything: bool = True) -> ProductFields:
    sizes = rng.sample(_SIZES, rng.choice([0, 0, 1, 3, 6]))
    return ProductFields(
        brand=_text(rng, 2, anything),
        title=_text(rng, 8, anything),
        category=_text(rng, 3, anything),
        price=_amount(rng) if rng.random() < 0.85 else None,
        currency=rng.choice(_CURRENCIES) if rng.random() < 0.8 else None,
        size_prices={size: _amount(rng) for size in sizes},
    )


def test_json_round_trip_over_generated_fields() -> None:
    rng = random.Random(7)
    for _ in range(500):
        fields = random_fields(rng)
        assert parse_answer(format_answer(fields, "json")) == fields


@pytest.mark.parametrize("style", ["original", "free"])
def test_text_styles_round_trip(style: str) -> None:
    rng = random.Random(11)
    for _ in range(300):
        fields = random_fields(rng, anything=False)
        text = format_answer(fields, style)
        assert parse_answer(text) == fields, text


def test_round_trip_of_fields_loaded_from_a_catalogue(tmp_path: Path) -> None:
    """The training target for a catalogue row reads back to exactly that row's fields."""
    rng = random.Random(3)
    rows = []
    for index in range(150):
        fields = random_fields(rng)
        row = {
            "image": f"img_{index}.jpg",
            "Brand": fields.brand or "",
            "Product Name": fields.title or "",
            "Category": fields.category or "",
            "Price": f"{fields.price:,.2f}" if fields.price is not None else "",
            "Currency": fields.currency or "",
            "sizes": ";".join(f"{size}:{amount}" for size, amount in (fields.size_prices or {}).items()),
        }
        rows.append(row)
    path = tmp_path / "catalogue.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    table = load_truth(path)
    assert len(table) == 150 and not table.unparseable_cells
    rng = random.Random(3)
    for record in table.records:
        assert record.fields == random_fields(rng)  # the catalogue holds what was written
        text = format_answer(record.fields, "json")
        assert parse_answer(text) == record.fields, text
