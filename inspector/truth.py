"""The ground-truth catalogue: a CSV read with pandas, its columns found by name, its rows matched to images.

Column names are found automatically (case, spaces and punctuation ignored), including the original Burberry
dataset's (title, category3_code, full_price, brand, currency_code, product_code, local_image_path), or mapped
with ``--truth-columns brand=Brand,title="Product Name",price=Cost,size:6.5="Price 6.5"``.

Rows are matched to images, for each image in this order:

1. by the path column, relative to the CSV's folder or to a scan root, or absolute;
2. by the file name in the path column (when several rows share it, the one whose folders match the image's
   path best), then by the file stem ("shoe1" or "shoe1.png" matches "shoe1.jpg");
3. by the key column: with ``--truth-key`` (or ``key=`` in the mapping) a key matches when it appears in the
   image's file name without splitting a run of letters or digits ("DD1503-101" in "nike_DD1503-101_front.jpg",
   but "12" not in "123.jpg"), the longest key winning; a key column found automatically only matches a file
   stem exactly.

Reading (`load_truth`): the encoding and the separator are detected as for every CSV file we are given
(`inspector.csvfiles`: UTF-8, UTF-16 or Windows-1252; , ; tab or |; Excel's "sep=" line). A record with more or fewer cells than the header
is skipped and counted with its line numbers: it never moves another row's columns.

Nothing here is fatal once the CSV is read: malformed rows, unparseable cells, duplicate keys, images without a
row and rows without an image are counted in the `TruthMatch`. Rows are indexed by the columns that name images
and read in full only when an image matches them, so a catalogue of millions of rows matches quickly.
"""

from __future__ import annotations

import os
import re
import shlex
from array import array
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from inspector.csvfiles import CsvKind, read_csv_text, records, split_record, well_quoted
from inspector.errors import TruthError  # noqa: F401 - part of this module's API
from inspector.fields import (
    BUILTIN_FIELDS,
    LOCATOR_NAMES,
    CellProblem,
    FieldSet,
    FieldSpec,
    ProductFields,
    TruthRecord,
)
from inspector.kinds import CellReading, kind_of
from inspector.parsing import (
    NULL_WORDS,
    clean_text,
    normalise_size,
)
from inspector.scoring import SIZE_FIELD_PREFIX

__all__ = [
    "LOCATOR_CANDIDATES",
    "column_candidates",
    "mapping_keys",
    "CellProblem",
    "MalformedRow",
    "TruthError",
    "TruthMatch",
    "TruthTable",
    "load_truth",
    "parse_column_mapping",
]


#: Keys of the image-locating columns; the fields' keys (e.g. "brand", "sizes") come from the declarations.
LOCATOR_KEYS: tuple[str, ...] = tuple(dict.fromkeys(LOCATOR_NAMES.values()))
_LOCATOR_ALIASES = {name: key for name, key in LOCATOR_NAMES.items() if name != key}

#: Column names tried for the image-locating columns, best first, compared after `_normalise_header`. Each
#: field's own column names are part of its declaration (`FieldSpec.column_names`).
LOCATOR_CANDIDATES: dict[str, tuple[str, ...]] = {
    "path": (
        "local_image_path",
        "image_path",
        "imagepath",
        "image_file",
        "image_filename",
        "image_file_name",
        "image_name",
        "filepath",
        "file_path",
        "path",
        "filename",
        "file_name",
        "file",
        "image",
        "img",
        "img_path",
        "picture",
        "photo",
        "image_url",
        "imageurl",
        "img_url",
    ),
    "key": (
        "product_code",
        "sku",
        "product_id",
        "productid",
        "item_id",
        "article_number",
        "article",
        "style_code",
        "style",
        "code",
        "id",
        "ean",
        "upc",
        "gtin",
        "asin",
    ),
}


def mapping_keys(fieldset: FieldSet = BUILTIN_FIELDS) -> tuple[str, ...]:
    """Keys accepted by ``--truth-columns``, besides "size:<size>" for a column holding one size's price."""
    return tuple(spec.key for spec in fieldset) + LOCATOR_KEYS


