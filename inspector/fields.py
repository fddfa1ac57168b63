"""The product fields a scan reads: declared once, as data, and everything else derived from the declarations.

A field is a `FieldSpec`: a name, a kind, synonyms and a prompt description. Parsing (JSON keys and "Label: value"
lines), catalogue column detection, the prompt, the canonical training answer, scoring, the store and the report
all walk the active `FieldSet` instead of naming fields. What each kind (text, category, price, currency, number,
size_prices) reads, hints and scores is one object in `inspector.kinds`; `FieldSpec` and the other types every
kind uses live below it, in `inspector.fieldspec`, and are re-exported here.

Users add or override fields with a TOML file (`load_fields`, ``--fields fields.toml``); see docs/fields.md.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from inspector.errors import InputError
from inspector.fieldspec import FieldResult, FieldSpec, FieldValue, Outcome, normalise_key
from inspector.kinds import kind_names, kind_of, registered_kinds
from inspector.outputs import check_path_names
from inspector.units import unit_dimension

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "BUILTIN_FIELDS",
    "CellProblem",
    "FieldResult",
    "FieldSet",
    "FieldSpec",
    "FieldValue",
    "Outcome",
    "ProductFields",
    "TruthRecord",
    "load_fields",
    "normalise_key",
]

_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")

#: The names `--truth-columns` gives the catalogue columns that locate each image (a path, a product key) and their
#: aliases, with the column each stands for. A field may not be named or keyed like them: the column mapping, the
#: catalogue's column detection and the advice of errors could not tell the field from the image column.
LOCATOR_NAMES: dict[str, str] = {"path": "path", "key": "key", "image": "path", "image_path": "path", "file": "path"}


@dataclass(frozen=True)
class FieldSet:
    """The fields a scan reads, in the order prompts, tables and reports show them."""

    specs: tuple[FieldSpec, ...]

    def __iter__(self) -> Iterator[FieldSpec]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def __contains__(self, name: object) -> bool:
        return any(spec.name == name for spec in self.specs)

    def __getitem__(self, name: str) -> FieldSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def get(self, name: str) -> FieldSpec | None:
        return next((spec for spec in self.specs if spec.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.specs)

    def first(self, kind: str) -> FieldSpec | None:
        """The first field of a kind: a role (the main price, whose currency feeds the currency field; the size
        table), not a branch on kinds (those ask the kind object, `inspector.kinds.kind_of`)."""
        return next((spec for spec in self.specs if spec.kind == kind), None)

    def to_json(self) -> list[dict[str, Any]]:
        return [spec.to_json() for spec in self.specs]

    @classmethod
    def from_json(cls, data: list[Mapping[str, Any]] | None) -> FieldSet:
        """The fields stored with a run; runs written before fields were declarable used the built-ins."""
        if not data:
            return BUILTIN_FIELDS
        return cls(tuple(FieldSpec.from_json(item) for item in data))

    def fingerprint(self) -> str:
        """A stable text of the declarations, part of a run's identity."""
        return json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False)


# ----------------------------------------------------------------------------------------------------------
# The built-in fields
# ----------------------------------------------------------------------------------------------------------

_TITLE_END = (
    r"(?=\s*,?\s*\b(?:which|that|priced|costing|selling|retailing|available)\b|\s+for\s+(?:[$£€¥]|\d)"
    r"|\.(?:\s|$)|[;\n]|$|\s\d{1,2}\.\s)"
)
_TITLE_START = r"(?!(?:priced|costing|selling|available|for)\b|[$£€¥\d])"
#: Where a sentence or a clause ends ("Its category is Scarves and the price is …").
SENTENCE_END = (
    r"(?:(?=\s+(?:and|while|but|with)\s+(?:the|its|it|a|an|this)\b)|(?=\.(?:\s|$)|[;\n]|$|\s\d{1,2}\.\s))"
)

