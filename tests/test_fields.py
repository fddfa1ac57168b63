"""Fields declared as data: the built-ins, fields files, units, and custom fields end to end."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from inspector.cli import cli
from inspector.errors import InputError
from inspector.fields import BUILTIN_FIELDS, FieldSet, FieldSpec, ProductFields, load_fields
from inspector.parsing import parse_answer
from inspector.prompts import BUILTIN_PROMPTS, format_answer, get_prompt
from inspector.scoring import outside_values, score_answer, summarise
from inspector.truth import load_truth
from inspector.units import parse_quantity

FIELDS_TOML = """
[fields.colour]
kind = "category"
synonyms = ["color", "main colour"]
description = "the main colour of the product"
values = ["red", "navy", "beige", "black"]

[fields.material]
kind = "category"
synonyms = ["fabric"]
description = "the main material"

[fields.volume]
kind = "number"
unit = "ml"
synonyms = ["capacity"]
tolerance = 1
"""


@pytest.fixture
def fields_file(tmp_path: Path) -> Path:
    path = tmp_path / "fields.toml"
    path.write_text(FIELDS_TOML, encoding="utf-8")
    return path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- built-ins


def test_the_six_built_in_fields_are_six_declarations() -> None:
    assert BUILTIN_FIELDS.names == ("brand", "title", "category", "price", "currency", "size_prices")
    assert [spec.kind for spec in BUILTIN_FIELDS] == [
        "category",
        "text",
        "category",
        "price",
        "currency",
        "size_prices",
    ]
    assert BUILTIN_FIELDS["size_prices"].key == "sizes"


def test_the_default_prompt_is_derived_from_the_declarations_and_unchanged() -> None:
    # The text older versions asked: runs keep their key (and resume) only if it stays the same.
    assert BUILTIN_PROMPTS["extract"].text == (
        "Read this product listing image. Answer with one JSON object and nothing else, with these keys: "
        '"brand", "title" (the product name as written), "category", "price" (the full price as a number), '
        '"currency" (ISO 4217 code such as "USD"), "sizes" (an object mapping each size shown to its price as a '
        "number, {} if there is none). Use null for anything not shown."
    )


# ---------------------------------------------------------------------------------------------- files


def test_a_fields_file_extends_the_built_ins(fields_file: Path) -> None:
    fieldset = load_fields(fields_file)
    assert fieldset.names == (*BUILTIN_FIELDS.names, "colour", "material", "volume")
    assert fieldset["colour"].answer_keys == ("colour", "color", "main colour")
    assert fieldset["volume"].unit == "ml" and fieldset["volume"].tolerance == 1.0


def test_replace_keeps_only_the_file_s_fields_and_a_built_in_is_overridden_by_name(tmp_path: Path) -> None:
    only = write(tmp_path / "only.toml", 'replace = true\n[fields.colour]\nkind = "category"\n')
    assert load_fields(only).names == ("colour",)
    override = write(tmp_path / "o.toml", '[fields.title]\nthreshold = 0.9\nsynonyms = ["headline"]\n')
    title = load_fields(override)["title"]
    assert (title.kind, title.threshold, title.synonyms) == ("text", 0.9, ("headline",))
    assert load_fields(override).names == BUILTIN_FIELDS.names


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[fields.colour\n", "not valid TOML"),
        ('[fields.colour]\nkind = "colourful"\n', "field 'colour': kind 'colourful' is not one of"),
        ("[fields.colour]\nsynonyms = []\n", "field 'colour': missing key 'kind'"),
        ('[fields.colour]\nkind = "category"\nshade = 1\n', "field 'colour': unknown key 'shade'"),
        (
            '[fields.colour]\nkind = "category"\nsynonyms = "color"\n',
            "field 'colour': synonyms must be a list",
        ),
        ('[fields.colour]\nkind = "category"\nunit = "ml"\n', "field 'colour': unit applies to kind"),
        (
            '[fields.volume]\nkind = "number"\nunit = "parsecs"\n',
            "field 'volume': unit 'parsecs' is not known",
        ),
        ('[fields.volume]\nkind = "number"\ntolerance = -1\n', "field 'volume': tolerance must be"),
        ('[fields.Colour]\nkind = "category"\n', "field 'Colour': a field name is lower-case"),
        (
            '[fields.hue]\nkind = "category"\nsynonyms = ["brand"]\n',
            "field 'hue': synonym 'brand' already names",
        ),
        ('[fields.sizes2]\nkind = "size_prices"\n', "'size_prices' and 'sizes2' are both size_prices"),
        ("replace = 1\n[fields.a]\nkind = 'text'\n", "replace must be true or false"),
        ("colour = 1\n", "unknown top-level key 'colour'"),
    ],
)
def test_bad_fields_files_are_one_line_input_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError) as error:
        load_fields(write(tmp_path / "f.toml", text))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_missing_fields_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_fields(tmp_path / "nope.toml")


# ---------------------------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        ("500 ml", "ml", 500.0),
        ("0.5 l", "ml", 500.0),
        ("0,5 L", "ml", 500.0),
        ("50cl", "ml", 500.0),
        ("1.5 kg", "g", 1500.0),
        ("1500 g", "kg", 1.5),
        ("750", "ml", 750.0),  # a bare number is in the field's unit
        (250, "ml", 250.0),
        ("500 g", "ml", None),  # another dimension: ambiguous, left empty
        ("500 furlongs", "ml", None),
        ("about 500 ml", "ml", None),
        ("500 ml", "", None),  # a field without a unit can't say what 500 ml is
        ("12", "", 12.0),
        ("", "ml", None),
        # the number rules of prices (inspector.numbers): a single separator before three digits is ambiguous
        ("1,500 ml", "ml", None),
        ("1.500 g", "g", None),
        ("1,234.5 g", "g", 1234.5),
        ("1.234,5 g", "g", 1234.5),
        ("2,5 kg", "g", 2500.0),
        ("0,750 l", "ml", 750.0),
        ("1'500 ml", "ml", 1500.0),
    ],
)
def test_quantities_are_compared_after_unit_conversion(value, unit, expected) -> None:
    result = parse_quantity(value, unit)
    assert result == pytest.approx(expected) if expected is not None else result is None


# ---------------------------------------------------------------------------------------------- per layer


def test_custom_fields_are_parsed_from_json_and_label_lines(fields_file: Path) -> None:
    fieldset = load_fields(fields_file)
    json_answer = '{"brand": "Vireo", "color": "Navy", "fabric": "cotton", "capacity": "0.5 l"}'
    label_answer = "Brand: Vireo\nMain colour: red\nMaterial: wool\nVolume: 750 ml\nPrice: $20"
    assert parse_answer(json_answer, fieldset) == ProductFields(
        brand="Vireo", colour="Navy", material="cotton", volume=500.0
    )
    assert parse_answer(label_answer, fieldset) == ProductFields(
        brand="Vireo", colour="red", material="wool", volume=750.0, price=20.0, currency="USD"
    )
    assert parse_answer('{"volume": {"value": 1, "unit": "l"}}', fieldset) == ProductFields(volume=1000.0)
    assert parse_answer("The colour is beige and the material is linen.", fieldset) == ProductFields(
        colour="beige", material="linen"
    )
    # Without the declarations the same answer gives only the built-ins.
    assert parse_answer(json_answer) == ProductFields(brand="Vireo")


def test_custom_fields_are_scored_by_kind(fields_file: Path) -> None:
    fieldset = load_fields(fields_file)
    truth = ProductFields(colour="Navy", material="Cotton", volume=500.0)
    cases = [
        (ProductFields(colour="navy", material="wool", volume=500.5), ("correct", "wrong", "correct")),
        (ProductFields(colour="teal", volume=502.0), ("wrong", "missed", "wrong")),
    ]
    for predicted, outcomes in cases:
        results = {r.field: r for r in score_answer(predicted, truth, fieldset=fieldset)}
        assert (results["colour"].outcome, results["material"].outcome, results["volume"].outcome) == outcomes
    results = {r.field: r for r in score_answer(ProductFields(colour="teal"), truth, fieldset=fieldset)}
    # A category has no score (1.0 beside "wrong" read as a contradiction): outside_values flags it instead.
    assert results["colour"].score is None and results["colour"].outcome == "wrong"
    assert outside_values(fieldset.get("colour"), "teal") and not outside_values(fieldset.get("colour"), "RED")
    metrics = summarise(
        score_answer(ProductFields(colour="teal"), ProductFields(colour="purple"), fieldset=fieldset)
        + score_answer(ProductFields(colour="red"), truth, fieldset=fieldset),
        fieldset,
    )
    assert (metrics["colour"].outside_values, metrics["colour"].catalogue_outside_values) == (1, 1)
    assert results["volume"].expected == "500 ml"


def test_training_answers_carry_the_declared_fields_and_read_back(fields_file: Path) -> None:
    fieldset = load_fields(fields_file)
    values = ProductFields(brand="Vireo", price=10.0, colour="navy", material="cotton", volume=500.0)
    answer = format_answer(values, "json", fieldset)
    data = json.loads(answer)
    assert list(data)[-3:] == ["colour", "material", "volume"] and data["volume"] == 500.0
    for style in ("json", "original", "free"):
        assert parse_answer(format_answer(values, style, fieldset), fieldset) == values, style
    assert "Colour: navy" in format_answer(values, "free", fieldset)


def test_the_prompt_asks_for_exactly_the_declared_fields(fields_file: Path) -> None:
    text = get_prompt(fieldset=load_fields(fields_file)).text
    assert '"colour" (the main colour of the product; one of: red, navy, beige, black)' in text
    assert '"volume" (a number in ml)' in text
    only = FieldSet((load_fields(fields_file)["colour"],))
    assert re.findall(r'"(\w+)"', get_prompt(fieldset=only).text) == ["colour"]


def test_catalogue_columns_are_found_by_name_or_synonym(tmp_path: Path, fields_file: Path) -> None:
    csv_path = write(
        tmp_path / "cat.csv",
        "sku,Title,COLOR,Fabric,Capacity\nA1,Mug,Navy,stoneware,0.35 l\nA2,Jug,red,glass,1 kg\n",
    )
    table = load_truth(csv_path, fieldset=load_fields(fields_file))
    assert {k: table.columns[k] for k in ("colour", "material", "volume")} == {
        "colour": "COLOR",
        "material": "Fabric",
        "volume": "Capacity",
    }
    assert table.records[0].fields == ProductFields(
        title="Mug", colour="Navy", material="stoneware", volume=350.0
    )
    # "1 kg" is not a volume: left empty and counted as an unreadable cell.
    assert table.records[1].fields["volume"] is None
    assert [(p.column, p.value) for p in table.unparseable_cells] == [("Capacity", "1 kg")]


# ---------------------------------------------------------------------------------------------- end to end

ANSWERS = [
    '{"brand": "Vireo", "title": "Delphine Luxe", "category": "t-shirt", "color": "Navy", "fabric": "cotton", '
    '"capacity": "0.5 l"}',
    "Brand: Bellamy\nTitle: Harlow Modern in Grey\nMain colour: teal\nMaterial: wool\nVolume: 330 ml",
    '{"brand": "Maison Verre", "colour": "beige", "material": "linen", "volume": 250}',
]
IMAGES = ["001_94544451.jpg", "002_92253856.png", "003_64342316.webp"]
CATALOGUE = (
    "local_image_path,title,brand,category3_code,Color,Fabric,Capacity\n"
    "001_94544451.jpg,Delphine Luxe,Vireo,t-shirt,navy,Cotton,500 ml\n"
    "002_92253856.png,Harlow Modern in Grey,Bellamy,scarf,red,wool,0.33 l\n"
    "003_64342316.webp,Harlow Signature in Lilac,Maison Verre,cap,beige,,\n"
)


def test_custom_fields_end_to_end_through_a_fields_file_only(
    tmp_path: Path, sample_dir: Path, fields_file: Path
):
    images = tmp_path / "images"
    images.mkdir()
    for name in IMAGES:
        shutil.copy(sample_dir / name, images / name)
    catalogue = write(images / "catalogue.csv", CATALOGUE)
    answers = write(tmp_path / "answers.json", json.dumps(ANSWERS))
    db, report = tmp_path / "r.db", tmp_path / "report.html"
    args = ["scan", str(images), "--model", f"fake:{answers}", "--truth", str(catalogue), "--db", str(db)]
    result = CliRunner().invoke(cli, [*args, "--fields", str(fields_file), "--report", str(report)])
    assert result.exit_code == 0, result.output

    with sqlite3.connect(db) as conn:
        # The prompt asked for the custom fields, and the run keeps their declarations.
        prompt, settings = conn.execute("SELECT prompt_text, settings FROM runs").fetchone()
        assert '"colour" (the main colour of the product' in prompt and '"volume" (a number in ml)' in prompt
        assert [f["name"] for f in json.loads(settings)["fields"]][-3:] == ["colour", "material", "volume"]
        # Values are stored like the built-ins, long form, model and catalogue side by side.
        stored = conn.execute(
            "SELECT i.path, v.source, v.field, v.value, v.number FROM field_values v JOIN images i ON i.id = v.image_id "
            "WHERE v.field IN ('colour', 'material', 'volume') ORDER BY i.path, v.source, v.field"
        ).fetchall()
        by_key = {
            (Path(path).name, source, field): (value, number) for path, source, field, value, number in stored
        }
        assert by_key[("001_94544451.jpg", "predicted", "volume")] == ("500.0", 500.0)
        assert by_key[("002_92253856.png", "truth", "volume")] == ("330.0", 330.0)
        assert by_key[("002_92253856.png", "predicted", "colour")] == ("teal", None)
        assert ("003_64342316.webp", "truth", "material") not in by_key  # empty cell: no row
        # One query gives per-field accuracy for any field.
        accuracy = dict(
            conn.execute(
                "SELECT field, AVG(CASE WHEN outcome IN ('correct', 'both_empty') THEN 1.0 ELSE 0 END) "
                "FROM field_results WHERE run_id = 1 GROUP BY field"
            ).fetchall()
        )
    assert accuracy["colour"] == pytest.approx(2 / 3)  # navy = Navy, teal != red, beige = beige
    assert accuracy["material"] == pytest.approx(
        2 / 3
    )  # cotton = Cotton, wool = wool, linen vs none: spurious
    assert accuracy["volume"] == pytest.approx(2 / 3)  # 0.5 l = 500 ml, 330 ml = 0.33 l, 250 vs none

    # The report: columns, filters, metrics and a confusion table for the categorical ones, no template edit.
    html = report.read_text(encoding="utf-8")
    for name, label in (("colour", "Colour"), ("material", "Material"), ("volume", "Volume")):
        assert f'<th data-sort="{name}" data-field="{name}">{label}</th>' in html
        assert f'<option value="{name}">{label}</option>' in html
        assert f'<th scope="row">{name}</th>' in html
    assert (
        'data-field="colour"' in html
        and 'data-field="material"' in html
        and "Colour: catalogue × model" in html
    )
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    assert [group[0] for group in data["groups"]] == ["brand", "category", "colour", "material"]
    assert data["kinds"]["volume"] == ["number", "ml"]

    # `inspector report` on the run later knows its fields without the file.
    again = tmp_path / "again.html"
    assert CliRunner().invoke(cli, ["report", "--db", str(db), "--out", str(again)]).exit_code == 0
    assert '<th data-sort="volume" data-field="volume">Volume</th>' in again.read_text(encoding="utf-8")

    # `inspector export --field colour` knows the run's custom fields.
    exported = tmp_path / "colour.csv"
    result = CliRunner().invoke(cli, ["export", "1", "--db", str(db), "--out", str(exported), "--field", "colour"])
    assert result.exit_code == 0, result.output
    assert exported.read_text(encoding="utf-8").count("colour") == 3

    # The same scan with the fields file is the same run (resumes); without it, another run.
    rerun = CliRunner().invoke(cli, [*args, "--fields", str(fields_file), "--no-report"])
    assert "Run 1:" in rerun.output and "3 already done" in rerun.output
    plain = CliRunner().invoke(cli, [*args, "--no-report"])
    assert "Run 2:" in plain.output

    # Training labels follow the same file.
    from inspector.training.config import TrainConfig
    from inspector.training.data import load_training_data

    data = load_training_data(TrainConfig(truth=str(catalogue), fields_file=str(fields_file), val_fraction=0))
    labels = {Path(e.location).name: json.loads(e.answer) for e in data.train}
    assert labels["002_92253856.png"]["colour"] == "red" and labels["002_92253856.png"]["volume"] == 330.0
    assert labels["003_64342316.webp"]["material"] is None
    assert {"colour", "material", "volume"} <= set(data.scored_fields)


def test_scan_help_mentions_fields() -> None:
    result = CliRunner().invoke(cli, ["scan", "--help"])
    assert "--fields" in result.output and "docs/fields.md" in result.output


def test_a_bad_fields_file_is_a_one_line_cli_error(tmp_path: Path, sample_dir: Path) -> None:
    bad = write(tmp_path / "f.toml", '[fields.colour]\nkind = "hue"\n')
    result = CliRunner().invoke(cli, ["scan", str(sample_dir), "--model", "fake:x", "--fields", str(bad)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {bad}: field 'colour': kind 'hue' is not one of text, category, price, currency, number, size_prices."
    ]


# ---------------------------------------------------------------------------------------------- old databases

OLD_DB = Path(__file__).parent / "data" / "old_db"


def test_a_database_written_before_fields_opens_reports_and_resumes(tmp_path: Path, sample_dir: Path) -> None:
    from inspector.scan import ScanConfig
    from inspector.store import open_store

    db = tmp_path / "old.db"
    shutil.copy(OLD_DB / "before-fields.db", db)
    with open_store(db) as store:
        info = store.get_run("before-fields")
        assert info.fields == BUILTIN_FIELDS  # the old run stored no fields: it read the built-ins
        rows = {Path(row["path"]).name: row for row in store.run_rows(info.id)}
        assert rows["001_94544451.jpg"]["predicted"]["brand"] == "Vireo"
        assert rows["002_92253856.png"]["predicted"]["price"] == 4100.0
        assert rows["003_64342316.webp"]["predicted"]["size_prices"] == {"M": 960.0}
        assert rows["002_92253856.png"]["truth"]["fields"]["currency"] == "JPY"
        assert store.run_metrics(info.id)["category"].accuracy == pytest.approx(2 / 3)
        old_key = info.key

    # The same scan with no fields file has the key the run-key rules give it without any fields (the fields add
    # nothing to the key then, nor do opt-in settings not given). Those rules changed in 9f81ae6 (every ScanConfig
    # setting counts), so a run written before that has another key and a rerun starts a new run; with its key it
    # resumes, as below.
    old_config = ScanConfig(
        inputs=["/tmp/oldfx/imgs"],
        model="fake:answers.json",
        truth="/tmp/oldfx/imgs/truth.csv",
        run_name="before-fields",
    )
    assert old_config.run_key(old_config.scan_prompt()) == "22979cc81b3b41d01ae3e6e286799529"

    # Resume it here: the run's inputs live in tmp_path now, so its key is moved with them.
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("001_94544451.jpg", "002_92253856.png", "003_64342316.webp", "004_86144218.jpg"):
        shutil.copy(sample_dir / name, images / name)
    shutil.copy(OLD_DB / "truth.csv", images / "truth.csv")
    answers = write(tmp_path / "answers.json", json.dumps(['{"brand": "Saffron Lane", "price": 81.95}']))
    config = ScanConfig(
        inputs=[str(images)],
        model=f"fake:{answers}",
        truth=str(images / "truth.csv"),
        run_name="before-fields",
    )
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET key = ? WHERE key = ?", (config.run_key(config.scan_prompt()), old_key))
    args = ["scan", str(images), "--model", f"fake:{answers}", "--truth", str(images / "truth.csv")]
    report = tmp_path / "report.html"
    result = CliRunner().invoke(
        cli, [*args, "--db", str(db), "--run-name", "before-fields", "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    assert "Run 1: 1 images answered" in result.output and "3 already done" in result.output
    html = report.read_text(encoding="utf-8")
    assert "Saffron Lane" in html and "Delphine Luxe" in html  # the new image and the old ones
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM predictions WHERE run_id = 1").fetchone() == (4,)
        # Old rows were copied into the long-form table by the migration; new rows are written to both.
        assert conn.execute(
            "SELECT count(DISTINCT image_id) FROM field_values WHERE run_id = 1 AND source = 'predicted' "
            "AND field = 'brand'"
        ).fetchone() == (4,)
        assert conn.execute("SELECT brand FROM predictions WHERE path LIKE '%004_%'").fetchone() == (
            "Saffron Lane",
        )


def test_report_fields_shows_other_declarations_of_a_stored_run(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copy(OLD_DB / "before-fields.db", db)
    labels = write(tmp_path / "labels.toml", '[fields.title]\nlabel = "Product name"\n')
    out = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--out", str(out), "--fields", str(labels)])
    assert result.exit_code == 0, result.output
    assert '<th data-sort="title" data-field="title">Product name</th>' in out.read_text(encoding="utf-8")


@pytest.fixture
def custom_run(tmp_path: Path, sample_dir: Path, fields_file: Path) -> Path:
    """A database with run 1: three images scanned with FIELDS_TOML (colour, material, volume in ml) and prices."""
    images = tmp_path / "images"
    images.mkdir()
    for name in IMAGES:
        shutil.copy(sample_dir / name, images / name)
    catalogue = write(images / "catalogue.csv", CATALOGUE)
    answers = [answer.replace('"brand": "Vireo"', '"brand": "Vireo", "price": 12.5') for answer in ANSWERS]
    model = write(tmp_path / "answers.json", json.dumps(answers))
    db = tmp_path / "r.db"
    result = CliRunner().invoke(
        cli, ["scan", str(images), "--model", f"fake:{model}", "--truth", str(catalogue), "--db", str(db),
              "--fields", str(fields_file), "--no-report"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return db


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('[fields.price]\nkind = "category"\n', "field 'price' is category in that file, but run 1 stored it as price"),
        ('[fields.category]\nkind = "number"\n', "field 'category' is number in that file, but run 1 stored it as category"),
        ('[fields.colour]\nkind = "text"\n', "field 'colour' is text in that file, but run 1 stored it as category"),
        ('[fields.volume]\nkind = "number"\nunit = "g"\n',
         "field 'volume' is number in g in that file, but run 1 stored it as number in ml"),
    ],
)  # fmt: skip
def test_report_fields_cannot_change_what_a_stored_field_is(tmp_path: Path, custom_run: Path, table, error) -> None:
    """Issue 15: a --fields file that changed a stored field's kind crashed the report (AttributeError in
    _confusion) or showed stored values read as another kind. It may relabel them, not change their kind or unit."""
    other = write(tmp_path / "other.toml", table)
    out = tmp_path / "again.html"
    result = CliRunner().invoke(cli, ["report", "--db", str(custom_run), "--out", str(out), "--fields", str(other)])
    assert result.exit_code == 1, result.output
    assert result.output == (
        f"Error: --fields: {error}; a report's --fields can relabel stored fields, not change their kind or "
        "unit (scan with the file to read them so)\n"
    )
    assert not out.exists()
    relabel = write(
        tmp_path / "labels.toml", '[fields.volume]\nkind = "number"\nunit = "ml"\nlabel = "Capacity"\n[fields.price]\nlabel = "Cost"\n'
    )
    result = CliRunner().invoke(cli, ["report", "--db", str(custom_run), "--out", str(out), "--fields", str(relabel)])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------------------------------------- issue 15, smaller


@pytest.mark.parametrize(
    ("table", "name", "column"),
    [
        ('[fields.path]\nkind = "text"\n', "path", "path"),
        ('[fields.key]\nkind = "text"\n', "key", "key"),
        ('[fields.image]\nkind = "category"\n', "image", "path"),
        ('[fields.file_path]\nkind = "text"\nkey = "file"\n', "file", "path"),
    ],
)
def test_a_field_cannot_take_the_name_of_the_image_locating_columns(
    tmp_path: Path, sample_dir: Path, table: str, name: str, column: str
) -> None:
    """Issue 15: a field named `path` took over the catalogue's image column (0 of 36 images matched, silently),
    and the advice `--truth-columns path=COLUMN` could not tell the field from the image column."""
    fields = write(tmp_path / "f.toml", table)
    field = re.search(r"fields\.(\w+)", table).group(1)
    result = CliRunner().invoke(cli, ["scan", str(sample_dir), "--model", "fake:x", "--fields", str(fields)])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {fields}: field {field!r}: {name!r} names the catalogue column that locates each image "
        f"(--truth-columns {column}=COLUMN); give the field another name and key.\n"
    )


def test_overriding_a_built_in_s_kind_keeps_its_synonyms_and_columns(tmp_path: Path, sample_dir: Path) -> None:
    """Issue 15: `[fields.price] kind = "number"` dropped the price's synonyms and columns, so the catalogue's
    full_price and answers' "Full Price:" were no longer read. What does not depend on the kind is kept."""
    fieldset = load_fields(write(tmp_path / "f.toml", '[fields.price]\nkind = "number"\ntolerance = 0.5\n'))
    price, builtin = fieldset["price"], BUILTIN_FIELDS["price"]
    assert (price.kind, price.tolerance) == ("number", 0.5)
    assert (price.synonyms, price.columns, price.description) == (builtin.synonyms, builtin.columns, builtin.description)
    table = load_truth(sample_dir / "truth.csv", fieldset=fieldset)
    assert table.columns["price"] == "full_price"
    assert table.records[0].fields["price"] == 186.0
    assert parse_answer("Full Price: 12.5", fieldset)["price"] == 12.5
    # Kind-specific settings of the built-in do not carry over: the brand's phrases read brands, not titles.
    brand = load_fields(write(tmp_path / "b.toml", '[fields.brand]\nkind = "text"\n'))["brand"]
    assert brand.synonyms == BUILTIN_FIELDS["brand"].synonyms and brand.phrases == ()


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (1e-7, "0.0000001 ml"),
        (-0.0, "0 ml"),
        (0.0, "0 ml"),
        (1.25e-5, "0.0000125 ml"),
        (1e16, "10000000000000000 ml"),
        (123456789.0, "123456789 ml"),
        (0.5, "0.5 ml"),
        (1234.5678, "1234.57 ml"),
        (-2.5e-9, "-0.0000000025 ml"),
    ],
)
def test_quantities_are_shown_without_rounding_to_zero_or_a_minus_zero(value: float, shown: str) -> None:
    """Issue 15: 1e-7 ml was shown as "0 ml" and -0 as "-0 ml"."""
    from inspector.units import format_quantity

    assert format_quantity(value, "ml") == shown


