"""Field kinds as a table (`inspector.kinds`): one object per kind, one module per kind, and a new kind is one class
in one file: no other module names kinds."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import inspector
from inspector.cli import cli
from inspector.errors import InputError
from inspector.fields import BUILTIN_FIELDS, FieldSet, load_fields
from inspector.kinds import kind_names, kind_of, registered_kinds, unregister_kind
from inspector.parsing import parse_answer, read_answer
from inspector.prompts import format_answer, get_prompt
from inspector.scoring import score_answer, summarise
from inspector.truth import load_truth

PACKAGE = Path(inspector.__file__).parent

# ---------------------------------------------------------------------------------------------- the table


def test_each_built_in_kind_is_one_registered_object_in_its_own_module():
    assert kind_names() == ("text", "category", "price", "currency", "number", "size_prices")
    for kind in registered_kinds():
        assert type(kind).__module__ == f"inspector.kinds.{kind.name}"
        assert kind_of(kind.name) is kind
    assert [kind_of(spec).name for spec in BUILTIN_FIELDS] == [spec.kind for spec in BUILTIN_FIELDS]
    # Traits the call sites ask instead of naming kinds.
    assert [k.name for k in registered_kinds() if k.single] == ["currency", "size_prices"]
    assert [k.name for k in registered_kinds() if k.numeric] == ["price", "number", "size_prices"]
    assert [k.name for k in registered_kinds() if k.categorical] == ["category"]
    assert [k.name for k in registered_kinds() if k.free_phrases] == ["text", "category", "number"]
    assert {k.name: k.declaration_keys for k in registered_kinds() if k.declaration_keys} == {
        "category": ("values",),
        "number": ("unit",),
    }


def test_an_unknown_kind_is_a_one_line_input_error_listing_the_known_ones(tmp_path):
    with pytest.raises(InputError) as raised:
        kind_of("boolean")
    assert str(raised.value) == (
        "kind 'boolean' is not one of text, category, price, currency, number, size_prices."
    )
    fields = tmp_path / "fields.toml"
    fields.write_text('[fields.gift]\nkind = "boolean"\n', encoding="utf-8")
    with pytest.raises(InputError) as raised:
        load_fields(fields)
    assert str(raised.value) == (
        f"{fields}: field 'gift': kind 'boolean' is not one of text, category, price, currency, number, size_prices."
    )


#: A branch on a field kind's name: `spec.kind == "price"`, `kind in ("price", "number")`, a `*_KINDS` tuple.
_NAMES = r"(?:text|category|price|currency|number|size_prices)"
KIND_BRANCH = re.compile(
    r"""\.kind\s*(?:==|!=)\s*["']|["']\s*(?:==|!=)\s*\w*\.kind\b"""
    rf"""|\bkind\s*(?:==|!=)\s*["']{_NAMES}["']|\bkind\s+(?:not\s+)?in\s*[(\[{{]\s*["']{_NAMES}["']"""
    r"""|\b(?!EXPORT_)[A-Z_]*_KINDS\b|\bKINDS\b|\bof_kind\("""
)


def test_the_branch_pattern_finds_kind_if_chains():
    for line in (
        'if spec.kind == "size_prices":',
        "elif spec.kind in ('text', 'category'):",
        'if kind in ("price", "number"):',
        "for kind in SINGLE_KINDS:",
        "fieldset.of_kind('text')",
        'if "price" == spec.kind:',
        'if kind == "currency":',
    ):
        assert KIND_BRANCH.search(line), line
    for line in (
        'table = fieldset.first("size_prices")',
        "EXPORT_KINDS = (RESULTS,)",
        "kind_of(spec).amount",
        'if kind not in ("su", "longrope", "yarn"):',  # a rope scaling kind, not a field kind
    ):
        assert not KIND_BRANCH.search(line), line


def test_no_module_outside_the_kinds_branches_on_a_kind_name():
    """What differs between kinds is asked of the kind object (`kind_of(spec)`); looking up the field that plays
    a role (`fieldset.first("price")`: the main price, the size table) is not a branch."""
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if PACKAGE / "kinds" not in path.parents
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if KIND_BRANCH.search(line)
    ]
    assert found == []


@pytest.mark.parametrize(
    "module", ["inspector.kinds", "inspector.kinds.price", "inspector.fields", "inspector.values", "inspector.parsing"]
)
def test_any_of_the_layers_can_be_imported_first(module):
    """The kinds sit between `inspector.values` and `inspector.fields`/`inspector.parsing`: whichever a program
    imports first, the others load in the right order (a package's `__init__` can hide a cycle from the graph)."""
    code = f"import {module}; from inspector.kinds import kind_names; print(len(kind_names()))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "6", "")


# ---------------------------------------------------------------------------------------------- a new kind