BUILTIN_FIELDS = FieldSet(
    (
        FieldSpec(
            "brand",
            "category",
            synonyms=("brand name", "manufacturer", "designer", "make", "maker"),
            columns=("brand", "brand_name", "manufacturer", "maker", "designer", "vendor"),
            phrases=(
                rf"\bbrand(?:\s+name)?\s+(?:is|:)\s+(?P<value>[^,;\n]+?){SENTENCE_END}",
                r"\b(?:made|manufactured|designed)\s+by\s+(?-i:(?P<value>[A-Z][\w&'.-]*(?:\s+[A-Z][\w&'.-]*)*))",
            ),
        ),
        FieldSpec(
            "title",
            "text",
            description="the product name as written",
            synonyms=(
                "product name",
                "product title",
                "name",
                "product",
                "item name",
                "item title",
                "item",
                "good",
                "the good",
                "description",
                "product description",
            ),
            columns=(
                "title",
                "product_name",
                "productname",
                "product_title",
                "name",
                "item_name",
                "product",
                "item",
                "description",
            ),
            phrases=(
                r"\b(?:the\s+)?(?:good|product|item|article|product\s+name|item\s+name|title)"
                r"(?:\s+(?:shown|pictured|displayed|depicted|listed))?"
                r"(?:\s+(?:in|on)\s+(?:the|this)\s+(?:image|picture|photo|listing))?"
                rf"\s+is(?:\s+called)?\s+(?:an?\s+|the\s+)?{_TITLE_START}(?P<value>.+?){_TITLE_END}",
                r"\b(?:this|the\s+(?:image|picture|photo|listing))\s+(?:is|shows|depicts|features|displays)\s+"
                rf"(?:an?\s+|the\s+)?{_TITLE_START}(?P<value>.+?){_TITLE_END}",
            ),
        ),
        FieldSpec(
            "category",
            "category",
            synonyms=(
                "product category",
                "item category",
                "category name",
                "category3 code",
                "category code",
                "type",
                "product type",
                "item type",
                "department",
            ),
            columns=(
                "category",
                "category3_code",
                "category_name",
                "product_category",
                "product_type",
                "type",
                "category_code",
                "category2_code",
                "category1_code",
                "department",
            ),
            phrases=(
                rf"\bcategory\s+(?:is|:)\s+(?:the\s+)?(?P<value>[^,;\n]+?){SENTENCE_END}",
                r"\b(?:in|under)\s+the\s+(?P<value>[\w&' -]{2,40}?)\s+category\b",
            ),
        ),
        FieldSpec(
            "price",
            "price",
            description="the full price as a number",
            synonyms=(
                "full price",
                "regular price",
                "retail price",
                "list price",
                "original price",
                "unit price",
                "price value",
                "cost",
                "msrp",
                "amount",
            ),
            columns=(
                "full_price",
                "price",
                "regular_price",
                "list_price",
                "retail_price",
                "original_price",
                "unit_price",
                "msrp",
                "cost",
                "amount",
            ),
        ),
        FieldSpec(
            "currency",
            "currency",
            description='ISO 4217 code such as "USD"',
            synonyms=("currency code", "currency iso", "ccy"),
            columns=("currency", "currency_code", "currency_iso", "ccy", "curr"),
        ),
        FieldSpec(
            "size_prices",
            "size_prices",
            key="sizes",
            label="Sizes",
            description="an object mapping each size shown to its price as a number, {} if there is none",
            synonyms=(
                "size prices",
                "size price",
                "size prices list",
                "prices by size",
                "price by size",
                "prices per size",
                "price per size",
                "sizes and prices",
                "size and price",
                "prices",
            ),
            columns=(
                "sizes",
                "size_prices",
                "size_price",
                "prices_by_size",
                "price_by_size",
                "size_price_map",
            ),
        ),
    )
)


# ----------------------------------------------------------------------------------------------------------
# Fields files
# ----------------------------------------------------------------------------------------------------------

#: Keys a `[fields.NAME]` table may have, and the type each must be.
_FILE_KEYS: dict[str, type | tuple[type, ...]] = {
    "kind": str,
    "synonyms": list,
    "description": str,
    "key": str,
    "label": str,
    "columns": list,
    "values": list,
    "unit": str,
    "tolerance": (int, float),
    "threshold": (int, float),
}


def load_fields(path: str | Path | None, base: FieldSet = BUILTIN_FIELDS) -> FieldSet:
    """The fields a fields file declares, on top of `base` (the built-ins).

    By default the file extends the built-ins: a table named like a built-in replaces that declaration, new names
    are added after them. ``replace = true`` at the top of the file drops the built-ins and uses only its fields.
    Any problem is an `InputError` naming the field and the key.
    """
    if path is None:
        return base
    path = check_path_names(path, "--fields")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise InputError(f"Fields file {path} does not exist; check the --fields path.") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise InputError(
            f"Cannot read fields file {path}: {error}; pass a UTF-8 TOML file to --fields."
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"Fields file {path} is not valid TOML: {error}.") from None
    return fields_from_mapping(data, base, source=str(path))