def _mapping_aliases(fieldset: FieldSet) -> dict[str, str]:
    """Other names accepted for a mapping key: a field's name where its key differs, its synonyms."""
    aliases = dict(_LOCATOR_ALIASES)
    for spec in fieldset:
        for name in (spec.name, *spec.synonyms):
            aliases.setdefault(_normalise_header(name), spec.key)
    return aliases


def column_candidates(fieldset: FieldSet = BUILTIN_FIELDS) -> dict[str, tuple[str, ...]]:
    """Mapping key -> column names tried, best first (normalised like `_normalise_header`)."""
    fields = {spec.key: tuple(name.replace(" ", "_") for name in spec.column_names) for spec in fieldset}
    return {"path": LOCATOR_CANDIDATES["path"], "key": LOCATOR_CANDIDATES["key"], **fields}


#: Per-size price columns: "price_6.5", "size_6.5", "Price (6.5)", "Size 6.5 price", "price_us_8", "6.5".
#: Letter sizes need a separator after the prefix, so that "prices" and "sizes" are not size "S".
_SIZE_HEADER_RE = re.compile(
    r"(?:price|size)(?:[\s_:\-(\[]*(?:(?:us|uk|eu)[\s_]*)?(?:size[\s_]*)?(?P<size>\d{1,2}(?:[.,_]\d{1,2})?[a-z]?)"
    r"|[\s_:\-(\[]+(?:size[\s_]*)?(?P<letter>x{0,3}[sml]|\d?xl))[)\]]?(?:[\s_\-]*price)?"
    r"|(?P<bare>\d{1,2}(?:\.\d{1,2})?)",
    re.IGNORECASE,
)


def _normalise_header(name: object) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().casefold()).strip("_")


@dataclass(frozen=True)
class MalformedRow:
    """A CSV record with more or fewer cells than the header (an unquoted comma, a lost separator, a quote left
    open). It is skipped, because which value belongs to which column cannot be known; other rows are unaffected."""

    #: 1-based data row number (header excluded); later rows keep their own numbers.
    row_number: int
    #: 1-based lines of the file the record spans (a quote left open can swallow several lines).
    first_line: int
    last_line: int
    cells: int
    expected: int

    def lines(self) -> str:
        """The line or lines it spans ("12" or "12-40"), for messages."""
        return (
            str(self.first_line)
            if self.last_line == self.first_line
            else f"{self.first_line}-{self.last_line}"
        )


#: How many malformed rows a summary lists by line (all are counted).
MAX_LISTED_ROWS = 10


@dataclass
class TruthMatch:
    """Which catalogue row each image got, and everything that did not fit."""

    #: Keyed by the image Path objects passed to `TruthTable.match`.
    records: dict[Path, TruthRecord]
    #: How each matched image was matched: "path", "name", "stem" or "key".
    matched_by: dict[Path, str]
    unmatched_images: list[Path]
    #: How many rows no image matched.
    unmatched_rows: int
    #: Path or key values found in more than one row -> their row numbers (the first row is used).
    duplicate_keys: dict[str, list[int]]
    #: Cells of the matched rows that could not be read (other rows are never read: see `TruthTable`).
    unparseable_cells: list[CellProblem]
    #: Records of the CSV skipped because their cell count differs from the header's.
    malformed_rows: list[MalformedRow] = field(default_factory=list)
    total_rows: int = 0

    def summary(self) -> dict:
        """Counts for the CLI's summary and the report."""
        by_method: dict[str, int] = {"path": 0, "name": 0, "stem": 0, "key": 0}
        for method in self.matched_by.values():
            by_method[method] = by_method.get(method, 0) + 1
        summary = {
            "rows": self.total_rows,
            "images": len(self.records) + len(self.unmatched_images),
            "matched_images": len(self.records),
            "unmatched_images": len(self.unmatched_images),
            "unmatched_rows": self.unmatched_rows,
            "duplicate_keys": len(self.duplicate_keys),
            "unparseable_cells": len(self.unparseable_cells),
            "malformed_rows": len(self.malformed_rows),
            "matched_by": by_method,
        }
        if self.malformed_rows:
            summary["malformed_at_lines"] = [row.lines() for row in self.malformed_rows[:MAX_LISTED_ROWS]]
        return summary


