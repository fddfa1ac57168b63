"""The shared CSV reader (catalogues and decisions files) and the formula guard of every CSV we write."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.csvfiles import CsvKind, Unreadable, read_csv_text, records, resyncing_records
from inspector.errors import InputError

KIND = CsvKind("test CSV", "--test", "a header line")


def cells_and_problems(path: Path) -> list:
    return [
        (item.line, item.reason) if isinstance(item, Unreadable) else (item.first_line, item.cells)
        for item in resyncing_records(read_csv_text(path, KIND))
    ]


def test_a_quote_left_open_is_its_first_line_and_reading_goes_on_after_it(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text('a,b\n1,"x\n2,y\r\n\n3,z\n')
    assert cells_and_problems(path) == [
        (1, ["a", "b"]),
        (2, "a quote is left open"),
        (3, ["2", "y"]),
        (5, ["3", "z"]),
    ]


def test_a_quote_left_open_in_a_large_file_loses_nothing_after_it(tmp_path: Path) -> None:
    """Past the csv module's cell size limit (128 KiB) the reader raises instead of swallowing: that line is
    skipped the same way. `records` (catalogues) says where, in one line."""
    rows = [f"{i},{'v' * 100}\n" for i in range(2000)]
    path = tmp_path / "big.csv"
    path.write_text('a,b\n0,"open\n' + "".join(rows))
    found = cells_and_problems(path)
    assert found[:2] == [(1, ["a", "b"]), (2, "field larger than field limit (131072)")]
    assert [cells for _, cells in found[2:]] == [row.rstrip("\n").split(",") for row in rows]
    with pytest.raises(InputError, match=r"^Cannot read test CSV .* from line 2: field larger than field limit"):
        list(records(read_csv_text(path, KIND), KIND))