def fields_from_mapping(
    data: Mapping[str, Any], base: FieldSet = BUILTIN_FIELDS, source: str = "fields"
) -> FieldSet:
    """`load_fields` for an already-parsed TOML document."""
    unknown = sorted(set(data) - {"fields", "replace"})
    if unknown:
        raise InputError(
            f"{source}: unknown top-level key {unknown[0]!r}; use [fields.NAME] tables and replace."
        )
    replace_all = data.get("replace", False)
    if not isinstance(replace_all, bool):
        raise InputError(f"{source}: replace must be true or false.")
    tables = data.get("fields", {})
    if not isinstance(tables, dict) or not tables:
        raise InputError(f"{source}: declare at least one field as a [fields.NAME] table.")
    declared = {name: _spec_from_table(name, table, base, source) for name, table in tables.items()}
    specs = [] if replace_all else [declared.pop(spec.name, spec) for spec in base]
    specs += declared.values()
    fieldset = FieldSet(tuple(specs))
    _check_fieldset(fieldset, source)
    return fieldset


def _spec_from_table(name: str, table: object, base: FieldSet, source: str) -> FieldSpec:
    where = f"{source}: field {name!r}"
    if not _NAME_RE.fullmatch(name):
        raise InputError(f"{where}: a field name is lower-case letters, digits and _ (like main_colour).")
    if not isinstance(table, dict):
        raise InputError(f"{where} must be a table: write [fields.{name}] and its keys below it.")
    for key, value in table.items():
        if key not in _FILE_KEYS:
            raise InputError(f"{where}: unknown key {key!r}; use {', '.join(_FILE_KEYS)}.")
        expected = _FILE_KEYS[key]
        if not isinstance(value, expected) or isinstance(value, bool):
            kind = {list: "a list of strings", str: "a string"}.get(expected, "a number")
            raise InputError(f"{where}: {key} must be {kind}.")
        if expected is list and not all(isinstance(item, str) and item.strip() for item in value):
            raise InputError(f"{where}: {key} must be a list of non-empty strings.")
    builtin = base.get(name)
    if "kind" not in table and builtin is None:
        raise InputError(f"{where}: missing key 'kind'; use one of {', '.join(kind_names())}.")
    kind = table.get("kind", builtin.kind if builtin else "")
    if kind not in kind_names():
        raise InputError(f"{where}: kind {kind!r} is not one of {', '.join(kind_names())}.")
    values = {key: tuple(v) if isinstance(v, list) else v for key, v in table.items()}
    if "tolerance" in values:
        values["tolerance"] = float(values["tolerance"])
        if not math.isfinite(values["tolerance"]) or values["tolerance"] < 0:
            raise InputError(f"{where}: tolerance must be a number >= 0.")
    if "threshold" in values and not 0 <= values["threshold"] <= 1:
        raise InputError(f"{where}: threshold must be between 0 and 1.")
    _check_kind_keys(values, kind, where)
    for what, texts in (("key", [values.get("key", "")]), ("synonym", values.get("synonyms", ())),
                        ("column", values.get("columns", ()))):  # fmt: skip
        for text in texts:
            if text and not normalise_key(text):
                raise InputError(
                    f"{where}: {what} {text!r} has no letter or digit (a-z, 0-9) to match answers and catalogue "
                    "headers by; remove it or spell it with some."
                )
    for locator in (name, values.get("key") or name):
        if locator in LOCATOR_NAMES:
            raise InputError(
                f"{where}: {locator!r} names the catalogue column that locates each image (--truth-columns "
                f"{LOCATOR_NAMES[locator]}=COLUMN); give the field another name and key."
            )
    if builtin is not None and builtin.kind == kind:
        return replace(builtin, **values)  # a built-in overridden by name keeps what the file does not change
    if builtin is not None:
        # Another kind: what names the field (key, label, synonyms, catalogue columns, description) is kept, so
        # the catalogue's full_price is still read when price becomes a number; what reads or scores the old kind
        # (phrases, values, unit, tolerance, threshold) is not.
        kept = {key: getattr(builtin, key) for key in ("key", "label", "synonyms", "columns", "description")}
        return FieldSpec(name=name, **{**kept, **values})
    return FieldSpec(name=name, **values)