# --------------------------------------------------------------------------------------------------------------
# Column mapping
# --------------------------------------------------------------------------------------------------------------


def parse_column_mapping(text: str, fieldset: FieldSet = BUILTIN_FIELDS) -> dict[str, str]:
    """``brand=Brand,title="Product Name",price=Cost,size:6.5="Price 6.5"`` -> {field: column}.

    Keys: the declared fields' keys (brand, title, category, price, currency, sizes: one "size:price;…"
    column, and any field of a --fields file), their names and synonyms, path, key, and
    "size:<size>" for a column holding the price of one size. Quotes (single or double) may hold commas.
    """
    if text is None or not str(text).strip():
        raise TruthError(
            '--truth-columns is empty; write it like brand=Brand,title="Product Name",price=Cost'
        )
    lexer = shlex.shlex(str(text), posix=True)
    lexer.whitespace = ","
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        parts = [part for part in lexer if part.strip()]
    except ValueError as error:  # unbalanced quotes
        raise TruthError(f"--truth-columns: {error} in {text!r}; close every quote you open.") from None
    known, aliases = mapping_keys(fieldset), _mapping_aliases(fieldset)
    mapping: dict[str, str] = {}
    for part in parts:
        key, separator, column = part.partition("=")
        key, column = key.strip().lower(), column.strip()
        if not separator or not key or not column:
            raise TruthError(
                f"--truth-columns: {part.strip()!r} is not FIELD=COLUMN; write it like brand=Brand,price=Cost"
            )
        key = key if key in known else aliases.get(_normalise_header(key), key)
        if key.startswith("size:"):
            size = normalise_size(key[len("size:") :])
            if not size:
                raise TruthError(
                    f"--truth-columns: {part.strip()!r} names no size; write it like size:6.5=Col"
                )
            key = f"size:{size}"
        elif key not in known:
            raise TruthError(
                f"--truth-columns: unknown field {key!r}; use {', '.join(known)} or size:<size>."
            )
        if key in mapping:
            raise TruthError(f"--truth-columns: {key!r} is mapped twice.")
        mapping[key] = column
    return mapping


# --------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------

#: How truth CSVs are named in messages.
TRUTH_CSV = CsvKind("truth CSV", "--truth", "a header line and one row per product", TruthError)


class _Rows:
    """The data records of a CSV file (UTF-8 bytes): where each well-formed row starts and ends, so that a row is
    decoded and split into cells only when it is needed (a million-row catalogue matched to a few images reads a
    few rows)."""

    def __init__(self, data: bytes, delimiter: str):
        self.data = data
        self.delimiter = delimiter
        self.starts = array("q")
        self.ends = array("q")
        self.row_numbers = array("q")

    def cells(self, index: int) -> list[str]:
        return split_record(self.data[self.starts[index] : self.ends[index]], self.delimiter)

    def __len__(self) -> int:
        return len(self.row_numbers)


def _find_column(columns: list[str], wanted: str) -> str | None:
    """The column named `wanted`, exactly or after ignoring case, spaces and punctuation."""
    if wanted in columns:
        return wanted
    target = _normalise_header(wanted)
    return next((column for column in columns if _normalise_header(column) == target), None)


