"""Per-field outcomes for one answer, and metrics over many."""

from __future__ import annotations

import random

import pytest

from inspector.errors import InputError
from inspector.fields import FieldResult, Outcome, ProductFields
from inspector.scoring import (
    FieldMetrics,
    PriceTolerance,
    answer_currency,
    format_amount,
    format_errors,
    normalise_label,
    score_answer,
    size_sort_key,
    summarise,
    summarise_answers,
    title_similarity,
)


def by_field(results: list[FieldResult]) -> dict[str, FieldResult]:
    return {result.field: result for result in results}


# --------------------------------------------------------------------------------------------------------------
# Tolerance
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tolerance"),
    [
        ("0.01", PriceTolerance(absolute=0.01)),
        (" 1 ", PriceTolerance(absolute=1.0)),
        ("0", PriceTolerance(absolute=0.0)),
        ("2%", PriceTolerance(relative=0.02)),
        ("0.5 %", PriceTolerance(relative=0.005)),
    ],
)
def test_parse_tolerance(text: str, tolerance: PriceTolerance) -> None:
    assert PriceTolerance.parse(text) == tolerance


@pytest.mark.parametrize("text", ["", "abc", "%", "-1", "-2%", "nan", "inf", "1,5", "2%%", "cent"])
def test_parse_tolerance_rejects_junk(text: str) -> None:
    with pytest.raises(InputError, match="0.01 or a percentage like 2%"):
        PriceTolerance.parse(text)


def test_tolerance_text() -> None:
    assert str(PriceTolerance()) == "0.005"
    assert str(PriceTolerance.parse("2%")) == "2%"


@pytest.mark.parametrize(
    ("tolerance", "predicted", "expected", "allowed"),
    [
        (PriceTolerance(), 115.0, 115.0, True),
        (PriceTolerance(), 115.004, 115.0, True),  # to the cent
        (PriceTolerance(), 115.01, 115.0, False),
        (PriceTolerance(), 114.99, 115.0, False),
        (PriceTolerance(absolute=0.1), 115.1, 115.0, True),  # 0.1 despite binary floating point
        (PriceTolerance(absolute=0.1), 115.11, 115.0, False),
        (PriceTolerance(absolute=0.0), 0.1 + 0.2, 0.3, True),
        (PriceTolerance.parse("2%"), 101.99, 100.0, True),
        (PriceTolerance.parse("2%"), 97.9, 100.0, False),
        (PriceTolerance.parse("2%"), 0.004, 0.0, True),  # the absolute floor still applies
    ],
)
def test_tolerance_allows(
    tolerance: PriceTolerance, predicted: float, expected: float, allowed: bool
) -> None:
    assert tolerance.allows(predicted, expected) is allowed


# --------------------------------------------------------------------------------------------------------------
# Normalisation and similarity
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("Hermès", "HERMES"),
        ("  nike ", "Nike"),
        ("T-Shirts & Tops", "t shirts and tops"),
        ("Dolce & Gabbana", "Dolce and Gabbana"),
        ("Levi's", "Levis"),
        ("Levi’s", "LEVIS"),
        ("Sneakers.", "sneakers"),
        ("Bags/Accessories", "bags accessories"),
        ("Crème Brûlée", "creme brulee"),
    ],
)
def test_labels_equal_after_normalisation(left: str, right: str) -> None:
    assert normalise_label(left) == normalise_label(right)


@pytest.mark.parametrize(("left", "right"), [("Nike", "Nikes"), ("Coats", "Jackets"), ("A&B", "AB")])
def test_labels_that_stay_different(left: str, right: str) -> None:
    assert normalise_label(left) != normalise_label(right)


@pytest.mark.parametrize(
    ("predicted", "expected", "similarity"),
    [
        ("Nike Dunk Low", "nike dunk low", 1.0),
        ("Dunk Low Nike", "Nike Dunk Low", 1.0),  # order ignored
        ("Nike Dunk Low", "Nike Dunk High", 2 / 3),
        ("Nike Dunk", "Nike Dunk Low Retro", 2 * (1.0 * 0.5) / 1.5),
        ("Adidas Samba", "Nike Dunk", 0.0),
        ("Nike Nike Nike", "Nike", 0.5),  # repeats count
        ("!!!", "!!!", 1.0),
        ("!!!", "???", 0.0),
    ],
)
def test_title_similarity(predicted: str, expected: str, similarity: float) -> None:
    assert title_similarity(predicted, expected) == pytest.approx(similarity)