def _check_kind_keys(values: Mapping[str, Any], kind: str, where: str) -> None:
    """Keys that only some kinds read (`FieldKind.declaration_keys`: unit, values) are refused on the others."""
    owned: dict[str, list[str]] = {}
    for other in registered_kinds():
        for key in other.declaration_keys:
            owned.setdefault(key, []).append(other.name)
    for key, owners in owned.items():
        if not values.get(key):
            continue
        if kind not in owners:
            kinds = " or ".join(f'kind = "{owner}"' for owner in owners)
            raise InputError(f"{where}: {key} applies to {kinds} only.")
        if key == "unit" and unit_dimension(values["unit"]) is None:
            raise InputError(f"{where}: unit {values['unit']!r} is not known; use e.g. ml, l, g, kg, cm, m, in.")


def _check_fieldset(fieldset: FieldSet, source: str) -> None:
    for kind in registered_kinds():
        specs = [spec for spec in fieldset if kind.single and spec.kind == kind.name]
        if len(specs) > 1:
            raise InputError(
                f"{source}: fields {specs[0].name!r} and {specs[1].name!r} are both {kind.name}; declare one."
            )
    seen: dict[str, str] = {}
    for spec in fieldset:
        for key in spec.answer_keys:
            if key in seen and seen[key] != spec.name:
                raise InputError(
                    f"{source}: field {spec.name!r}: synonym {key!r} already names field {seen[key]!r}; "
                    "remove it from one of them."
                )
            seen[key] = spec.name


# ----------------------------------------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------------------------------------


def _empty(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return not math.isfinite(value)
    return value in ("", {})


def _empty_value(spec: FieldSpec) -> FieldValue:
    empty = kind_of(spec).empty
    return dict(empty) if isinstance(empty, dict) else empty


class ProductFields(dict[str, FieldValue]):
    """What one answer (or one catalogue row) says about a product: field name -> value.

    Only values that are present are kept (None, "" and {} are dropped), and a missing field reads as None, so
    `fields["colour"]` is None when nothing was read. `fields.colour` reads the same value; it is kept for
    readable tests and scripts, library code indexes by name.
    """

    def __init__(self, values: Mapping[str, FieldValue] | None = None, /, **named: FieldValue) -> None:
        super().__init__()
        for name, value in {**(values or {}), **named}.items():
            self[name] = value

    def __setitem__(self, name: str, value: FieldValue) -> None:
        if _empty(value):
            self.pop(name, None)
        else:
            super().__setitem__(name, value)

    def __missing__(self, name: str) -> None:
        return None

    def __getattr__(self, name: str) -> FieldValue:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __setattr__(self, name: str, value: FieldValue) -> None:
        self[name] = value

    def to_dict(self, fieldset: FieldSet = BUILTIN_FIELDS) -> dict[str, FieldValue]:
        """Every declared field, None (or {} for size tables) where nothing was read."""
        return {spec.name: self.get(spec.name, _empty_value(spec)) for spec in fieldset} | {
            name: value for name, value in self.items() if name not in fieldset
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, FieldValue]) -> ProductFields:
        return cls(data)

    def is_empty(self) -> bool:
        return not self

    def __repr__(self) -> str:
        return f"ProductFields({dict.__repr__(self)})"


@dataclass(frozen=True)
class CellProblem:
    """A catalogue cell that could not be read; the rest of its row is still used."""

    #: 1-based data row number (header excluded).
    row_number: int
    column: str
    value: str
    problem: str
    #: The field result the cell would have been scored as ("weight", "size_price:7.5"), when the cell left that
    #: field empty: the field is then not judged for this row (`Outcome.UNREADABLE`). None when the value came
    #: from elsewhere (a currency from the price's symbol) or the cell names no one field.
    field_name: str | None = field(default=None, compare=False)


@dataclass
class TruthRecord:
    """One catalogue row, as read from the ground-truth CSV."""

    #: 1-based data row number in the CSV (header excluded), for messages and the report.
    row_number: int
    #: Value of the key column (e.g. product_code) or the image reference, whichever matched the image.
    key: str | None
    fields: ProductFields
    #: The image path/name the row points at, as written in the CSV, if it has such a column.
    image_ref: str | None = None
    #: The row's cells that could not be read (see `CellProblem`).
    problems: tuple[CellProblem, ...] = ()

    def unreadable(self) -> dict[str, CellProblem]:
        """Field result name -> the unreadable cell that left it empty: these fields are not judged."""
        found: dict[str, CellProblem] = {}
        for problem in self.problems:
            if problem.field_name is not None:
                found.setdefault(problem.field_name, problem)
        return found


# Kept for code that only needs the names of the built-in fields.
FIELD_NAMES: tuple[str, ...] = BUILTIN_FIELDS.names
