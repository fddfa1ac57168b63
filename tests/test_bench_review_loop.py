"""The closed-loop benchmark's parts (bench/review_loop.py): the catalogue corruption and the oracle inspectors."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from review_loop import corrupt, simulate_decisions  # noqa: E402

from inspector.images import sha256_hex  # noqa: E402
from inspector.samples import CATEGORIES, World  # noqa: E402


def test_corruption_changes_one_field_of_the_chosen_rows_to_another_value_of_the_world():
    world = World.shifted()
    rows = [{"local_image_path": f"images/{i}.jpg", "brand": world.brands[i % 3], "colour": world.colours[i % 4],
             "category3_code": CATEGORIES[i % 5], "full_price": "100.00"} for i in range(40)]  # fmt: skip
    out, changed = corrupt(rows, 0.2, seed=3, world=world)
    assert sorted(changed.values()) == ["brand", "brand", "category", "category", "colour", "colour", "price", "price"]
    columns = {"brand": "brand", "colour": "colour", "category": "category3_code", "price": "full_price"}
    for before, after in zip(rows, out, strict=True):
        what = changed.get(before["local_image_path"])
        assert {k for k in before if before[k] != after[k]} == ({columns[what]} if what else set())
    for path, what in changed.items():
        value = next(row for row in out if row["local_image_path"] == path)[columns[what]]
        allowed = {"brand": world.brands, "colour": world.colours, "category": CATEGORIES}.get(what)
        assert value in allowed if allowed else abs(float(value) - 100) >= 30
    assert corrupt(rows, 0.2, seed=3, world=world) == (out, changed)


def test_the_oracle_corrects_corrupted_fields_and_blames_the_model_for_the_rest(confident_scan):
    """confident_scan: the model disagrees on category (images 2-4, 0.97 / 0.55 / 0.2 sure) and price (image 4,
    0.9). Say image 2's catalogue category was corrupted: the oracle types the clean value for it."""
    names = [source.path.name for source in confident_scan["sources"]]
    rows = {name: dict(row) for name, row in zip(names, confident_scan["catalogue"], strict=True)}
    clean = {**rows[names[1]], "category3_code": "trench coat"}
    world = {"rows": {**rows, names[1]: clean}, "corrupted": {names[1]: "category", names[2]: "price"}}
    decisions, counts = simulate_decisions(confident_scan["db"], "1", world, limit=3)
    index = {sha256_hex(source.path.read_bytes()): i for i, source in enumerate(confident_scan["sources"])}
    by_image = [(index[sha], field, decision, corrected) for _run, sha, field, decision, corrected in decisions]
    assert by_image == [
        (1, "category", "catalogue_wrong", "trench coat"),
        (3, "price", "model_wrong", ""),  # image 4's price was not corrupted (image 3's was)
        (2, "category", "model_wrong", ""),
    ]
    assert counts["catalogue_wrong"] == 1 and counts["model_wrong"] == 2 and counts["decisions"] == 3
    assert (counts["corrupted_rows"], counts["corrupted_rows_caught"]) == (2, 1)
