"""Decisions in, corrections out: `inspector review import` and `inspector export` through CliRunner."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

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
    assert result.stdout == "Decisions: 7 rows read, 3 added, 0 updated, 0 unchanged, 4 skipped\n"
    zero = "0" * 12
    assert result.stderr.splitlines() == [
        "Skipped line 5: unknown run 9, skipped",
        f"Skipped line 6: image {zero} is not in run 1, skipped",
        f"Skipped line 7: run 1 has no result for field 'colour' of image {decided['shas'][0][:12]}, skipped",
        "Skipped line 8: unknown decision 'maybe' (use catalogue_wrong, model_wrong, both_fine), skipped",
    ]
    again = CliRunner().invoke(cli, args)
    assert again.stdout == "Decisions: 7 rows read, 0 added, 0 updated, 3 unchanged, 4 skipped\n"
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
    assert result.stdout == "Decisions: 1 rows read, 0 added, 1 updated, 0 unchanged, 0 skipped\n"


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