def _detect_columns(
    frame_columns: list[str],
    mapping: dict[str, str],
    key_column: str | None,
    path: Path,
    fieldset: FieldSet = BUILTIN_FIELDS,
    warnings: list[str] | None = None,
) -> tuple[dict[str, str], bool]:
    """The column of each field and locator (mapped, else found by name) and whether the key was named. A field
    that several columns could be is `warnings`' business: the first candidate wins, the others are named."""
    warnings = [] if warnings is None else warnings
    found_list = ", ".join(repr(column) for column in frame_columns) or "none"
    columns: dict[str, str] = {}
    for key, wanted in mapping.items():
        column = _find_column(frame_columns, wanted)
        if column is None:
            raise TruthError(
                f"Truth CSV {path} has no column {wanted!r} (mapped to {key}). Columns found: {found_list}."
            )
        columns[key] = column
    key_explicit = "key" in columns
    if key_column is not None:
        column = _find_column(frame_columns, key_column)
        if column is None:
            raise TruthError(
                f"Truth CSV {path} has no key column {key_column!r}. Columns found: {found_list}."
            )
        if key_explicit and columns["key"] != column:
            raise TruthError(f"Two key columns given ({columns['key']!r} and {column!r}); pass only one.")
        columns["key"], key_explicit = column, True

    used = set(columns.values())
    by_normalised: dict[str, list[str]] = {}
    for column in frame_columns:
        by_normalised.setdefault(_normalise_header(column), []).append(column)
    field_keys = {spec.key for spec in fieldset}
    for name, candidates in column_candidates(fieldset).items():
        if name in columns:
            continue
        found = [
            column for candidate in candidates for column in by_normalised.get(candidate, ()) if column not in used
        ]
        if found:
            columns[name] = found[0]
            used.add(found[0])
            if name in field_keys and len(found) > 1:
                listed = ", ".join(repr(column) for column in found)
                warnings.append(
                    f"{len(found)} catalogue columns look like {name} ({listed}); using {found[0]!r}. "
                    f'Choose one with --truth-columns {name}="COLUMN"'
                )
    if fieldset.first("size_prices") is not None and not any(key.startswith("size:") for key in mapping):
        for column in frame_columns:
            if column in used:
                continue
            match = _SIZE_HEADER_RE.fullmatch(column.strip())
            if match:
                label = match.group("size") or match.group("letter") or match.group("bare")
                size = normalise_size(label.replace("_", "."))
                if size and f"size:{size}" not in columns:
                    columns[f"size:{size}"] = column
                    used.add(column)

    product_fields = [key for key in columns if key not in ("path", "key")]
    if not product_fields:
        raise TruthError(
            f"Truth CSV {path} has no product columns ({', '.join(spec.key for spec in fieldset)}). "
            f'Columns found: {found_list}. Name them with --truth-columns, e.g. title="Product Name",price=Cost.'
        )
    if "path" not in columns and "key" not in columns:
        raise TruthError(
            f"Truth CSV {path} has no column that names the image (a path, file name or product code). "
            f"Columns found: {found_list}. Name one with --truth-columns path=COLUMN or --truth-key COLUMN."
        )
    return columns, key_explicit


def load_truth(
    csv_path: str | Path,
    columns: dict[str, str] | None = None,
    key_column: str | None = None,
    fieldset: FieldSet = BUILTIN_FIELDS,
) -> TruthTable:
    """Reads a truth CSV. `columns` maps fields to column names (from `parse_column_mapping`); the others are
    found by their declared column names (`fieldset`). `key_column` names a column whose values appear in
    image file names (``--truth-key``).

    The encoding and the delimiter are detected (`inspector.csvfiles.read_csv_text`). A record whose cell count
    differs from the header's is skipped and listed in `malformed_rows`; it never moves another row's cells. Rows are
    indexed by the columns that name images here, and read in full only when matched (see `TruthTable`).
    """
    path = Path(csv_path)
    text = read_csv_text(path, TRUTH_CSV)
    data, delimiter = text.data, text.delimiter
    found = records(text, TRUTH_CSV)
    first = next(found, None)
    if first is None:
        raise TruthError(f"Truth CSV {path} has no header line; the first line must name the columns.")
    header = first.cells
    column_names = [name.strip() for name in header]

    mapping = dict(columns or {})
    known, aliases = mapping_keys(fieldset), _mapping_aliases(fieldset)
    for key in list(mapping):
        canonical = key if key in known else aliases.get(_normalise_header(key), key)
        if canonical not in known and not canonical.startswith("size:"):
            raise TruthError(f"Unknown truth field {key!r}; use {', '.join(known)} or size:<size>.")
        mapping[canonical] = mapping.pop(key)
    warnings: list[str] = []
    used_columns, key_explicit = _detect_columns(column_names, mapping, key_column, path, fieldset, warnings)

    rows = _Rows(data, delimiter)
    malformed: list[MalformedRow] = []
    table = TruthTable(
        path, used_columns, key_explicit, column_names, rows, malformed, text.encoding, fieldset
    )
    table.warnings = warnings
    path_at = column_names.index(used_columns["path"]) if "path" in used_columns else None
    key_at = column_names.index(used_columns["key"]) if "key" in used_columns else None
    expected = len(column_names)
    for row_number, record in enumerate(found, start=1):
        cells = record.cells
        if len(cells) != expected or (
            record.last_line > record.first_line
            and not well_quoted(data[record.start : record.end], delimiter)
        ):
            malformed.append(
                MalformedRow(row_number, record.first_line, record.last_line, len(cells), expected)
            )
            continue
        index = len(rows.row_numbers)
        rows.starts.append(record.start)
        rows.ends.append(record.end)
        rows.row_numbers.append(row_number)
        image_ref = _clean_cell(cells[path_at]) if path_at is not None else None
        key = _clean_cell(cells[key_at]) if key_at is not None else None
        table._index(index, image_ref, key)
    return table


