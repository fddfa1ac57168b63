"""The confidence benchmark's arithmetic (bench/confidence.py): AUROC with ties, precision at k, corruption."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from confidence import auroc, corrupt, precision_at, reliability  # noqa: E402


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([0.9, 0.8, 0.1, 0.0], [True, True, False, False], 1.0),
        ([0.0, 0.1, 0.8, 0.9], [True, True, False, False], 0.0),
        ([0.5, 0.5, 0.5, 0.5], [True, False, True, False], 0.5),  # all tied: chance
        ([0.9, 0.0, 0.0, 0.0], [True, True, False, False], 0.75),  # one tie between classes counts half
    ],
)
def test_auroc_is_the_chance_a_corrupted_row_outranks_a_clean_one(scores, labels, expected):
    assert auroc(scores, labels) == pytest.approx(expected)


def test_precision_at_a_share_counts_corrupted_rows_in_the_top():
    scores = [0.9, 0.8, 0.7, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    labels = [True, False, True, False, False, False, False, False, False, True]
    assert precision_at(scores, labels, 0.2, seed=0) == 0.5
    assert precision_at(scores, labels, 0.3, seed=0) == pytest.approx(2 / 3)


def test_corruption_changes_exactly_the_chosen_rows_category_or_price():
    rows = [
        {"local_image_path": f"images/{i}.jpg", "category3_code": ["coat", "dress", "scarf"][i % 3], "full_price": "100.00"}
        for i in range(40)
    ]
    out, corrupted = corrupt(rows, 0.1, seed=3)
    assert len(corrupted) == 4 and sorted(corrupted.values()) == ["category", "category", "price", "price"]
    for before, after in zip(rows, out, strict=True):
        changed = {k for k in before if before[k] != after[k]}
        what = corrupted.get(before["local_image_path"])
        assert changed == ({"category3_code"} if what == "category" else {"full_price"} if what == "price" else set())
        if what == "price":
            assert abs(float(after["full_price"]) - 100) >= 30
    assert corrupt(rows, 0.1, seed=3) == (out, corrupted)  # seeded


def test_corruption_cycles_through_category_colour_and_price_where_the_catalogue_has_them():
    rows = [
        {"local_image_path": f"{i}.jpg", "category3_code": ["coat", "dress"][i % 2], "colour": ["Navy", "Red"][i % 2],
         "full_price": "100.00"}
        for i in range(30)
    ]  # fmt: skip
    out, corrupted = corrupt(rows, 0.2, seed=1)
    assert sorted(corrupted.values()) == ["category", "category", "colour", "colour", "price", "price"]
    for before, after in zip(rows, out, strict=True):
        what = corrupted.get(before["local_image_path"])
        changed = {k for k in before if before[k] != after[k]}
        assert changed == ({"category": {"category3_code"}, "colour": {"colour"}, "price": {"full_price"}}[what]
                           if what else set())  # fmt: skip


def test_reliability_bins_clean_values_by_confidence_and_counts_the_right_ones():
    by_image = {
        "a": (0.0, False, {"category": ["correct", 0.99], "price": ["wrong", 0.3]}),
        "b": (0.0, False, {"category": ["wrong", 0.97], "price": ["missed", None]}),
        "c": (0.0, False, {"category": ["correct", 0.2]}),
    }
    table = reliability(by_image, ["a", "b", "c"])
    assert set(table) == {"category", "price"}  # colour: no value with a confidence
    category = {row["upper"]: (row["n"], row["right"]) for row in table["category"]}
    assert category[0.5] == (1, 1) and category[0.99] == (2, 1) and category[1.0] == (0, 0)
    assert {row["upper"]: row["n"] for row in table["price"]}[0.5] == 1
