"""The shared CSV reader (catalogues and decisions files) and the formula guard of every CSV we write."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.csvfiles import (
    CsvKind,
    Unreadable,
    formula_safe,
    read_csv_text,
    records,
    resyncing_records,
    unguarded,
)
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


#: (value, the cell we write): OWASP's list (= + - @ tab CR) and LF get a quote; plain numbers and other texts
#: stay; a text already starting with quotes before such a character gets one more, so that every value reads back.
GUARDED = [
    ("=1+1", "'=1+1"),
    ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("-2+3", "'-2+3"),
    ("@SUM(1)", "'@SUM(1)"),
    ("\tx", "'\tx"),
    ("\rx", "'\rx"),
    ("\nx", "'\nx"),
    ("'=1", "''=1"),
    ("''@x", "'''@x"),
    ("-3", "-3"),
    ("+1.5e3", "+1.5e3"),
    ("-.5", "-.5"),
    ("'quoted", "'quoted"),
    ("a=b", "a=b"),
    ("", ""),
    (" =1", " =1"),
]


@pytest.mark.parametrize(("value", "cell"), GUARDED)
def test_formula_safe_guards_formulas_and_unguarded_gives_every_value_back(value: str, cell: str) -> None:
    assert formula_safe(value) == cell
    assert unguarded(cell) == value


def test_formula_safe_leaves_non_texts_alone() -> None:
    assert [formula_safe(value) for value in (None, -3, -0.5, 1)] == [None, -3, -0.5, 1]


def test_the_reports_csv_cells_follow_the_same_rule(tmp_path: Path) -> None:
    """The report's decisions download (templates/review.js) guards cells like `formula_safe`: its csvCell runs
    in Node here (the browser test runs it in Chromium, through the whole review)."""
    import json
    import re
    import shutil
    import subprocess

    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed (the browser test checks the download in Chromium)")
    source = (Path(__file__).parents[1] / "templates" / "review.js").read_text()
    block = re.search(r"// csv cells: begin\n(.*?)// csv cells: end\n", source, re.S)
    assert block, "review.js lost its csv cells block"
    values = [value for value, _ in GUARDED] + ["a,b", 'say "hi"', "-1,5"]
    script = block.group(1) + f"console.log(JSON.stringify({json.dumps(values)}.map(csvCell).concat([csvCell(-3), csvCell(null)])))"
    found = json.loads(subprocess.run([node, "-e", script], capture_output=True, text=True, check=True).stdout)
    expected = []
    for value in values:
        text = str(formula_safe(value))
        expected.append('"' + text.replace('"', '""') + '"' if re.search(r'[",\r\n]', text) else text)
    assert found == expected + ["-3", ""]