#: A cell value `clean_text` leaves as it is (one word, no control characters): checked fast, once per row.
_PLAIN_CELL_RE = re.compile(r"[\w.:/\\+#&'@~-]+")


def _clean_cell(value: str) -> str | None:
    """`clean_text` of a cell, with the common case (a value needing no change) fast."""
    stripped = value.strip()
    if not stripped:
        return None
    if _PLAIN_CELL_RE.fullmatch(stripped):
        folded = stripped.casefold()
        return None if folded in NULL_WORDS or folded.rstrip(".") in NULL_WORDS else stripped
    return clean_text(stripped)


def _cell(row: dict, column: str | None) -> str | None:
    if column is None:
        return None
    value = row.get(column)
    return value.strip() if isinstance(value, str) else None


def _read_row(
    row: dict,
    row_number: int,
    columns: dict[str, str],
    problems: list[CellProblem],
    fieldset: FieldSet = BUILTIN_FIELDS,
) -> tuple[ProductFields, str | None, str | None]:
    found: list[CellProblem] = []

    def problem(column: str, value: str, what: str, field_name: str | None) -> None:
        found.append(CellProblem(row_number, column, value, what, field_name))

    def read(spec: FieldSpec, column: str, raw: str, currency: str | None) -> CellReading:
        """The cell read by the field's kind; what could not be read is listed as the row's problems."""
        return listed(column, kind_of(spec).read_cell(spec, raw, currency))

    def listed(column: str, reading: CellReading) -> CellReading:
        for text, what, field_name in reading.problems:
            problem(column, text, what, field_name)
        return reading

    fields = ProductFields()
    # The currency column comes first: it settles what a price's separators mean.
    currency_spec = fieldset.first("currency")
    currency: str | None = None
    if currency_spec is not None:
        raw_currency = _cell(row, columns.get(currency_spec.key))
        if clean_text(raw_currency) is not None:
            currency = read(currency_spec, columns[currency_spec.key], raw_currency, None).value

    # The size table last: its sizes come from its own column and from one column per size.
    sizes_spec = fieldset.first("size_prices")
    main_price = fieldset.first("price")
    price_currency = None
    for spec in fieldset:
        raw = _cell(row, columns.get(spec.key))
        if spec is currency_spec or spec is sizes_spec or clean_text(raw) is None:
            continue
        reading = read(spec, columns[spec.key], raw, currency)
        fields[spec.name] = reading.value
        if reading.value is not None and spec is main_price:
            price_currency = reading.currency
    if currency is None:
        currency = price_currency
    if currency_spec is not None:
        fields[currency_spec.name] = currency

    if sizes_spec is not None:
        size_prices: dict[str, float] = {}
        raw_sizes = _cell(row, columns.get(sizes_spec.key))
        if clean_text(raw_sizes) is not None:
            size_prices.update(read(sizes_spec, columns[sizes_spec.key], raw_sizes, currency).value or {})
        for key, column in columns.items():
            if not key.startswith("size:"):
                continue
            raw = _cell(row, column)
            if clean_text(raw) is None:
                continue
            size = key[len("size:") :]
            reading = listed(column, kind_of(sizes_spec).read_size_cell(size, raw, currency))
            if reading.value is not None:
                size_prices.setdefault(size, reading.value)
        fields[sizes_spec.name] = size_prices

    sizes = (fields.get(sizes_spec.name) or {}) if sizes_spec is not None else {}
    for cell in found:
        # A field that got its value elsewhere (the currency from the price's symbol, a size from another
        # column) is judged on that value: the cell is still listed, but no longer leaves the field unjudged.
        name = cell.field_name
        has_value = (
            name is not None
            and (sizes.get(name[len(SIZE_FIELD_PREFIX) :]) is not None if name.startswith(SIZE_FIELD_PREFIX)
                 else name != getattr(sizes_spec, "name", None) and fields.get(name) is not None)
        )  # fmt: skip
        problems.append(replace(cell, field_name=None) if has_value else cell)

    image_ref = clean_text(_cell(row, columns.get("path")))
    key = clean_text(_cell(row, columns.get("key")))
    return fields, image_ref, key


