"""The synthetic listing-card generator: deterministic, small, truthful CSV, category only in the picture."""

from __future__ import annotations

import csv
import dataclasses
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from inspector import samples
from inspector.discovery import discover, read_source
from inspector.errors import InputError
from inspector.images import decode_image
from inspector.samples import (
    CARD_SIZES,
    CATEGORIES,
    CSV_COLUMNS,
    PLANTED_ERRORS,
    SampleProduct,
    draw_card,
    format_amount,
    format_price,
    generate_dataset,
    generate_samples,
    make_products,
)

REPO = Path(__file__).resolve().parents[1]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def shown_value(product: SampleProduct, column: str) -> str:
    """What the product's card shows for this truth.csv column."""
    return {
        "category3_code": product.category,
        "full_price": f"{product.price:.2f}",
        "currency_code": product.currency,
        "colour": product.colour,
    }[column]


def catalogue_value(product: SampleProduct, column: str) -> str:
    """What the sample catalogue (seed 0) says in `column`: what the card shows, unless an error was planted."""
    planted = [e for e in PLANTED_ERRORS if (e.file_name, e.column) == (product.file_name, column)]
    return planted[0].catalogue if planted else shown_value(product, column)


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("samples")
    generate_samples(folder, n=36, seed=0)
    return folder


def test_products_are_balanced_unique_and_deterministic():
    products = make_products(36, seed=0)
    assert len(products) == 36
    counts = Counter(product.category for product in products)
    assert set(counts) == set(CATEGORIES)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert len({product.product_code for product in products}) == 36
    assert len({product.file_name for product in products}) == 36
    assert {product.card_size for product in products} == set(CARD_SIZES)
    assert {product.currency for product in products} == {"USD", "EUR", "GBP", "JPY"}
    assert make_products(36, seed=0) == products
    assert make_products(12, seed=0) == products[:12]  # prefix-stable
    assert make_products(36, seed=1) != products
    for product in products:
        assert product.product_code in product.file_name
        assert product.file_name.rsplit(".", 1)[1] in {"jpg", "png", "webp"}
        assert product.price > 0


def test_only_shoes_have_size_prices_and_each_size_its_own_price():
    products = make_products(200, seed=3)
    for product in products:
        if product.category == "sneakers":
            prices = list(product.size_prices.values())
            assert 3 <= len(prices) <= 5
            assert len(set(prices)) == len(prices)
            assert product.price == min(prices)
            sizes = list(product.size_prices)
            assert sizes == sorted(sizes, key=float)
            assert all(re.fullmatch(r"\d+(\.5)?", size) for size in sizes)
        else:
            assert product.size_prices == {}


def test_titles_never_name_the_category():
    words = {
        "sneaker",
        "shoe",
        "bag",
        "shirt",
        "tee",
        "dress",
        "cap",
        "hat",
        "watch",
        "glasses",
        "coat",
        "scarf",
    }
    for product in make_products(300, seed=5):
        title = product.title.lower()
        assert not any(word in title for word in words), product.title


def test_price_formats():
    assert format_amount(1290, "USD") == "1,290.00"
    assert format_amount(1290, "EUR", european=True) == "1.290,00"
    assert format_amount(2.15, "EUR", european=True) == "2,15"
    assert format_amount(129000, "JPY") == "129,000"
    assert format_price(1290, "EUR", "{e} €") == "1.290,00 €"
    assert format_price(99.5, "USD", "US${n}") == "US$99.50"
    assert format_price(12900, "JPY", "¥{n}") == "¥12,900"


def test_generation_is_byte_identical_for_the_same_seed(generated, tmp_path):
    generate_samples(tmp_path, n=12, seed=0)  # 12 cards: every format and card size
    again = files_of(tmp_path)
    first = files_of(generated)
    assert len(again) == 14  # 12 cards, truth.csv and fields.toml
    assert all(again[name] == first[name] for name in again if name != "truth.csv")


def test_a_different_seed_gives_different_cards(generated, tmp_path):
    generate_samples(tmp_path, n=6, seed=1)
    assert read_csv(tmp_path / "truth.csv") != read_csv(generated / "truth.csv")[:6]