def test_format_amount() -> None:
    assert format_amount(115.0) == "115.00"
    assert format_amount(1290.5) == "1290.50"
    assert format_amount(115.004) == "115.004"
    assert format_amount(None) is None


def test_size_order() -> None:
    sizes = ["XL", "10", "ONE SIZE", "6.5", "S", "6.5W", "M", "8"]
    assert sorted(sizes, key=size_sort_key) == ["6.5", "6.5W", "8", "10", "S", "M", "XL", "ONE SIZE"]


# --------------------------------------------------------------------------------------------------------------
# One answer
# --------------------------------------------------------------------------------------------------------------

TRUTH = ProductFields(
    brand="Nike",
    title="Nike Dunk Low DD1503-101 Women's White Black Leather Sneaker",
    category="Sneakers",
    price=115.0,
    currency="USD",
    size_prices={"6.5": 115.0, "7.5": 120.0},
)


def test_perfect_answer() -> None:
    results = score_answer(TRUTH, TRUTH)
    assert [result.field for result in results] == [
        "brand",
        "title",
        "category",
        "price",
        "currency",
        "size_price:6.5",
        "size_price:7.5",
    ]
    assert {result.outcome for result in results} == {Outcome.CORRECT}
    assert by_field(results)["title"].score == 1.0
    assert by_field(results)["price"].score == 0.0


def test_every_outcome_and_display_values() -> None:
    predicted = ProductFields(
        brand="NIKE",
        title="Nike Dunk Low Women's Sneaker",
        category=None,
        price=125.0,
        currency="usd",
        size_prices={"6.50": 115.0, "8": 130.0},
    )
    truth = ProductFields(
        brand="Nike",
        title=TRUTH.title,
        category="Sneakers",
        price=115.0,
        currency=None,
        size_prices={"6.5": 115.0, "7.5": 120.0},
    )
    results = by_field(score_answer(predicted, truth))
    assert results["brand"] == FieldResult("brand", Outcome.CORRECT, "NIKE", "Nike", None)
    assert results["title"].outcome == Outcome.CORRECT and results["title"].score == pytest.approx(2 / 3)
    assert results["category"] == FieldResult("category", Outcome.MISSED, None, "Sneakers", None)
    assert results["price"] == FieldResult("price", Outcome.WRONG, "125.00", "115.00", 10.0)
    assert results["currency"] == FieldResult("currency", Outcome.SPURIOUS, "usd", None, None)
    assert results["size_price:6.5"] == FieldResult(
        "size_price:6.5", Outcome.CORRECT, "115.00", "115.00", 0.0
    )
    assert results["size_price:7.5"] == FieldResult("size_price:7.5", Outcome.MISSED, None, "120.00", None)
    assert results["size_price:8"] == FieldResult("size_price:8", Outcome.SPURIOUS, "130.00", None, None)
    assert list(results)[-3:] == ["size_price:6.5", "size_price:7.5", "size_price:8"]


def test_both_empty_and_no_size_rows() -> None:
    results = score_answer(ProductFields(), ProductFields())
    assert [(result.field, result.outcome) for result in results] == [
        ("brand", Outcome.BOTH_EMPTY),
        ("title", Outcome.BOTH_EMPTY),
        ("category", Outcome.BOTH_EMPTY),
        ("price", Outcome.BOTH_EMPTY),
        ("currency", Outcome.BOTH_EMPTY),
    ]
    blank = ProductFields(brand="  ", title="")
    assert {result.outcome for result in score_answer(blank, ProductFields())} == {Outcome.BOTH_EMPTY}


@pytest.mark.parametrize(
    ("predicted", "outcome"),
    [
        ("Nike Dunk Low Sneaker", Outcome.WRONG),  # F1 = 2*(4/4*4/10)/(1+0.4) = 0.571 < 0.6
        ("Nike Dunk Low Women's Sneaker", Outcome.CORRECT),
        ("Adidas Samba", Outcome.WRONG),
    ],
)
def test_title_threshold(predicted: str, outcome: str) -> None:
    result = by_field(score_answer(ProductFields(title=predicted), TRUTH))["title"]
    assert result.outcome == outcome
    assert result.score == pytest.approx(title_similarity(predicted, TRUTH.title))