# --------------------------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------------------------


def _ref_parts(ref: str) -> tuple[str, ...]:
    """The path components of an image reference (a path with / or \\, or a URL), for name and folder matching."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", ref, re.IGNORECASE):
        ref = unquote(urlparse(ref).path)
    return tuple(part for part in PurePosixPath(ref.replace("\\", "/")).parts if part not in ("/", ""))


def _path_key(path: str | Path) -> str:
    return os.path.normcase(os.path.abspath(os.path.normpath(str(path))))


def _boundaries(text: str) -> list[int]:
    """Positions where a run of letters, of digits or of other characters starts or ends."""

    def kind(char: str) -> int:
        return 0 if char.isdigit() else 1 if char.isalpha() else 2

    return [0] + [i for i in range(1, len(text)) if kind(text[i - 1]) != kind(text[i])] + [len(text)]


class _MultiIndex:
    """Row indexes by a text value: the first row of each value in one dict, later rows (rare) in another, so that
    a million unique values cost one dict entry each."""

    __slots__ = ("first", "more")

    def __init__(self) -> None:
        self.first: dict[str, int] = {}
        self.more: dict[str, list[int]] = {}

    def add(self, value: str, index: int) -> None:
        if self.first.setdefault(value, index) != index:
            self.more.setdefault(value, []).append(index)

    def get(self, value: str) -> list[int]:
        first = self.first.get(value)
        return [] if first is None else [first, *self.more.get(value, ())]


def _ref_name(ref: str) -> str | None:
    """The file name an image reference ends with, case-folded: `_ref_parts(ref)[-1]`, fast for plain paths."""
    if "://" in ref:
        parts = _ref_parts(ref)
        return parts[-1].casefold() if parts else None
    last = ref.replace("\\", "/").rpartition("/")[2]
    if last and last != ".":
        return last.casefold()
    for part in reversed(ref.replace("\\", "/").split("/")):
        if part not in ("", "."):
            return part.casefold()
    return None


def _stem(name: str) -> str:
    """`PurePosixPath(name).stem`, without building a path object per row."""
    dot = name.rfind(".")
    return name[:dot] if 0 < dot < len(name) - 1 else name


class TruthTable:
    """A truth CSV: its columns, its rows indexed by the columns that name images (path, file name, stem, key),
    and its malformed records.

    Rows are read into TruthRecords (prices parsed, cells checked) only when asked for: `match` reads only the
    rows it matched, so matching a million-row catalogue to a few images reads a few rows. `records` and
    `unparseable_cells` read every row.
    """

    def __init__(
        self,
        csv_path: Path,
        columns: dict[str, str],
        key_explicit: bool,
        column_names: list[str],
        rows: _Rows,
        malformed_rows: list[MalformedRow],
        encoding: str,
        fieldset: FieldSet = BUILTIN_FIELDS,
    ) -> None:
        self.csv_path = csv_path
        #: The fields read from each row.
        self.fieldset = fieldset
        #: Field -> CSV column used ("path", "key", brand/title/…, "sizes", and "size:<size>" per size column).
        self.columns = columns
        #: True when the key column was named by the user (substring matching), False when found automatically.
        self.key_explicit = key_explicit
        self.column_names = column_names
        self.malformed_rows = malformed_rows
        #: The codec the file was read with ("utf-8", "utf-8-sig", "utf-16", "cp1252", …).
        self.encoding = encoding
        self.delimiter = rows.delimiter
        #: What the user should know about how the columns were chosen (a field several columns could be).
        self.warnings: list[str] = []
        self._rows = rows
        self._read: dict[int, tuple[TruthRecord, list[CellProblem]]] = {}
        #: Rows by the case-folded stem of the file name their image reference ends with ("shoe1" for
        #: "img/Shoe1.JPG"); a file-name lookup reads its few candidates to compare whole names.
        self.by_stem = _MultiIndex()
        #: Rows by their case-folded key value.
        self.by_key = _MultiIndex()
        self.longest_key = 0
        self._duplicates: dict[str, list[int]] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def _index(self, index: int, image_ref: str | None, key: str | None) -> None:
        if image_ref:
            name = _ref_name(image_ref)
            if name:
                self.by_stem.add(_stem(name), index)
        if key:
            folded = key.casefold()
            self.by_key.add(folded, index)
            if len(folded) > self.longest_key:
                self.longest_key = len(folded)

    def image_ref(self, index: int) -> str:
        """The image reference of the row at `index` ("" if none), read without reading the whole row: lookups
        compare the references of many candidate rows (say every "front.jpg" of a catalogue)."""
        path_column = self.columns.get("path")
        if path_column is None:
            return ""
        cells = self._rows.cells(index)
        return _clean_cell(cells[self.column_names.index(path_column)]) or ""

    def read_row(self, index: int) -> tuple[TruthRecord, list[CellProblem]]:
        """The row at `index` (0-based among the well-formed rows) and its unreadable cells; read once."""
        found = self._read.get(index)
        if found is None:
            cells = self._rows.cells(index)
            # A name used twice in the header: the first column of that name counts, as in `_find_column`.
            row = dict(zip(reversed(self.column_names), reversed(cells), strict=True))
            row_number = self._rows.row_numbers[index]
            problems: list[CellProblem] = []
            fields, image_ref, key = _read_row(row, row_number, self.columns, problems, self.fieldset)
            record = TruthRecord(
                row_number=row_number,
                key=key or image_ref,
                fields=fields,
                image_ref=image_ref,
                problems=tuple(problems),
            )
            found = self._read[index] = (record, problems)
        return found

    @property
    def records(self) -> list[TruthRecord]:
        """Every row, read (slow for millions of rows: prefer `match`)."""
        return [self.read_row(index)[0] for index in range(len(self))]

    @property
    def unparseable_cells(self) -> list[CellProblem]:
        """The unreadable cells of every row (reads every row)."""
        return [problem for index in range(len(self)) for problem in self.read_row(index)[1]]

    @property
    def duplicates(self) -> dict[str, list[int]]:
        """Image references (case-folded) and key values found in more than one row -> their row numbers."""
        if self._duplicates is None:
            found: list[tuple[str, list[int]]] = []
            for stem in self.by_stem.more:  # rows sharing a reference share its stem
                by_ref: dict[str, list[int]] = {}
                for index in self.by_stem.get(stem):
                    by_ref.setdefault(self.image_ref(index).casefold(), []).append(
                        self._rows.row_numbers[index]
                    )
                found += [(ref, rows) for ref, rows in by_ref.items() if len(rows) > 1]
            found.sort(key=lambda item: item[1][0])
            keys = sorted(self.by_key.more, key=lambda value: self.by_key.first[value])
            found += [(key, [self._rows.row_numbers[i] for i in self.by_key.get(key)]) for key in keys]
            self._duplicates = {}
            for value, rows in found:
                self._duplicates.setdefault(value, rows)
        return self._duplicates

    def match(self, images: list[Path], roots: list[Path] | None = None) -> TruthMatch:
        """Each image's row (see the module docstring for the order); rows may serve several images."""
        matcher = _Matcher(self, list(roots or []))
        records: dict[Path, TruthRecord] = {}
        matched_by: dict[Path, str] = {}
        unmatched: list[Path] = []
        used_rows: set[int] = set()
        for image in images:
            found = matcher.find(image)
            if found is None:
                unmatched.append(image)
                continue
            index, method = found
            record = self.read_row(index)[0]
            # A key match names the row by its key value, the others by the image reference.
            records[image] = replace(record, key=record.key if method == "key" else record.image_ref)
            matched_by[image] = method
            used_rows.add(index)
        problems = [problem for index in sorted(used_rows) for problem in self.read_row(index)[1]]
        return TruthMatch(
            records=records,
            matched_by=matched_by,
            unmatched_images=unmatched,
            unmatched_rows=len(self) - len(used_rows),
            duplicate_keys=self.duplicates,
            unparseable_cells=problems,
            malformed_rows=list(self.malformed_rows),
            total_rows=len(self),
        )