def test_files_are_small_and_mixed(generated):
    images = [path for path in generated.iterdir() if path.name not in ("truth.csv", samples.FIELDS_FILE)]
    assert len(images) == 36
    assert max(path.stat().st_size for path in images) < 60_000
    assert sum(path.stat().st_size for path in images) < 2_000_000
    formats = Counter(decode_image(path.read_bytes()).format for path in images)
    assert formats == {"JPEG": 12, "PNG": 12, "WEBP": 12}


def test_truth_csv_matches_the_images(generated):
    rows = read_csv(generated / "truth.csv")
    with open(generated / "truth.csv", encoding="utf-8") as handle:
        assert handle.readline().strip() == ",".join(CSV_COLUMNS)
    products = make_products(36, seed=0)
    assert len(rows) == 36
    for row, product in zip(rows, products, strict=True):
        assert row["local_image_path"] == product.file_name
        assert (generated / row["local_image_path"]).is_file()
        assert row["category3_code"] == catalogue_value(product, "category3_code")
        assert row["brand"] == product.brand and row["title"] == product.title
        assert row["full_price"] == catalogue_value(product, "full_price")
        assert re.fullmatch(r"\d+\.\d\d", row["full_price"])
        assert row["currency_code"] == catalogue_value(product, "currency_code")
        assert row["product_code"] == product.product_code
        if product.size_prices:
            assert re.fullmatch(r"[\d.]+:\d+\.\d\d(;[\d.]+:\d+\.\d\d)*", row["size_prices"])
            parsed = dict(item.split(":") for item in row["size_prices"].split(";"))
            assert {size: float(price) for size, price in parsed.items()} == product.size_prices
        else:
            assert row["size_prices"] == ""
        assert row["colour"] == catalogue_value(product, "colour")
        loaded = decode_image((generated / product.file_name).read_bytes())
        assert (loaded.width, loaded.height) == product.card_size


def test_discovery_finds_exactly_the_cards(generated):
    sources = discover([generated])
    assert [Path(source.location).name for source in sources] == sorted(
        product.file_name for product in make_products(36, seed=0)
    )
    assert read_source(sources[0]) == (generated / Path(sources[0].location).name).read_bytes()


def record_texts(monkeypatch) -> list[str]:
    """Every string drawn on a card goes through samples._draw_text: record them."""
    texts: list[str] = []
    original = samples._draw_text

    def recording(card, x, baseline, text, *args, **kwargs):
        texts.append(text)
        return original(card, x, baseline, text, *args, **kwargs)

    monkeypatch.setattr(samples, "_draw_text", recording)
    return texts


def test_cards_print_the_facts_but_never_the_category(monkeypatch):
    texts = record_texts(monkeypatch)
    for index, product in enumerate(make_products(60, seed=7)):
        texts.clear()
        draw_card(product, random.Random(index))
        printed = " ".join(texts)
        assert product.brand.upper() in printed
        assert all(word in printed for word in product.title.split())
        assert product.product_code in printed
        amount = format_amount(product.price, product.currency)
        european = format_amount(product.price, product.currency, european=True)
        assert amount in printed or european in printed
        for size in product.size_prices:
            assert size in texts
        lowered = printed.lower()
        assert product.category not in lowered
        assert not any(category in lowered for category in CATEGORIES), printed


def test_the_picture_shows_the_category():
    base = make_products(1, seed=0)[0]
    base = dataclasses.replace(base, size_prices={}, card_size=(640, 640), colour="Navy")
    cards = {
        category: draw_card(dataclasses.replace(base, category=category), random.Random(0))
        for category in CATEGORIES
    }
    for first in CATEGORIES:
        for second in CATEGORIES:
            if first < second:
                difference = ImageStat.Stat(ImageChops.difference(cards[first], cards[second])).mean
                assert sum(difference) > 6, (first, second)


def test_cards_use_the_product_colour():
    base = dataclasses.replace(make_products(1, seed=0)[0], category="backpack", card_size=(640, 640))
    for colour in ("Red", "Cobalt", "Forest Green"):
        card = draw_card(dataclasses.replace(base, colour=colour), random.Random(1))
        pixels = {rgb: count for count, rgb in card.getcolors(maxcolors=card.width * card.height)}
        assert pixels.get(samples.COLOURS[colour], 0) > 0.03 * card.width * card.height, colour


