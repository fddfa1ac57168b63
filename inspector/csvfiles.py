"""CSV files people give us (catalogues, review decisions) and CSV files we write for them to open.

Reading (`read_csv_text`, `records`): the encoding is detected (UTF-8 with or without BOM, UTF-16 LE/BE as
Excel's "Unicode Text" writes it, else Windows-1252; anything else is refused), and so is the separator (, ; tab
or |, by the standard library's csv.Sniffer with a fallback on the header), after Excel's own first line
``sep=;`` when there is one. Records come with their byte offsets and the lines they span, so that a malformed
one can be named by its lines and skipped without moving any other.

Writing (`formula_safe`, `unguarded`): a cell that a spreadsheet would run as a formula is neutralised as OWASP
advises against CSV injection (https://owasp.org/www-community/attacks/CSV_Injection): a single quote goes in
front of a text that starts with = + - @ tab, CR or LF. Plain numbers ("-3", "+1.5e3") are left as they are: a
spreadsheet reads them as numbers, never as formulas. A text that already starts with quotes before such a
character gets one more, so `unguarded` (used when we read back a decisions CSV the report wrote) gives back
every value exactly. The report's JavaScript applies the same rule (`templates/review.js`, `csvCell`).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from inspector.errors import InputError

__all__ = [
    "CsvKind",
    "CsvText",
    "QUOTE_LEFT_OPEN",
    "Record",
    "formula_safe",
    "read_csv_text",
    "records",
    "resyncing_records",
    "Unreadable",
    "split_record",
    "unguarded",
    "well_quoted",
]


@dataclass(frozen=True)
class CsvKind:
    """What a kind of CSV file is called in messages, how the user gives it, and the error its problems raise."""

    #: "truth CSV": the file's name in messages, in lower case.
    noun: str
    #: "--truth": where the user gave it, for "check the --truth path".
    option: str
    #: What it needs, for "it needs ...".
    content: str
    error: type[InputError] = InputError

    @property
    def title(self) -> str:
        return self.noun[:1].upper() + self.noun[1:]


@dataclass(frozen=True)
class CsvText:
    """A CSV file read as UTF-8 bytes, with what reading it found out."""

    path: Path
    #: The file as UTF-8 (a UTF-8 file as read; other encodings converted).
    data: bytes
    #: Where the records start in `data`: after a byte-order mark and Excel's "sep=" line.
    start: int
    #: The 1-based line at `start` (2 after a "sep=" line).
    first_line: int
    #: The codec the file was read with ("utf-8", "utf-8-sig", "utf-16", "cp1252", …).
    encoding: str
    delimiter: str


class Record(NamedTuple):
    """One record of a CSV file: its cells, its byte span in `CsvText.data` and the lines it spans (1-based). A
    tuple: a catalogue has millions."""

    cells: list[str]
    start: int
    end: int
    first_line: int
    last_line: int

    def lines(self) -> str:
        """The line or lines it spans ("12" or "12-40"), for messages."""
        return (
            str(self.first_line)
            if self.last_line == self.first_line
            else f"{self.first_line}-{self.last_line}"
        )


#: Byte-order marks, longest first (a UTF-32 LE mark starts like a UTF-16 LE one), and the codec that reads them.
_BOMS: tuple[tuple[bytes, str, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)
#: Field separators tried, in the order that wins a tie.
DELIMITERS = ",;\t|"
#: The first line Excel may write to name the separator ("sep=;").
_EXCEL_SEPARATOR_RE = re.compile(r"[ \t]*sep=([^\r\n])[ \t]*(\r\n|\r|\n)", re.IGNORECASE)
#: How much of the file the delimiter sniffer reads.
_SNIFF_CHARS = 64 * 1024


def read_csv_text(path: str | Path, kind: CsvKind) -> CsvText:
    """The file at `path` as UTF-8 with its separator found; a one-line `kind.error` if it cannot be used."""
    path = Path(path)
    data, start, encoding = _as_utf8(_read_bytes(path, kind), path, kind)
    sample = data[start : start + _SNIFF_CHARS].decode("utf-8", "ignore")
    if len(data) - start > _SNIFF_CHARS:
        sample = sample[: sample.rfind("\n") + 1] or sample  # whole lines only
    elif not sample.strip():
        raise kind.error(f"{kind.title} {path} is empty; it needs {kind.content}.")
    excel_hint = _EXCEL_SEPARATOR_RE.match(sample)
    if excel_hint:  # "sep=;": Excel's own line naming the separator, not the header
        return CsvText(
            path, data, start + len(excel_hint.group(0).encode("utf-8")), 2, encoding, excel_hint.group(1)
        )
    return CsvText(path, data, start, 1, encoding, _delimiter(sample))


def records(
    text: CsvText, kind: CsvKind, start: int | None = None, first_line: int | None = None
) -> Iterator[Record]:
    """Each non-blank record of `text` from `start` (a byte offset at the start of line `first_line`; by default
    where the records start), header included.

    A record the csv module cannot read at all (a cell over its size limit: a quote left open in a large file)
    is a one-line `kind.error` naming its first line."""
    try:
        yield from _records(text, text.start if start is None else start, first_line or text.first_line)
    except _Unreadable as error:
        raise kind.error(
            f"Cannot read {kind.noun} {text.path} from line {error.line}: {error.reason} (a quote left open?)."
        ) from None


#: `Unreadable.reason` of a record that opens a quote it never closes.
QUOTE_LEFT_OPEN = "a quote is left open"


class Unreadable(NamedTuple):
    """A line that starts no record anyone can read (a quote left open); reading went on at the next line."""

    line: int
    reason: str


def resyncing_records(text: CsvText) -> Iterator[Record | Unreadable]:
    """Like `records`, but a record that opens a quote it never closes, or that the csv module cannot read, is
    an `Unreadable` for its first line, and reading goes on at the line after it: the lines a stray quote would
    swallow into one cell are read as the records they are."""
    start, line = text.start, text.first_line
    while True:
        try:
            for record in _records(text, start, line):
                if record.last_line > record.first_line and not well_quoted(
                    text.data[record.start : record.end], text.delimiter
                ):
                    yield Unreadable(record.first_line, QUOTE_LEFT_OPEN)
                    start, line = next_line(text.data, record.start), record.first_line + 1
                    break
                yield record
            else:
                return
        except _Unreadable as error:
            yield Unreadable(error.line, error.reason)
            start, line = next_line(text.data, error.start), error.line + 1


class _Unreadable(Exception):
    def __init__(self, start: int, line: int, reason: str) -> None:
        super().__init__(reason)
        self.start, self.line, self.reason = start, line, reason


def _records(text: CsvText, start: int, first_line: int) -> Iterator[Record]:
    """`records` from byte `start`, line `first_line`; `_Unreadable` where the csv module gives up.

    csv.reader pulls one line at a time and never reads ahead, so the offsets of the lines it pulled for a
    record are that record's span."""
    line_number = first_line - 1
    position = start
    data = text.data

    def lines() -> Iterator[str]:
        nonlocal position, line_number
        stream = io.BytesIO(data)
        stream.seek(start)
        for line in io.TextIOWrapper(stream, encoding="utf-8", newline=""):
            position += len(line) if line.isascii() else len(line.encode("utf-8"))
            line_number += 1
            yield line

    reader = csv.reader(lines(), delimiter=text.delimiter, skipinitialspace=True)
    record_start, record_line = start, first_line
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise _Unreadable(record_start, record_line, str(error)) from None
        if cells and (len(cells) > 1 or cells[0].strip()):
            yield Record(cells, record_start, position, record_line, line_number)
        record_start, record_line = position, line_number + 1