def test_title_threshold_is_a_parameter() -> None:
    predicted = ProductFields(title="Nike Dunk Low Sneaker")
    assert by_field(score_answer(predicted, TRUTH, title_threshold=0.5))["title"].outcome == Outcome.CORRECT
    exact = ProductFields(title=TRUTH.title.upper())
    assert by_field(score_answer(exact, TRUTH, title_threshold=1.0))["title"].outcome == Outcome.CORRECT


def test_price_tolerance_is_used_for_price_and_sizes() -> None:
    predicted = ProductFields(price=117.0, size_prices={"6.5": 117.0})
    truth = ProductFields(price=115.0, size_prices={"6.5": 115.0})
    assert {r.outcome for r in score_answer(predicted, truth)} - {Outcome.BOTH_EMPTY} == {Outcome.WRONG}
    tolerant = score_answer(predicted, truth, PriceTolerance.parse("2%"))
    assert {r.outcome for r in tolerant} - {Outcome.BOTH_EMPTY} == {Outcome.CORRECT}
    assert by_field(tolerant)["price"].score == pytest.approx(2.0)


def test_currency_codes() -> None:
    assert by_field(score_answer(ProductFields(currency="EUR"), TRUTH))["currency"].outcome == Outcome.WRONG
    assert by_field(score_answer(ProductFields(currency="US$"), TRUTH))["currency"].outcome == Outcome.CORRECT
    odd = by_field(score_answer(ProductFields(currency="XBT"), ProductFields(currency="XBT")))["currency"]
    assert odd.outcome == Outcome.CORRECT
    assert by_field(score_answer(ProductFields(currency="XBT"), TRUTH))["currency"].outcome == Outcome.WRONG


def test_categories_compare_after_normalisation() -> None:
    predicted = ProductFields(category="T-Shirts & Tops")
    truth = ProductFields(category="t shirts and tops")
    assert by_field(score_answer(predicted, truth))["category"].outcome == Outcome.CORRECT


# --------------------------------------------------------------------------------------------------------------
# Many answers
# --------------------------------------------------------------------------------------------------------------


def result(field: str, outcome: str, score: float | None = None) -> FieldResult:
    return FieldResult(field, outcome, None, None, score)


def test_summarise_counts_and_rates() -> None:
    results = [
        result("brand", Outcome.CORRECT),
        result("brand", Outcome.CORRECT),
        result("brand", Outcome.WRONG),
        result("brand", Outcome.MISSED),
        result("brand", Outcome.SPURIOUS),
        result("brand", Outcome.BOTH_EMPTY),
    ]
    metrics = summarise(results)["brand"]
    assert metrics == FieldMetrics(
        field="brand",
        n=6,
        correct=2,
        wrong=1,
        missed=1,
        spurious=1,
        both_empty=1,
        accuracy=3 / 6,
        precision=2 / 4,
        recall=2 / 4,
        f1=0.5,
    )


def test_summarise_price_error_and_sizes_grouped() -> None:
    results = [
        result("price", Outcome.CORRECT, 0.0),
        result("price", Outcome.WRONG, 10.0),
        result("price", Outcome.MISSED),
        result("size_price:6.5", Outcome.CORRECT, 0.0),
        result("size_price:7.5", Outcome.WRONG, 3.0),
        result("size_price:8", Outcome.SPURIOUS),
        result("title", Outcome.CORRECT, 0.9),
    ]
    metrics = summarise(results)
    assert list(metrics) == ["title", "price", "size_price"]
    assert metrics["price"].mean_abs_error == 5.0 and metrics["price"].error_count == 2
    assert metrics["price"].recall == pytest.approx(1 / 3) and metrics["price"].precision == 0.5
    assert metrics["size_price"].n == 3 and metrics["size_price"].mean_abs_error == 1.5
    assert metrics["title"].mean_abs_error is None  # similarity is not an error


def test_summarise_empty_denominators_are_none() -> None:
    metrics = summarise([result("brand", Outcome.BOTH_EMPTY), result("currency", Outcome.MISSED)])
    assert metrics["brand"].accuracy == 1.0
    assert (
        metrics["brand"].precision is None and metrics["brand"].recall is None and metrics["brand"].f1 is None
    )
    assert metrics["currency"].precision is None and metrics["currency"].recall == 0.0
    assert metrics["currency"].f1 is None
    all_wrong = summarise([result("brand", Outcome.WRONG)])["brand"]
    assert (all_wrong.precision, all_wrong.recall, all_wrong.f1) == (0.0, 0.0, 0.0)
    assert summarise([]) == {}


