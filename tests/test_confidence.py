"""Per-token log-probabilities from the generate() path, where each value sits in an answer, and the per-field
confidence computed from them (the product of the value tokens' probabilities)."""

from __future__ import annotations

import math

import pytest

from inspector.backends.base import Generation
from inspector.confidence import field_confidences, field_values, with_confidence
from inspector.fields import FieldResult, ProductFields
from inspector.parsing import parse_answer, value_spans


@pytest.mark.slow
def test_generate_path_log_probs_equal_log_softmax_of_a_forward_pass(tiny_llava):
    """Tiny LLaVA through transformers' generate(), batched with left padding (prompts of different lengths)."""
    import torch
    from PIL import Image

    from inspector.backends.base import GenerationSettings
    from inspector.backends.hf import HFBackend

    backend = HFBackend(str(tiny_llava), device="cpu")
    assert backend.fast_decoder is None
    images = [Image.new("RGB", (64, 48), "red"), Image.new("RGB", (30, 90), "blue")]
    prompts = ["Price?", "Give the brand, the title and the price of this product as JSON."]
    assert backend.prepare(images, prompts)["attention_mask"][0, 0] == 0, "row 0 must be left padded"
    answers = backend.generate(images, prompts, GenerationSettings(max_new_tokens=9))
    for image, prompt, answer in zip(images, prompts, answers, strict=True):
        assert answer.has_tokens and len(answer.token_ids) == len(answer.logprobs) == len(answer.pieces)
        assert "".join(answer.pieces).strip() == answer.text
        inputs = backend.prepare([image], [prompt])
        new = torch.tensor(answer.token_ids)[None]
        ids = torch.cat([inputs["input_ids"], new], dim=1)
        with torch.inference_mode():
            logits = backend.model(
                input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=inputs["pixel_values"]
            ).logits[0]
        start = inputs["input_ids"].shape[1] - 1
        steps = torch.log_softmax(logits[start : start + new.shape[1]].float(), -1)
        expected = steps.gather(-1, new[0][:, None])[:, 0].tolist()
        assert list(answer.logprobs) == pytest.approx(expected, abs=2e-4)


def test_answers_without_tokens_have_no_confidence():
    answer = Generation('{"category": "Scarves"}')
    assert not answer.has_tokens
    assert field_confidences(answer, parse_answer(answer.text)) == {}


def tokens(*pieces_and_probabilities: tuple[str, float]) -> Generation:
    pieces = tuple(piece for piece, _ in pieces_and_probabilities)
    logprobs = tuple(math.log(p) for _, p in pieces_and_probabilities)
    return Generation("".join(pieces).strip(), pieces, logprobs)


def test_confidence_is_the_product_of_the_value_tokens_probabilities():
    answer = tokens(
        (" {", 0.99), ('"category', 0.9), ('":', 0.99), (' "', 0.98), ("Sc", 0.5), ("arves", 0.8), ('",', 0.97),
        (' "price', 0.9), ('":', 0.99), (" 4", 0.6), ("50", 0.7), ("}", 0.99), ("<|end|>", 0.95),
    )  # fmt: skip
    parsed = parse_answer(answer.text)
    assert (parsed.category, parsed.price) == ("Scarves", 450.0)
    confidences = field_confidences(answer, parsed)
    assert confidences == {"category": pytest.approx(0.5 * 0.8), "price": pytest.approx(0.6 * 0.7)}


@pytest.mark.parametrize(
    ("pieces", "value", "expected"),
    [
        # a token holding the opening quote and the value's first letters counts whole
        ([('"', 1.0), ('"Sc', 0.5), ("arves", 0.8), ('"', 0.3)], (1, 8), 0.4),
        # the byte tokens of one character: the empty pieces belong to the token completing it
        ([("a", 1.0), ("", 0.9), ("€", 0.5), ("b", 0.2)], (1, 2), 0.45),
        # leading whitespace stripped from the answer shifts every token
        ([("  ", 0.1), ("ab", 0.5), ("c", 0.25)], (0, 2), 0.5),
    ],
)
def test_span_confidence_covers_every_token_overlapping_the_value(pieces, value, expected):
    answer = tokens(*pieces)
    assert answer.span_confidence(*value) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ('{"brand": "Acme", "category": "Scarves"}', {"brand": "Acme", "category": "Scarves"},
         {"brand": "Acme", "category": "Scarves"}),
        # a value written twice is taken where its own label stands before it
        ('{"title": "Acme 450 Scarf", "price": 450}', {"price": 450.0}, {"price": "450"}),
        ("Sizes: 6.5: $115, 7: $115\nSize 7 price: 115", {"size_price:7": 115.0}, {"size_price:7": "115"}),
        # else where the model first wrote it
        ("Acme scarf, $450. Only $450!", {"price": 450.0}, {"price": "450"}),
        ("Price: 1.290,00 €", {"price": 1290.0, "currency": "EUR"}, {"price": "1.290,00", "currency": "€"}),
        ('{"title": "Caf\\u00e9 Mug"}', {"title": "Café Mug"}, {"title": "Caf\\u00e9 Mug"}),
        ("brand: ACME", {"brand": "Acme"}, {"brand": "ACME"}),
        # values that are not written in the answer get no span
        ("The price is fair.", {"price": 12.0, "brand": None}, {}),
    ],
)  # fmt: skip
def test_value_spans_locate_each_value_in_the_raw_answer(text, values, expected):
    spans = value_spans(text, values)
    assert {name: text[start:end] for name, (start, end) in spans.items()} == expected