def test_the_catalogue_colour_is_what_the_picture_shows(generated):
    """The colour column is a visual attribute: on every card, the catalogue's colour covers at least 1% of the
    pixels (JPEG/WebP-compressed, within 24 per channel) and is one of the two most common named colours. The
    planted colour error is the exception: there the picture shows the true colour and not the catalogue's."""
    import numpy as np

    palette = np.array(list(samples.COLOURS.values()))
    names = list(samples.COLOURS)
    planted = {e.file_name: e for e in PLANTED_ERRORS if e.column == "colour"}
    assert len(planted) == 1
    for row in read_csv(generated / "truth.csv"):
        with Image.open(generated / row["local_image_path"]) as image:
            # Every 4th pixel each way (nearest, no blending): the same shares, 16 times less work.
            pixels = np.asarray(image.convert("RGB"), dtype=np.int16)[::4, ::4].reshape(-1, 1, 3)
        shares = (np.abs(pixels - palette).max(axis=2) <= 24).mean(axis=0)
        shown = [names[i] for i in np.argsort(-shares)[:2]]
        error = planted.get(row["local_image_path"])
        colour = error.true if error else row["colour"]
        assert shares[names.index(colour)] >= 0.01, row
        assert colour in shown, row
        if error:
            assert shares[names.index(error.catalogue)] < 0.01 and error.catalogue not in shown, row


def test_the_fields_file_declares_the_colour_and_finds_its_column(generated):
    from inspector.fields import BUILTIN_FIELDS, load_fields
    from inspector.truth import load_truth

    fieldset = load_fields(generated / samples.FIELDS_FILE)
    assert fieldset.names == (*BUILTIN_FIELDS.names, "colour")
    assert fieldset["colour"].values == tuple(samples.COLOURS)
    table = load_truth(generated / "truth.csv", fieldset=fieldset)
    assert table.columns["colour"] == "colour"
    assert [record.fields["colour"] for record in table.records] == [
        catalogue_value(p, "colour") for p in make_products(36, seed=0)
    ]


def test_draw_card_is_deterministic_and_sized():
    product = dataclasses.replace(make_products(1, seed=2)[0], card_size=(1000, 500))
    first = draw_card(product, random.Random(42))
    assert first.size == (1000, 500) and first.mode == "RGB"
    assert first.tobytes() == draw_card(product, random.Random(42)).tobytes()


def test_dataset_layout_and_workers_do_not_change_output(tmp_path):
    one = generate_dataset(tmp_path / "one", n=12, seed=4)
    two = generate_dataset(tmp_path / "two", n=12, seed=4, workers=2)
    assert files_of(tmp_path / "one") == files_of(tmp_path / "two")
    rows = read_csv(one)
    assert len(rows) == 12 and one.name == "truth.csv" and two.name == "truth.csv"
    assert all(
        row["local_image_path"].startswith("images/") and row["local_image_path"].endswith(".jpg")
        for row in rows
    )
    assert all((tmp_path / "one" / row["local_image_path"]).is_file() for row in rows)


def test_dataset_generation_is_fast(tmp_path):
    generate_dataset(tmp_path / "warm", n=10, seed=0)  # fonts and glyphs cached, as in a long run
    n = 60
    started = time.process_time()
    generate_dataset(tmp_path / "timed", n=n, seed=1)
    rate = n / (time.process_time() - started)
    # Measured at ~210-240 cards/s of CPU time on a shared 2-core machine; this only catches gross regressions.
    assert rate > 50, f"{rate:.0f} cards/s"


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="formats must be some of"):
        generate_samples(tmp_path, n=2, formats=("heic",))
    with pytest.raises(InputError, match="n must be >= 0"):
        make_products(-1, seed=0)
    csv_path = generate_samples(tmp_path / "empty", n=0)
    assert read_csv(csv_path) == []