def split_record(record: bytes, delimiter: str) -> list[str]:
    """The cells of one record (UTF-8 bytes), read as `records` reads them."""
    return next(
        csv.reader(
            io.StringIO(record.decode("utf-8"), newline=""), delimiter=delimiter, skipinitialspace=True
        )
    )


def well_quoted(record: bytes, delimiter: str) -> bool:
    """Whether a record spanning several lines closes every quote it opens. A quote left open swallows the
    lines after it into one cell, which can leave the cell count right: read strictly, the record fails."""
    text = record.decode("utf-8")
    try:
        list(
            csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True, strict=True)
        )
    except csv.Error:
        return False
    return True


def next_line(data: bytes, offset: int) -> int:
    """The offset of the line after the one at `offset` (lines end with \\n, \\r\\n or \\r, as `records` reads)."""
    match = _LINE_END_RE.search(data, offset)
    return len(data) if match is None else match.end()


_LINE_END_RE = re.compile(rb"\r\n|\r|\n")


# --------------------------------------------------------------------------------------------------------------
# Encoding and separator
# --------------------------------------------------------------------------------------------------------------


def _read_bytes(path: Path, kind: CsvKind) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise kind.error(f"{kind.title} {path} does not exist; check the {kind.option} path.") from None
    except IsADirectoryError:
        raise kind.error(
            f"{kind.title} {path} is a folder; pass the CSV file itself to {kind.option}."
        ) from None
    except OSError as error:
        raise kind.error(f"Cannot read {kind.noun} {path}: {error.strerror or error}.") from None


