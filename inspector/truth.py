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

Nothing here is fatal once the CSV is read: unparseable cells, duplicate keys, images without a row and rows
without an image are counted in the `TruthMatch`.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import pandas as pd

from inspector.errors import TruthError  # noqa: F401 - part of this module's API
from inspector.fields import ProductFields, TruthRecord
from inspector.parsing import clean_text, normalise_currency, normalise_size, parse_price, parse_size_prices

__all__ = [
    "COLUMN_CANDIDATES",
    "MAPPING_KEYS",
    "CellProblem",
    "TruthError",
    "TruthMatch",
    "TruthTable",
    "load_truth",
    "parse_column_mapping",
]



#: Keys accepted by `parse_column_mapping`, besides "size:<size>" for a column holding one size's price.
MAPPING_KEYS: tuple[str, ...] = ("brand", "title", "category", "price", "currency", "sizes", "path", "key")
_MAPPING_ALIASES = {
    "image": "path",
    "image_path": "path",
    "file": "path",
    "size_prices": "sizes",
    "name": "title",
}

#: Column names tried for each field, best first, compared after `_normalise_header`.
COLUMN_CANDIDATES: dict[str, tuple[str, ...]] = {
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
    "title": (
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
    "brand": ("brand", "brand_name", "manufacturer", "maker", "designer", "vendor"),
    "category": (
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
    "price": (
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
    "currency": ("currency", "currency_code", "currency_iso", "ccy", "curr"),
    "sizes": ("sizes", "size_prices", "size_price", "prices_by_size", "price_by_size", "size_price_map"),
}

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
class CellProblem:
    """A catalogue cell that could not be read; the rest of its row is still used."""

    #: 1-based data row number (header excluded).
    row_number: int
    column: str
    value: str
    problem: str


@dataclass
class TruthMatch:
    """Which catalogue row each image got, and everything that did not fit."""

    #: Keyed by the image Path objects passed to `TruthTable.match`.
    records: dict[Path, TruthRecord]
    #: How each matched image was matched: "path", "name", "stem" or "key".
    matched_by: dict[Path, str]
    unmatched_images: list[Path]
    unmatched_rows: list[TruthRecord]
    #: Path or key values found in more than one row -> their row numbers (the first row is used).
    duplicate_keys: dict[str, list[int]]
    unparseable_cells: list[CellProblem]
    #: Lines of the CSV with more fields than the header (extra fields dropped).
    malformed_lines: int = 0
    total_rows: int = 0

    def summary(self) -> dict:
        """Counts for the CLI's summary and the report."""
        by_method: dict[str, int] = {"path": 0, "name": 0, "stem": 0, "key": 0}
        for method in self.matched_by.values():
            by_method[method] = by_method.get(method, 0) + 1
        return {
            "rows": self.total_rows,
            "images": len(self.records) + len(self.unmatched_images),
            "matched_images": len(self.records),
            "unmatched_images": len(self.unmatched_images),
            "unmatched_rows": len(self.unmatched_rows),
            "duplicate_keys": len(self.duplicate_keys),
            "unparseable_cells": len(self.unparseable_cells),
            "malformed_lines": self.malformed_lines,
            "matched_by": by_method,
        }


@dataclass
class TruthTable:
    """The rows of a truth CSV, read into TruthRecords."""

    csv_path: Path
    #: Field -> CSV column used ("path", "key", brand/title/…, "sizes", and "size:<size>" per size column).
    columns: dict[str, str]
    records: list[TruthRecord]
    #: Value of each row's key column (None where the CSV has none), by row number.
    keys: dict[int, str | None]
    #: True when the key column was named by the user (substring matching), False when found automatically.
    key_explicit: bool
    unparseable_cells: list[CellProblem] = field(default_factory=list)
    malformed_lines: int = 0
    column_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

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
            record, method = found
            records[image] = record
            matched_by[image] = method
            used_rows.add(record.row_number)
        return TruthMatch(
            records=records,
            matched_by=matched_by,
            unmatched_images=unmatched,
            unmatched_rows=[record for record in self.records if record.row_number not in used_rows],
            duplicate_keys=matcher.duplicates,
            unparseable_cells=list(self.unparseable_cells),
            malformed_lines=self.malformed_lines,
            total_rows=len(self.records),
        )


# --------------------------------------------------------------------------------------------------------------
# Column mapping
# --------------------------------------------------------------------------------------------------------------


def parse_column_mapping(text: str) -> dict[str, str]:
    """``brand=Brand,title="Product Name",price=Cost,size:6.5="Price 6.5"`` -> {field: column}.

    Keys: brand, title, category, price, currency, sizes (one "size:price;…" column), path, key, and
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
    mapping: dict[str, str] = {}
    for part in parts:
        key, separator, column = part.partition("=")
        key, column = key.strip().lower(), column.strip()
        if not separator or not key or not column:
            raise TruthError(
                f"--truth-columns: {part.strip()!r} is not FIELD=COLUMN; write it like brand=Brand,price=Cost"
            )
        key = _MAPPING_ALIASES.get(key, key)
        if key.startswith("size:"):
            size = normalise_size(key[len("size:") :])
            if not size:
                raise TruthError(
                    f"--truth-columns: {part.strip()!r} names no size; write it like size:6.5=Col"
                )
            key = f"size:{size}"
        elif key not in MAPPING_KEYS:
            raise TruthError(
                f"--truth-columns: unknown field {key!r}; use {', '.join(MAPPING_KEYS)} or size:<size>."
            )
        if key in mapping:
            raise TruthError(f"--truth-columns: {key!r} is mapped twice.")
        mapping[key] = column
    return mapping


# --------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TruthError(f"Truth CSV {path} does not exist; check the --truth path.") from None
    except IsADirectoryError:
        raise TruthError(f"Truth CSV {path} is a folder; pass the CSV file itself to --truth.") from None
    except OSError as error:
        raise TruthError(f"Cannot read truth CSV {path}: {error.strerror or error}.") from None
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _delimiter(text: str) -> str:
    """The field separator: whichever of , ; tab | the header line uses most (commas when none)."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    counts = {sep: header.count(sep) for sep in (",", ";", "\t", "|")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def _read_frame(path: Path) -> tuple[pd.DataFrame, int]:
    text = _read_text(path)
    if not text.strip():
        raise TruthError(f"Truth CSV {path} is empty; it needs a header line and one row per product.")
    malformed = 0

    def keep_known_fields(fields: list[str]) -> list[str]:
        nonlocal malformed
        malformed += 1
        return fields[:expected]

    header_fields = next(csv.reader(io.StringIO(text.lstrip("\n")), delimiter=_delimiter(text)), [])
    expected = len(header_fields)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=_delimiter(text),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            engine="python",
            on_bad_lines=keep_known_fields,
            skipinitialspace=True,
        )
    except pd.errors.EmptyDataError:
        raise TruthError(
            f"Truth CSV {path} has no header line; the first line must name the columns."
        ) from None
    except (pd.errors.ParserError, csv.Error, ValueError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TruthError(
            f"Cannot read truth CSV {path}: {first_line}. Check that it is a CSV file."
        ) from None
    frame.columns = [str(column).strip() for column in frame.columns]
    return frame, malformed


def _find_column(columns: list[str], wanted: str) -> str | None:
    """The column named `wanted`, exactly or after ignoring case, spaces and punctuation."""
    if wanted in columns:
        return wanted
    target = _normalise_header(wanted)
    return next((column for column in columns if _normalise_header(column) == target), None)


def _detect_columns(
    frame_columns: list[str], mapping: dict[str, str], key_column: str | None, path: Path
) -> tuple[dict[str, str], bool]:
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
    by_normalised: dict[str, str] = {}
    for column in frame_columns:
        by_normalised.setdefault(_normalise_header(column), column)
    for name, candidates in COLUMN_CANDIDATES.items():
        if name in columns:
            continue
        for candidate in candidates:
            column = by_normalised.get(candidate)
            if column is not None and column not in used:
                columns[name] = column
                used.add(column)
                break
    if not any(key.startswith("size:") for key in mapping):
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
            f"Truth CSV {path} has no product columns (brand, title, category, price, currency, sizes). "
            f'Columns found: {found_list}. Name them with --truth-columns, e.g. title="Product Name",price=Cost.'
        )
    if "path" not in columns and "key" not in columns:
        raise TruthError(
            f"Truth CSV {path} has no column that names the image (a path, file name or product code). "
            f"Columns found: {found_list}. Name one with --truth-columns path=COLUMN or --truth-key COLUMN."
        )
    return columns, key_explicit


def load_truth(
    csv_path: str | Path, columns: dict[str, str] | None = None, key_column: str | None = None
) -> TruthTable:
    """Reads a truth CSV. `columns` maps fields to column names (from `parse_column_mapping`); the others are
    found by name. `key_column` names a column whose values appear in image file names (``--truth-key``)."""
    path = Path(csv_path)
    frame, malformed = _read_frame(path)
    frame_columns = list(frame.columns)
    mapping = dict(columns or {})
    for key in list(mapping):
        canonical = _MAPPING_ALIASES.get(key, key)
        if canonical not in MAPPING_KEYS and not canonical.startswith("size:"):
            raise TruthError(f"Unknown truth field {key!r}; use {', '.join(MAPPING_KEYS)} or size:<size>.")
        mapping[canonical] = mapping.pop(key)
    used_columns, key_explicit = _detect_columns(frame_columns, mapping, key_column, path)

    problems: list[CellProblem] = []
    records: list[TruthRecord] = []
    keys: dict[int, str | None] = {}
    rows = frame.to_dict("records")
    for row_number, row in enumerate(rows, start=1):
        fields, image_ref, key = _read_row(row, row_number, used_columns, problems)
        keys[row_number] = key
        records.append(
            TruthRecord(row_number=row_number, key=key or image_ref, fields=fields, image_ref=image_ref)
        )
    return TruthTable(
        csv_path=path,
        columns=used_columns,
        records=records,
        keys=keys,
        key_explicit=key_explicit,
        unparseable_cells=problems,
        malformed_lines=malformed,
        column_names=frame_columns,
    )


def _cell(row: dict, column: str | None) -> str | None:
    if column is None:
        return None
    value = row.get(column)
    return value.strip() if isinstance(value, str) else None


def _read_row(
    row: dict, row_number: int, columns: dict[str, str], problems: list[CellProblem]
) -> tuple[ProductFields, str | None, str | None]:
    def problem(column: str, value: str, what: str) -> None:
        problems.append(CellProblem(row_number, column, value, what))

    fields = ProductFields(
        brand=clean_text(_cell(row, columns.get("brand"))),
        title=clean_text(_cell(row, columns.get("title"))),
        category=clean_text(_cell(row, columns.get("category"))),
    )
    price_currency = None
    raw_price = _cell(row, columns.get("price"))
    if clean_text(raw_price) is not None:
        fields.price, price_currency = parse_price(raw_price)
        if fields.price is None:
            problem(columns["price"], raw_price, "not a price")
    raw_currency = _cell(row, columns.get("currency"))
    if clean_text(raw_currency) is not None:
        fields.currency = normalise_currency(raw_currency)
        if fields.currency is None:
            problem(columns["currency"], raw_currency, "not a currency (use an ISO 4217 code such as USD)")
    if fields.currency is None:
        fields.currency = price_currency

    raw_sizes = _cell(row, columns.get("sizes"))
    if clean_text(raw_sizes) is not None:
        sizes, bad = parse_size_prices(raw_sizes)
        for size, amount in sizes.items():
            fields.size_prices.setdefault(size, amount)
        for entry in bad:
            problem(columns["sizes"], entry, "not a size:price pair")
    for key, column in columns.items():
        if not key.startswith("size:"):
            continue
        raw = _cell(row, column)
        if clean_text(raw) is None:
            continue
        amount, _ = parse_price(raw)
        if amount is None:
            problem(column, raw, "not a price")
        else:
            fields.size_prices.setdefault(key[len("size:") :], amount)

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


class _Matcher:
    def __init__(self, table: TruthTable, roots: list[Path]):
        self.table = table
        self.duplicates: dict[str, list[int]] = {}
        self.by_path: dict[str, TruthRecord] = {}
        self.by_name: dict[str, list[tuple[tuple[str, ...], TruthRecord]]] = {}
        self.by_stem: dict[str, list[tuple[tuple[str, ...], TruthRecord]]] = {}
        self.by_key: dict[str, TruthRecord] = {}
        bases = [table.csv_path.parent] + [root.parent if root.is_file() else root for root in roots]

        seen_refs: dict[str, list[int]] = {}
        seen_keys: dict[str, list[int]] = {}
        for record in table.records:
            if record.image_ref:
                seen_refs.setdefault(record.image_ref.casefold(), []).append(record.row_number)
                parts = _ref_parts(record.image_ref)
                ref_path = record.image_ref.replace("\\", "/")
                if "://" not in ref_path:
                    candidates = (
                        [ref_path] if os.path.isabs(ref_path) else [base / ref_path for base in bases]
                    )
                    for candidate in candidates:
                        self.by_path.setdefault(_path_key(candidate), record)
                if parts:
                    folded = tuple(part.casefold() for part in parts)
                    self.by_name.setdefault(folded[-1], []).append((folded, record))
                    stem = PurePosixPath(folded[-1]).stem
                    self.by_stem.setdefault(stem, []).append((folded, record))
                    if stem != folded[-1]:  # "nike.dunk" may be a stem itself: nike.dunk.jpg
                        self.by_stem.setdefault(folded[-1], []).append((folded, record))
            key = table.keys.get(record.row_number)
            if key:
                seen_keys.setdefault(key.casefold(), []).append(record.row_number)
                self.by_key.setdefault(key.casefold(), record)
        for value, rows in list(seen_refs.items()) + list(seen_keys.items()):
            if len(rows) > 1:
                self.duplicates.setdefault(value, rows)
        self.longest_key = max((len(key) for key in self.by_key), default=0)

    @staticmethod
    def _best(
        candidates: list[tuple[tuple[str, ...], TruthRecord]], image_parts: tuple[str, ...]
    ) -> TruthRecord:
        """Among rows sharing a file name, the one whose folders match the end of the image's path best."""

        def shared_tail(parts: tuple[str, ...]) -> int:
            count = 0
            for ours, theirs in zip(reversed(parts[:-1]), reversed(image_parts[:-1]), strict=False):
                if ours != theirs:
                    break
                count += 1
            return count

        best = max(shared_tail(parts) for parts, _ in candidates)
        return next(record for parts, record in candidates if shared_tail(parts) == best)

    def find(self, image: Path) -> tuple[TruthRecord, str] | None:
        image_text = str(image)
        if "://" not in image_text:
            for variant in {_path_key(image), _path_key(os.path.realpath(image_text))}:
                record = self.by_path.get(variant)
                if record is not None:
                    return replace(record, key=record.image_ref), "path"
        parts = tuple(part.casefold() for part in _ref_parts(image_text))
        if not parts:
            return None
        name = parts[-1]
        if name in self.by_name:
            record = self._best(self.by_name[name], parts)
            return replace(record, key=record.image_ref), "name"
        stem = PurePosixPath(name).stem
        if stem in self.by_stem:
            record = self._best(self.by_stem[stem], parts)
            return replace(record, key=record.image_ref), "stem"
        return self._find_by_key(name, stem)

    def _find_by_key(self, name: str, stem: str) -> tuple[TruthRecord, str] | None:
        if not self.by_key:
            return None
        if not self.table.key_explicit:
            record = self.by_key.get(stem)
            return (replace(record, key=self.table.keys[record.row_number]), "key") if record else None
        best: TruthRecord | None = None
        best_length = 0
        bounds = _boundaries(name)
        for i, start in enumerate(bounds):
            for end in bounds[i + 1 :]:
                length = end - start
                if length > self.longest_key:
                    break
                if length > best_length:
                    record = self.by_key.get(name[start:end])
                    if record is not None:
                        best, best_length = record, length
        if best is None:
            return None
        return replace(best, key=self.table.keys[best.row_number]), "key"