def test_python_dash_m_inspector_samples_is_the_samples_command(tmp_path):
    """sample_images/README.md documents `python -m inspector.samples`: it runs `inspector samples` itself."""
    result = subprocess.run(
        [sys.executable, "-m", "inspector.samples", str(tmp_path / "out"), "-n", "3", "--seed", "9"],
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"3 sample images and {tmp_path / 'out' / 'truth.csv'} written\n"
    assert len(read_csv(tmp_path / "out" / "truth.csv")) == 3
    help_text = subprocess.run(
        [sys.executable, "-m", "inspector.samples", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert help_text.startswith("Usage: python -m inspector.samples [OPTIONS] FOLDER")


def test_samples_dataset_writes_training_data(tmp_path):
    from click.testing import CliRunner

    from inspector.cli import cli

    result = CliRunner().invoke(cli, ["samples", str(tmp_path / "d"), "-n", "5", "--dataset", "--processes", "2"])
    assert result.exit_code == 0, result.output
    assert result.output == f"5 training cards and {tmp_path / 'd' / 'truth.csv'} written\n"
    reference = generate_dataset(tmp_path / "reference", 5, 0)
    assert (tmp_path / "d" / "truth.csv").read_bytes() == reference.read_bytes()
    assert sorted(p.name for p in (tmp_path / "d" / "images").iterdir()) == sorted(
        p.name for p in (tmp_path / "reference" / "images").iterdir()
    )


@pytest.mark.parametrize("option", [["--world", "shifted"], ["--processes", "2"]])
def test_samples_options_of_training_data_need_dataset(tmp_path, option):
    from click.testing import CliRunner

    from inspector.cli import cli

    result = CliRunner().invoke(cli, ["samples", str(tmp_path / "d"), "-n", "2", *option])
    assert result.exit_code == 2
    assert result.output.endswith(f"Error: {option[0]} is for training data: add --dataset\n")
    assert not (tmp_path / "d").exists()


def test_samples_world_choices_are_the_worlds():
    from inspector.cli import samples as samples_command

    [world] = [param for param in samples_command.params if param.name == "world"]
    assert list(world.type.choices) == sorted(samples.WORLDS)


def test_committed_sample_images_are_what_the_generator_draws(generated):
    committed = REPO / "sample_images"
    if not (committed / "truth.csv").is_file():
        pytest.skip("sample_images/ not generated yet")
    assert (generated / "truth.csv").read_bytes() == (committed / "truth.csv").read_bytes()
    assert (generated / samples.FIELDS_FILE).read_bytes() == (committed / samples.FIELDS_FILE).read_bytes()
    for row in read_csv(generated / "truth.csv"):
        name = row["local_image_path"]
        fresh = decode_image((generated / name).read_bytes()).image
        stored = decode_image((committed / name).read_bytes()).image
        assert fresh.size == stored.size, name
        # Pixel-close rather than byte-equal: another Pillow/libjpeg/libwebp build may encode slightly differently.
        assert max(ImageStat.Stat(ImageChops.difference(fresh, stored)).mean) < 2.0, name


# ------------------------------------------------------------------------------------------ planted errors


def test_planted_errors_are_one_per_field_each_on_a_card_that_shows_the_true_value(monkeypatch, generated):
    """A wrong price, colour, category and currency, each on another card, none with a size table; the card
    prints the true price and currency and never the planted ones (the picture's colour is checked above)."""
    from inspector.fields import load_fields
    from inspector.truth import load_truth

    assert sorted(e.field for e in PLANTED_ERRORS) == ["category", "colour", "currency", "price"]
    assert len({e.file_name for e in PLANTED_ERRORS}) == len(PLANTED_ERRORS)
    fieldset = load_fields(generated / samples.FIELDS_FILE)
    columns = load_truth(generated / "truth.csv", fieldset=fieldset).columns
    products = make_products(36, seed=0)
    index = {product.file_name: i for i, product in enumerate(products)}
    texts = record_texts(monkeypatch)
    for error in PLANTED_ERRORS:
        product = products[index[error.file_name]]
        assert columns[error.field] == error.column
        assert product.size_prices == {} and product.category not in samples.SIZED_CATEGORIES
        assert error.true == shown_value(product, error.column) != error.catalogue
        texts.clear()
        draw_card(product, samples._card_rng(0, index[error.file_name]))
        printed = " ".join(texts)
        assert any(format_amount(product.price, product.currency, european) in printed for european in (0, 1))
        if error.field == "price":
            assert error.catalogue not in printed and error.catalogue.replace(".", ",") not in printed
        if error.field == "currency":
            others = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}
            assert any(mark in printed for mark in (error.true, others[error.true]))
            assert not any(mark in printed for mark in (error.catalogue, others[error.catalogue]))


def test_the_sample_catalogue_differs_from_the_cards_exactly_at_the_planted_errors(generated, tmp_path):
    clean = read_csv(generate_samples(tmp_path, n=36, seed=0, with_planted_errors=False))
    planted = read_csv(generated / "truth.csv")
    differences = {
        (row["local_image_path"], column): (row[column], wrong[column])
        for row, wrong in zip(clean, planted, strict=True)
        for column in CSV_COLUMNS
        if row[column] != wrong[column]
    }
    assert differences == {(e.file_name, e.column): (e.true, e.catalogue) for e in PLANTED_ERRORS}
    for row, product in zip(clean, make_products(36, seed=0), strict=True):
        for column in ("category3_code", "full_price", "currency_code", "colour"):
            assert row[column] == shown_value(product, column)


def test_training_data_never_has_planted_errors(tmp_path):
    """generate_dataset draws the same products (with these formats, the same file names) but a clean catalogue."""
    rows = read_csv(generate_dataset(tmp_path, n=30, seed=0, formats=("jpg", "png", "webp")))
    by_name = {Path(row["local_image_path"]).name: row for row in rows}
    products = {p.file_name: p for p in make_products(30, seed=0)}
    for error in PLANTED_ERRORS:
        shown = shown_value(products[error.file_name], error.column)
        assert by_name[error.file_name][error.column] == error.true == shown


def test_the_sample_readme_lists_each_planted_error():
    """sample_images/README.md has a table row `| image | field | catalogue | card |` per planted error."""
    readme = (REPO / "sample_images" / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \| (\w+) \| `([^`]*)` \| `([^`]*)` \|", readme, flags=re.MULTILINE)
    assert sorted(rows) == sorted((e.file_name, e.field, e.catalogue, e.true) for e in PLANTED_ERRORS)


def test_samples_command_names_the_planted_errors_or_leaves_them_out(tmp_path):
    from click.testing import CliRunner

    from inspector.cli import cli

    result = CliRunner().invoke(cli, ["samples", str(tmp_path / "a"), "-n", "20"])
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"20 sample images and {tmp_path / 'a' / 'truth.csv'} written; planted catalogue errors: "
        "price of 014_10355590.png, colour of 016_41493423.jpg, category of 019_93528168.jpg\n"
    )
    result = CliRunner().invoke(cli, ["samples", str(tmp_path / "b"), "-n", "20", "--no-planted-errors"])
    assert result.output == f"20 sample images and {tmp_path / 'b' / 'truth.csv'} written\n"
    products = make_products(20, seed=0)
    assert [row["colour"] for row in read_csv(tmp_path / "b" / "truth.csv")] == [p.colour for p in products]
    assert [row["colour"] for row in read_csv(tmp_path / "a" / "truth.csv")] == [
        catalogue_value(p, "colour") for p in products
    ]


def test_sample_product_fields():
    names = [field.name for field in dataclasses.fields(SampleProduct)]
    assert names[:8] == [
        "file_name",
        "brand",
        "title",
        "category",
        "price",
        "currency",
        "product_code",
        "size_prices",
    ]
    assert isinstance(draw_card(make_products(1, seed=0)[0], random.Random(0)), Image.Image)


def test_the_shifted_world_draws_brands_and_colours_the_default_never_draws(tmp_path):
    """Issue 17's bench: a catalogue the sample-trained model has not seen. Only brands and colours change; the
    default world is untouched (test_committed_sample_images_are_what_the_generator_draws checks its bytes)."""
    shifted = make_products(60, seed=0, world=samples.World.shifted())
    default = make_products(60, seed=0)
    assert {p.brand for p in shifted} == set(samples.SHIFTED_BRANDS)
    assert {p.colour for p in shifted} == set(samples.SHIFTED_COLOURS)
    assert not {p.brand for p in shifted} & set(samples.BRANDS)
    assert not set(samples.SHIFTED_COLOURS) & set(samples.COLOURS)
    assert [p.category for p in shifted] == [p.category for p in default]
    assert make_products(60, seed=0, world=samples.World()) == default
    for product in shifted[:10]:
        card = draw_card(dataclasses.replace(product, category="backpack", card_size=(640, 640)), random.Random(1))
        pixels = {rgb: count for count, rgb in card.getcolors(maxcolors=card.width * card.height)}
        assert pixels.get(samples.SHIFTED_COLOURS[product.colour], 0) > 0.03 * card.width * card.height
    from click.testing import CliRunner

    from inspector.cli import cli

    result = CliRunner().invoke(cli, ["samples", str(tmp_path / "out"), "-n", "4", "--dataset", "--world", "shifted"])
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "out" / "truth.csv")
    assert {row["brand"] for row in rows} <= set(samples.SHIFTED_BRANDS)