def test_summarise_rejects_unknown_outcomes() -> None:
    with pytest.raises(ValueError, match="maybe"):
        summarise([result("brand", "maybe")])


def test_to_dict_is_plain_data() -> None:
    data = summarise(score_answer(TRUTH, TRUTH))["price"].to_dict()
    assert data == {
        "field": "price",
        "n": 1,
        "correct": 1,
        "wrong": 0,
        "missed": 0,
        "spurious": 0,
        "both_empty": 0,
        "unreadable": 0,
        "accuracy": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "mean_abs_error": 0.0,
        "error_count": 1,
        "mean_abs_error_by_currency": {"": 0.0},
        "outside_values": 0,
        "catalogue_outside_values": 0,
    }


def test_summary_agrees_with_outcomes_over_random_answers() -> None:
    rng = random.Random(5)
    brands = ["Nike", "nike", "Adidas", None]
    results: list[FieldResult] = []
    for _ in range(300):
        predicted = ProductFields(brand=rng.choice(brands), price=rng.choice([None, 10.0, 12.0]))
        truth = ProductFields(brand=rng.choice(brands), price=rng.choice([None, 10.0]))
        results += score_answer(predicted, truth)
    metrics = summarise(results)
    for name in ("brand", "price"):
        outcomes = [r.outcome for r in results if r.field == name]
        entry = metrics[name]
        assert entry.n == len(outcomes) == 300
        assert sum(getattr(entry, outcome) for outcome in Outcome.ALL) == 300
        assert entry.accuracy == pytest.approx(
            (outcomes.count(Outcome.CORRECT) + outcomes.count(Outcome.BOTH_EMPTY)) / 300
        )
    pairs = [r.score for r in results if r.field == "price" and r.outcome in (Outcome.CORRECT, Outcome.WRONG)]
    assert metrics["price"].mean_abs_error == pytest.approx(sum(pairs) / len(pairs))
    assert 0 < metrics["price"].mean_abs_error < 2


def test_price_errors_never_mix_currencies() -> None:
    """Issue 20.4: one mean over EUR, GBP and JPY errors means nothing."""
    answers = [
        score_answer(ProductFields(price=11.0, currency="EUR"), ProductFields(price=10.0, currency="EUR")),
        score_answer(ProductFields(price=13.0, currency="EUR"), ProductFields(price=10.0, currency="EUR")),
        score_answer(ProductFields(price=1100.0, currency="JPY"), ProductFields(price=1000.0, currency="JPY")),
    ]
    mixed = summarise_answers(answers)["price"]
    assert mixed.mean_abs_error is None and mixed.error_count == 3
    assert mixed.mean_abs_error_by_currency == {"EUR": 2.0, "JPY": 100.0}
    assert format_errors(mixed.to_dict()) == "2.00 EUR · 100.00 JPY"
    euros = summarise_answers(answers[:2])["price"]
    assert (euros.mean_abs_error, euros.mean_abs_error_by_currency) == (2.0, {"EUR": 2.0})
    assert format_errors(euros.to_dict()) == "2.00 EUR"
    # the catalogue's currency decides; without one, the answer's
    assert answer_currency(score_answer(ProductFields(currency="GBP"), ProductFields())) == "GBP"
    assert answer_currency(score_answer(ProductFields(currency="GBP"), ProductFields(currency="usd"))) == "USD"


def test_unreadable_results_are_counted_apart_from_every_rate() -> None:
    results = [result("weight", Outcome.CORRECT), result("weight", Outcome.UNREADABLE)]
    metrics = summarise(results)["weight"]
    assert (metrics.n, metrics.correct, metrics.unreadable, metrics.accuracy) == (1, 1, 1, 1.0)
    truth = ProductFields(price=None, size_prices={"8": 120.0})
    scored = score_answer(
        ProductFields(price=10.0, size_prices={"8": 120.0, "9": 130.0}),
        truth,
        unreadable={"price": "1,290", "size_prices": "9:oops"},
    )
    outcomes = {r.field: (r.outcome, r.expected) for r in scored}
    assert outcomes["price"] == (Outcome.UNREADABLE, "1,290")
    assert outcomes["size_price:8"] == (Outcome.CORRECT, "120.00")
    # a size the catalogue lacks, while its size cell has an entry nobody can read: not judged
    assert outcomes["size_price:9"] == (Outcome.UNREADABLE, "9:oops")