class _Matcher:
    """Finds each image's row in a `TruthTable`'s indexes; reads only the candidate rows it must compare."""

    def __init__(self, table: TruthTable, roots: list[Path]):
        self.table = table
        self.bases = [table.csv_path.parent] + [root.parent if root.is_file() else root for root in roots]

    def _ref(self, index: int) -> str:
        return self.table.image_ref(index)

    def _named(self, name: str) -> list[int]:
        """The rows whose image reference ends with the file name `name` (case-folded), in row order."""
        return [index for index in self.table.by_stem.get(_stem(name)) if _ref_name(self._ref(index)) == name]

    def _path_keys(self, index: int) -> set[str]:
        """Where the row's image reference points: relative to the CSV's folder or a scan root, or absolute."""
        ref_path = self._ref(index).replace("\\", "/")
        if "://" in ref_path:
            return set()
        candidates = [ref_path] if os.path.isabs(ref_path) else [base / ref_path for base in self.bases]
        return {_path_key(candidate) for candidate in candidates}

    def _best(self, candidates: list[int], image_parts: tuple[str, ...]) -> int:
        """Among rows sharing a file name, the one whose folders match the end of the image's path best."""

        def shared_tail(index: int) -> int:
            parts = tuple(part.casefold() for part in _ref_parts(self._ref(index)))
            count = 0
            for ours, theirs in zip(reversed(parts[:-1]), reversed(image_parts[:-1]), strict=False):
                if ours != theirs:
                    break
                count += 1
            return count

        tails = [shared_tail(index) for index in candidates]
        return candidates[tails.index(max(tails))]

    def find(self, image: Path) -> tuple[int, str] | None:
        """The index of the image's row and how it matched ("path", "name", "stem" or "key")."""
        table = self.table
        image_text = str(image)
        if "://" not in image_text:
            real = os.path.realpath(image_text)
            variants = dict.fromkeys([_path_key(image), _path_key(real)])
            names = dict.fromkeys(name for name in (_ref_name(image_text), _ref_name(real)) if name)
            candidates = sorted({index for name in names for index in self._named(name)})
            for variant in variants:
                for index in candidates:
                    if variant in self._path_keys(index):
                        return index, "path"
        parts = tuple(part.casefold() for part in _ref_parts(image_text))
        if not parts:
            return None
        name = parts[-1]
        candidates = self._named(name)
        if candidates:
            return self._best(candidates, parts), "name"
        stem = _stem(name)
        # "shoe1.png" and "shoe1" match shoe1.jpg; so does "nike.dunk" (a stem with a dot) for nike.dunk.jpg.
        candidates = sorted(set(table.by_stem.get(stem)) | set(self._named(stem)))
        if candidates:
            return self._best(candidates, parts), "stem"
        return self._find_by_key(name, stem)

    def _find_by_key(self, name: str, stem: str) -> tuple[int, str] | None:
        table = self.table
        if not table.by_key.first:
            return None
        if not table.key_explicit:
            index = table.by_key.first.get(stem)
            return None if index is None else (index, "key")
        best: int | None = None
        best_length = 0
        bounds = _boundaries(name)
        for i, start in enumerate(bounds):
            for end in bounds[i + 1 :]:
                length = end - start
                if length > table.longest_key:
                    break
                if length > best_length:
                    index = table.by_key.first.get(name[start:end])
                    if index is not None:
                        best, best_length = index, length
        return None if best is None else (best, "key")