@pytest.mark.parametrize(
    ("json_value", "expected"),
    [
        ("0.00005", 0.00005),
        ("5e-5", 0.00005),
        ("1e16", 1e16),
        ("1E16", 1e16),
        ("12345678901234567890", 12345678901234567890.0),
        ('{"value": 1e16, "unit": "l"}', 1e19),
        ('{"value": 0.00005, "unit": "l"}', 0.05),
        ("-0.0", 0.0),
    ],
)
def test_json_numbers_in_number_fields_are_read_in_any_notation(json_value: str, expected: float) -> None:
    """Issue 15: a JSON number that Python writes with an exponent (0.00005, 1e16) was dropped silently."""
    fieldset = FieldSet((*BUILTIN_FIELDS, FieldSpec("volume", "number", unit="ml")))
    value = parse_answer(f'{{"volume": {json_value}}}', fieldset)["volume"]
    assert value == pytest.approx(expected, rel=1e-12) and str(value) != "-0.0"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[fields.colour]\nkind = "category"\nsynonyms = ["---"]\n', "synonym '---'"),
        ('[fields.colour]\nkind = "category"\nsynonyms = ["hue", " / "]\n', "synonym ' / '"),
        ('[fields.colour]\nkind = "category"\nkey = "..."\n', "key '...'"),
        ('[fields.colour]\nkind = "category"\ncolumns = ["Colour", "--"]\n', "column '--'"),
    ],
)
def test_a_synonym_key_or_column_without_letters_or_digits_is_refused(tmp_path: Path, table: str, message: str):
    """Issue 15: a synonym like "---" became an empty key, which matched every key that normalises to nothing."""
    path = write(tmp_path / "f.toml", table)
    with pytest.raises(InputError) as error:
        load_fields(path)
    assert str(error.value) == (
        f"{path}: field 'colour': {message} has no letter or digit (a-z, 0-9) to match answers and catalogue "
        "headers by; remove it or spell it with some."
    )