def test_second_occurrence_under_its_label_is_chosen():
    text = '{"title": "Acme 450 Scarf", "price": 450}'
    assert value_spans(text, {"price": 450.0})["price"][0] == text.rindex("450")


def test_field_values_name_per_size_prices_like_field_results():
    parsed = ProductFields(brand="Acme", price=10.0, size_prices={"6.5": 115.0})
    values = field_values(parsed)
    assert values["brand"] == "Acme" and values["size_price:6.5"] == 115.0 and "size_prices" not in values


def test_only_results_with_a_predicted_value_get_a_confidence():
    results = [
        FieldResult("brand", "wrong", "Acme", "Nike"),
        FieldResult("title", "missed", None, "Scarf"),
        FieldResult("price", "correct", "450", "450"),
    ]
    with_confidence(results, {"brand": 0.9, "title": 0.5})
    assert [r.confidence for r in results] == [0.9, None, None]


def test_scan_stores_each_field_results_confidence(confident_scan):
    import sqlite3

    with sqlite3.connect(confident_scan["db"]) as connection:
        rows = connection.execute(
            "select p.path, f.field, f.outcome, round(f.confidence, 6) from field_results f"
            " join predictions p on p.id = f.prediction_id where f.field in ('category', 'price', 'title')"
            " order by p.path, f.id"
        ).fetchall()
    names = [source.path.name for source in confident_scan["sources"]]
    by_image = {(name.split("/")[-1], field): (outcome, confidence) for name, field, outcome, confidence in rows}
    assert [by_image[(name, "category")] for name in names] == [
        ("correct", 0.99), ("wrong", 0.97), ("wrong", 0.55), ("wrong", 0.2)
    ]
    assert by_image[(names[3], "price")] == ("wrong", 0.9)
    # the model gave no title: no value, no confidence (NULL), never a guess
    assert {by_image[(name, "title")] for name in names} == {("missed", None)}


def test_fake_answers_file_rejects_a_confidence_for_a_field_it_does_not_answer(tmp_path):
    import json

    from inspector.backends.base import BackendError
    from inspector.backends.fake import FakeBackend

    path = tmp_path / "answers.json"
    path.write_text(json.dumps({"answers": [{"answer": {"brand": "Acme"}, "confidence": {"price": 0.5}}]}))
    with pytest.raises(BackendError, match=r"answer 1: it gives no value for price, so it cannot have a confidence"):
        FakeBackend.from_file(path)


def result_rows(*results: tuple[str, str, float | None]) -> list[dict]:
    return [
        {"field_results": [{"field": f, "outcome": o, "predicted": "x", "confidence": c} for f, o, c in results]}
    ]


def test_accuracy_at_coverage_ranks_each_fields_values_by_confidence():
    from inspector.review import accuracy_at_coverage

    rows = result_rows(
        ("category", "correct", 0.99), ("category", "correct", 0.9), ("category", "wrong", 0.8),
        ("category", "correct", 0.4), ("category", "wrong", None),
        ("size_price:6.5", "wrong", 0.3), ("size_price:7", "correct", 0.7),
    )  # fmt: skip
    table = {row["field"]: row for row in accuracy_at_coverage(rows, coverages=(25, 50, 75, 100))}
    category = table["category"]
    assert (category["n"], category["unranked"]) == (4, 1)
    assert [(p["coverage"], p["n"], p["accuracy"]) for p in category["points"]] == [
        (25, 1, 1.0), (50, 2, 1.0), (75, 3, pytest.approx(2 / 3)), (100, 4, 0.75)
    ]
    assert [p["accuracy"] for p in table["size_price"]["points"]] == [1.0, 1.0, 0.5, 0.5]


@pytest.mark.parametrize(
    "text",
    ['{"brand": "Burberry", "price": 450.00, "currency": "GBP"}', " Price: £450, or 3€ — café", "Brand: Acme\nPrice: $10"],
)
def test_token_pieces_add_up_to_the_decoded_answer_with_the_real_tokenizer(phi35v_dir, text):
    """Cached per-token pieces where they add up; the exact sliding window where they do not (multi-byte)."""
    from transformers import AutoTokenizer

    from inspector.backends.hf import TokenPieces, token_pieces

    tokenizer = AutoTokenizer.from_pretrained(phi35v_dir)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [32007]  # <|end|>: a special token, no text
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    pieces = TokenPieces(tokenizer)(ids, decoded)
    assert pieces is not None and len(pieces) == len(ids) and pieces[-1] == ""
    assert "".join(pieces).strip() == decoded.strip()
    assert "".join(token_pieces(tokenizer, ids)) == decoded