TOY_KIND = '''
"""``boolean``: yes or no."""

from inspector.fieldspec import FieldResult
from inspector.kinds import CellReading, FieldKind, register_kind
from inspector.matching import bucket, shown

_WORDS = {"yes": "yes", "true": "yes", "y": "yes", "no": "no", "false": "no", "n": "no"}


def _read(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _WORDS.get(str(value).strip().casefold()) if value is not None else None


@register_kind
class Boolean(FieldKind):
    name = "boolean"
    free_phrases = True

    def read_json(self, spec, value, found, reading):
        if _read(value):
            found.text.setdefault(spec.name, _read(value))
        return True

    def read_label(self, spec, line, found):
        if _read(line.value):
            found.offer_text(spec.name, line.rank, _read(line.value))

    def answer_value(self, spec, found, currency):
        return _read(found.text.get(spec.name))

    def read_cell(self, spec, raw, currency):
        if _read(raw) is None:
            return CellReading(None, ((raw, "not yes or no", spec.name),))
        return CellReading(_read(raw))

    def hint(self, spec):
        return ("yes or no",)

    def compare(self, spec, predicted, expected, settings):
        equal = predicted == expected
        return FieldResult(spec.name, bucket(predicted, expected, equal), shown(predicted), shown(expected))
'''

FIELDS = '[fields.gift_box]\nkind = "boolean"\nsynonyms = ["gift wrapped"]\ndescription = "whether a gift box is shown"\n'


@pytest.fixture()
def boolean_kind(tmp_path):
    """The toy kind, written as one file and imported: nothing else in the package changes."""
    path = tmp_path / "boolean.py"
    path.write_text(TOY_KIND, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("toy_boolean_kind", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield kind_of("boolean")
    unregister_kind("boolean")
    assert "boolean" not in kind_names()


def test_a_new_kind_is_one_class_in_one_file(boolean_kind, tmp_path):
    fieldset = load_fields(_write(tmp_path / "fields.toml", FIELDS))
    assert fieldset.names[-1] == "gift_box" and kind_of(fieldset["gift_box"]) is boolean_kind
    # The prompt hints it.
    assert '"gift_box" (whether a gift box is shown; yes or no)' in get_prompt(fieldset=fieldset).text
    # Answers are read: JSON, "Label: value" lines (the best synonym), free sentences.
    assert parse_answer('{"brand": "Acme", "gift_box": true}', fieldset)["gift_box"] == "yes"
    assert parse_answer("Brand: Acme\nGift wrapped: No", fieldset)["gift_box"] == "no"
    assert parse_answer("The gift box is yes.", fieldset)["gift_box"] == "yes"
    assert parse_answer('{"gift_box": "maybe"}', fieldset)["gift_box"] is None
    # The canonical training answer reads back to the same value.
    assert parse_answer(format_answer(parse_answer('{"gift_box": "y"}', fieldset), "free", fieldset), fieldset)[
        "gift_box"
    ] == "yes"
    # Catalogue cells are read; one that is not yes or no is a problem, never a guess.
    catalogue = _write(tmp_path / "c.csv", "local_image_path,brand,gift_box\na.jpg,Acme,TRUE\nb.jpg,Acme,perhaps\n")
    table = load_truth(catalogue, fieldset=fieldset)
    rows = sorted(table.records, key=lambda record: record.row_number)
    assert [row.fields["gift_box"] for row in rows] == ["yes", None]
    assert [(p.column, p.value, p.problem, p.field_name) for p in rows[1].problems] == [
        ("gift_box", "perhaps", "not yes or no", "gift_box")
    ]
    # It is scored.
    results = score_answer(parse_answer('{"gift_box": "no"}', fieldset), rows[0].fields, fieldset=fieldset)
    gift = next(result for result in results if result.field == "gift_box")
    assert (gift.outcome, gift.predicted, gift.expected) == ("wrong", "no", "yes")
    assert summarise(results, fieldset)["gift_box"].accuracy == 0.0
    assert read_answer('{"gift_box": 1e400}', fieldset).unrepresentable == ()  # not numeric: nothing counted


def test_a_new_kind_scans_end_to_end_through_the_command_line(boolean_kind, tmp_path, sample_dir):
    images = tmp_path / "images"
    images.mkdir()
    names = ["001_94544451.jpg", "002_92253856.png"]
    for name in names:
        shutil.copy(sample_dir / name, images / name)
    catalogue = _write(images / "catalogue.csv", f"local_image_path,gift_box\n{names[0]},yes\n{names[1]},no\n")
    answers = _write(tmp_path / "answers.json", json.dumps(['{"gift_box": "yes"}', "Gift box: yes"]))
    db = tmp_path / "r.db"
    result = CliRunner().invoke(
        cli,
        ["scan", str(images), "--model", f"fake:{answers}", "--truth", str(catalogue), "--db", str(db),
         "--fields", str(_write(tmp_path / "fields.toml", FIELDS)), "--no-report"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as conn:
        prompt = conn.execute("SELECT prompt_text FROM runs").fetchone()[0]
        outcomes = conn.execute(
            "SELECT i.path, r.outcome, r.predicted, r.expected FROM field_results r JOIN images i ON i.id = r.image_id"
            " WHERE r.field = 'gift_box' ORDER BY i.path"
        ).fetchall()
    assert "yes or no" in prompt
    assert [(Path(path).name, *rest) for path, *rest in outcomes] == [
        (names[0], "correct", "yes", "yes"),
        (names[1], "wrong", "yes", "no"),
    ]


def test_the_toy_kind_is_gone_after_its_test():
    assert "boolean" not in kind_names()
    assert isinstance(FieldSet.from_json(BUILTIN_FIELDS.to_json()), FieldSet)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