def _utf16_without_bom(sample: bytes) -> str | None:
    """The UTF-16 codec ("utf-16-le" or "-be") when the zero bytes sit at every other position, as in mostly-ASCII UTF-16."""
    even, odd = sample[0::2], sample[1::2]
    even_zeros, odd_zeros = even.count(0) / max(1, len(even)), odd.count(0) / max(1, len(odd))
    if odd_zeros > 0.3 and even_zeros < 0.05:
        return "utf-16-le"
    if even_zeros > 0.3 and odd_zeros < 0.05:
        return "utf-16-be"
    return None


def _valid_utf8(data: bytes, start: int) -> bool:
    """Whether `data[start:]` is UTF-8, checked a chunk at a time (no second copy of a large file)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    try:
        for offset in range(start, len(data), 1 << 20):
            decoder.decode(view[offset : offset + (1 << 20)])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _as_utf8(data: bytes, path: Path, kind: CsvKind) -> tuple[bytes, int, str]:
    """The CSV file as UTF-8 bytes, where its text starts in them (after a BOM), and the codec that read it.

    A byte-order mark decides (UTF-8, UTF-16 LE/BE as in Excel's "Unicode Text" export, UTF-32); without one,
    UTF-16 is recognised by its zero bytes, then UTF-8 is tried, then Windows-1252 (what Excel writes for
    "CSV" on Western-European systems). Anything else is refused: guessing would garble every name silently.
    UTF-8 files are kept as read: rows are decoded one at a time, when they are read.
    """
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            if codec == "utf-8-sig" and _valid_utf8(data, len(bom)):
                return data, len(bom), codec
            try:
                return data.decode(codec).encode("utf-8"), 0, codec
            except UnicodeDecodeError:
                raise kind.error(
                    f"{kind.title} {path} starts with a {name} byte-order mark but is not {name} text; "
                    "save it again as CSV UTF-8."
                ) from None
    if b"\x00" in data[:4096]:
        codec = _utf16_without_bom(data[:4096])
        try:
            if codec is None:
                raise UnicodeDecodeError("binary", b"", 0, 1, "zero bytes")
            return data.decode(codec).encode("utf-8"), 0, codec
        except UnicodeDecodeError:
            raise kind.error(
                f"{kind.title} {path} is not a text file (an Excel workbook?); save it as CSV UTF-8."
            ) from None
    if _valid_utf8(data, 0):
        return data, 0, "utf-8"
    try:
        return data.decode("cp1252").encode("utf-8"), 0, "cp1252"
    except UnicodeDecodeError:
        raise kind.error(
            f"{kind.title} {path} is neither UTF-8, UTF-16 nor Windows-1252 text; save it as CSV UTF-8."
        ) from None


def _first_record(text: str, delimiter: str) -> list[str]:
    """The first non-blank record of `text` split with `delimiter` (quotes respected)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True)
    try:
        return next((cells for cells in reader if any(cell.strip() for cell in cells)), [])
    except csv.Error:
        return []


def _delimiter(sample: str) -> str:
    """The field separator among , ; tab | in the first lines of the file (`sample`): the standard library's
    sniffer decides (it looks at how quotes and separators sit across lines: ``"Name, full";"Price"`` is two
    columns split by ";"), as long as it splits the header; otherwise the separator that splits the header into
    the most cells (quotes respected), commas on a tie or when none does (a one-column file)."""
    header_cells = {delimiter: len(_first_record(sample, delimiter)) for delimiter in DELIMITERS}
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        sniffed = None
    if sniffed in header_cells and header_cells[sniffed] > 1:
        return sniffed
    best = max(DELIMITERS, key=lambda delimiter: header_cells[delimiter])
    return best if header_cells[best] > 1 else ","


# --------------------------------------------------------------------------------------------------------------
# Formula injection
# --------------------------------------------------------------------------------------------------------------

#: A text a spreadsheet may run as a formula (OWASP's = + - @ tab CR, and LF), after any quotes we put in front.
_FORMULA_RE = re.compile(r"'*[=+\-@\t\r\n]")
#: A plain number: a spreadsheet reads it as one even with a sign in front.
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def formula_safe(value: object) -> object:
    """`value` as a CSV cell a spreadsheet shows as text: a text that could run as a formula gets a single quote
    in front (so does one that already starts with quotes before such a character, so that `unguarded`
    gives back every value exactly). Numbers, plain numeric texts and everything else stay as they are."""
    if isinstance(value, str) and _FORMULA_RE.match(value) and not _NUMBER_RE.fullmatch(value):
        return "'" + value
    return value


def unguarded(text: str) -> str:
    """The value `formula_safe` was given, from the cell it wrote: one quote in front of a formula-like text
    is removed (written by hand in a spreadsheet, it meant the same thing: "this is text")."""
    if text.startswith("'") and _FORMULA_RE.match(text, 1):
        return text[1:]
    return text
