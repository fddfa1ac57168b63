"""The command line, run through click's CliRunner with the fake model: exact output, one-line errors."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url
from test_store import postgres_server, postgres_url  # noqa: F401 - fixtures

from inspector import __version__
from inspector.cli import cli
from inspector.discovery import discover


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def write_answers(path: Path, answers: list) -> str:
    path.write_text(json.dumps(answers))
    return f"fake:{path}"


def test_scan_prints_summary_and_writes_db_and_report(runner, tmp_path, sample_dir):
    n_images = len(discover([sample_dir]))
    model = write_answers(tmp_path / "answers.json", ['{"brand": "Acme", "price": 10, "currency": "USD"}'] * n_images)
    db, report = tmp_path / "results.db", tmp_path / "report.html"
    result = runner.invoke(
        cli,
        ["scan", str(sample_dir), "--truth", str(sample_dir / "truth.csv"), "--model", model,
         "--db", str(db), "--report", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(rf"Run 1: {n_images} images answered, 0 failed \([0-9.]+ images/s\)", lines[0])
    assert lines[1] == f"Truth: {n_images} of {n_images} images matched a row, 0 of {n_images} rows matched no image"
    assert f"Database: {db}" in lines
    assert lines[-1] == f"Report: {report}"
    assert "Per-field results" in result.stdout
    assert report.read_text().lower().startswith("<!doctype html>")
    with sqlite3.connect(db) as connection:
        assert connection.execute("select count(*) from predictions where brand = 'Acme'").fetchone()[0] == n_images

    # the same command again resumes the same run: nothing new to do, nothing stored twice
    again = runner.invoke(
        cli,
        ["scan", str(sample_dir), "--truth", str(sample_dir / "truth.csv"), "--model", model,
         "--db", str(db), "--report", str(report)],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert re.fullmatch(
        rf"Run 1: 0 images answered, 0 failed, {n_images} already done \([0-9.]+ images/s\)",
        again.stdout.splitlines()[0],
    )
    with sqlite3.connect(db) as connection:
        assert connection.execute("select count(*) from predictions").fetchone()[0] == n_images

    runs = runner.invoke(cli, ["runs", "--db", str(db)])
    assert runs.exit_code == 0
    assert "completed" in runs.stdout and model in runs.stdout

    other = tmp_path / "again.html"
    rendered = runner.invoke(cli, ["report", "1", "--db", str(db), "--out", str(other)])
    assert rendered.exit_code == 0, rendered.output
    assert rendered.stdout == f"Report: {other}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "/no/such/folder", "--model", "fake:x"], "/no/such/folder"),
        (["scan", "{samples}", "--model", "fake:/no/answers.json"], "fake model answers file /no/answers.json"),
        (["scan", "{samples}", "--model", "fake:{answers}", "--truth", "/no/truth.csv"], "/no/truth.csv"),
        (["scan", "{samples}", "--model", "fake:{answers}", "--prompt", "nope"], "nope"),
        (["scan", "{samples}", "--model", "fake:{answers}", "--price-tolerance", "cheap"], "cheap"),
        (["scan", "{samples}", "--model", "fake:{answers}", "--truth", "{samples}/truth.csv", "--truth-columns", ""],
         "--truth-columns is empty"),
        (["report", "--db", "{tmp}/missing.db"], "no database at {tmp}/missing.db; run `inspector scan` first"),
        # a report path that is a folder: refused before the scan runs, not a traceback after it
        (["scan", "{samples}", "--model", "fake:{answers}", "--report", "{tmp}"], "{tmp}"),
    ],
)
def test_bad_input_is_a_one_line_error(runner, tmp_path, sample_dir, args, message):
    answers = tmp_path / "answers.json"
    answers.write_text("[]")
    values = {"samples": str(sample_dir), "answers": str(answers), "tmp": str(tmp_path)}
    args = [a.format(**values) for a in args]
    result = runner.invoke(cli, [*args, "--db", str(tmp_path / "r.db")] if args[0] == "scan" else args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result.output
    assert message.format(**values) in error_lines[0]
    assert "Traceback" not in result.output


def test_report_to_a_folder_is_a_one_line_error(runner, tmp_path, sample_dir):
    answers = tmp_path / "answers.json"
    answers.write_text("[]")
    db = tmp_path / "r.db"
    scanned = runner.invoke(cli, ["scan", str(sample_dir), "--model", f"fake:{answers}", "--db", str(db), "--no-report"])
    assert scanned.exit_code == 0, scanned.output
    result = runner.invoke(cli, ["report", "--db", str(db), "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error:") and len(result.output.splitlines()) == 1, result.output


@pytest.mark.parametrize("tokenizer_args", [[], ["--tokenizer-dir", "{tmp}/nowhere"], ["--tokenizer-dir", "{tmp}"]])
def test_tiny_phi3v_without_tokenizer_files_is_a_one_line_error(runner, tmp_path, tokenizer_args):
    """Without the tokenizer and processor files the folder could not be scanned: refuse instead of writing it."""
    folder = tmp_path / "tiny"
    args = [a.format(tmp=tmp_path) for a in tokenizer_args]
    result = runner.invoke(cli, ["tiny-model", str(folder), "--family", "phi3v", *args])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: --family phi3v needs --tokenizer-dir"), result.output
    assert not folder.exists()


def test_truth_with_missing_mapped_column_lists_the_columns(runner, tmp_path, sample_dir):
    answers = tmp_path / "answers.json"
    answers.write_text("[]")
    result = runner.invoke(
        cli,
        ["scan", str(sample_dir), "--model", f"fake:{answers}", "--db", str(tmp_path / "r.db"),
         "--truth", str(sample_dir / "truth.csv"), "--truth-columns", "brand=Marque"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "Marque" in result.output and "full_price" in result.output


def test_scan_summary_counts_malformed_rows_and_unparseable_cells(runner, tmp_path, sample_dir):
    """Issue 8: an unquoted comma in the first data row shifted the whole catalogue (0 of 36 images matched)."""
    n_images = len(discover([sample_dir]))
    header, first, second, *rest = (sample_dir / "truth.csv").read_text(encoding="utf-8").splitlines()
    first = first.replace(",", ", Retro,", 2).replace(", Retro,", ",", 1)  # an extra cell inside the title
    second = re.sub(r",[0-9.]+,([A-Z]{3}),", r",cheap,\1,", second)  # a price cell that is not a price
    truth = tmp_path / "truth.csv"
    truth.write_text("\n".join([header, first, second, *rest]) + "\n", encoding="utf-8")
    model = write_answers(tmp_path / "answers.json", ["{}"] * n_images)
    result = runner.invoke(
        cli,
        ["scan", str(sample_dir), "--truth", str(truth), "--model", model, "--db", str(tmp_path / "r.db"),
         "--report", str(tmp_path / "report.html")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == (
        f"Truth: {n_images - 1} of {n_images} images matched a row, 0 of {n_images - 1} rows matched no image "
        "(1 unparseable cells, 1 malformed rows skipped: line 2)"
    )
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    for key, value in (("truth.malformed_rows", "1"), ("truth.malformed_at_lines", "2"), ("truth.unparseable_cells", "1")):
        assert f"<th>{key}</th><td>{value}</td>" in report


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "inspector", "--help"], capture_output=True, text=True, check=True
    )
    assert "scan" in result.stdout and "report" in result.stdout


def test_scan_has_no_shard_option(runner, sample_dir):
    """`--gpus` hands each process its shard in its ScanConfig, never on a command line: the option was dead."""
    result = runner.invoke(cli, ["scan", str(sample_dir), "--model", "fake:x", "--shard", "0/2"])
    assert result.exit_code == 2 and result.output.endswith("Error: No such option '--shard'.\n")


@pytest.mark.postgres  # its fixture is asked for by name below: CI must fail, not skip, without a server
def test_scan_never_shows_the_database_password(runner, tmp_path, sample_dir, request):
    """Issue 15: `scan` printed a Postgres password in its settings echo (db=...) and its Database: line."""
    url = make_url(request.getfixturevalue("postgres_url")).set(password="s3cr3t-pw").render_as_string(hide_password=False)
    shown = make_url(url).render_as_string(hide_password=True)
    assert ":***@" in shown
    model = write_answers(tmp_path / "answers.json", ["{}"] * len(discover([sample_dir])))
    result = runner.invoke(
        cli, ["scan", str(sample_dir), "--model", model, "--db", url, "--no-report", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    echo = (  # wrapped at 80 columns on stderr, where a line break may take the place of a space
        f"inspector {__version__} · scan config: model={model}, db={shown}, batch_size=auto, max_new_tokens=256, "
        f"device=cpu, dtype=auto\nloading {model} …\n"
    )
    assert "".join(result.stderr.split()) == "".join(echo.split()), result.stderr
    assert f"Database: {shown}" in result.stdout.splitlines()

    for command in (["runs"], ["report", "--out", str(tmp_path / "r.html")], ["export", "1", "--out", str(tmp_path / "e.csv")]):
        listed = runner.invoke(cli, [*command, "--db", url])
        assert listed.exit_code == 0, listed.output
        assert "s3cr3t-pw" not in listed.output
    assert "s3cr3t-pw" not in (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "s3cr3t-pw" not in "".join(result.output.split())


@pytest.mark.parametrize(
    ("db", "error"),
    [
        ("postgresql://u:s3cr3t-pw@h:xx/db",
         "Error: --db 'postgresql://u:***@h:xx/db' is neither a file path nor a valid SQLAlchemy URL (e.g. results.db "
         "or postgresql+psycopg://user:password@host/dbname)"),
        ("nodialect://u:s3cr3t-pw@h/db",
         "Error: cannot use database nodialect://u:***@h/db: Can't load plugin: sqlalchemy.dialects:nodialect; "
         "install the database driver named in the URL"),
    ],
)  # fmt: skip
def test_a_bad_database_url_is_one_line_without_its_password(runner, tmp_path, sample_dir, db, error):
    model = write_answers(tmp_path / "answers.json", [])
    for command in (["runs"], ["scan", str(sample_dir), "--model", model, "--no-report"]):
        result = runner.invoke(cli, [*command, "--db", db])
        assert result.exit_code == 1, result.output
        assert result.output == error + "\n"


@pytest.fixture()
def scanned_db(runner, tmp_path, sample_dir) -> Path:
    """A database with one run (run 1) of the fake model over the samples."""
    db = tmp_path / "r.db"
    model = write_answers(tmp_path / "answers.json", ["{}"] * len(discover([sample_dir])))
    result = runner.invoke(cli, ["scan", str(sample_dir), "--model", model, "--db", str(db), "--no-report"])
    assert result.exit_code == 0, result.output
    return db


@pytest.mark.parametrize("ref", ["²", "١", "9" * 5000, str(2**63)])
def test_a_run_id_that_is_no_number_is_a_missing_run(runner, tmp_path, scanned_db, ref):
    """Issue 15: `²` passed str.isdigit() and int("²") raised a traceback (also an over-long or 64-bit-overflowing
    id). A run reference that is not ASCII digits is a run name; either way, an unknown run is one line."""
    out = str(tmp_path / "out.html")
    missing = f"Error: no run {ref!r} in sqlite:///{scanned_db}; pass a run id or name, e.g. one of the latest: 1\n"
    for command in (["report", ref, "--out", out], ["report", "1", "--compare", ref, "--out", out],
                    ["export", ref, "--out", str(tmp_path / "out.csv")]):  # fmt: skip
        result = runner.invoke(cli, [*command, "--db", str(scanned_db)])
        assert result.exit_code == 1, result.output
        assert result.output == missing


LONG = "a" * 256  # one byte more than a file name may have on ext4, xfs, btrfs, tmpfs, ...


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["scan", "{samples}", "--model", "{model}", "--db", "{tmp}/{long}", "--no-report"], "--db"),
        (["scan", "{samples}", "--model", "{model}", "--db", "{tmp}/{long}/r.db", "--no-report"], "--db"),
        (["scan", "{samples}", "--model", "{model}", "--db", "sqlite:///{tmp}/{long}", "--no-report"], "--db"),
        (["scan", "{samples}", "--model", "{model}", "--db", "{db}", "--report", "{tmp}/{long}"], "--report"),
        (["scan", "{samples}", "--model", "{model}", "--db", "{db}", "--report", "{tmp}/{long}/r.html"], "--report"),
        (["scan", "{samples}", "--model", "{model}", "--db", "{db}", "--no-report", "--fields", "{tmp}/{long}"],
         "--fields"),
        (["report", "--db", "{db}", "--out", "{tmp}/{long}"], "--out"),
        (["report", "--db", "{db}", "--out", "{tmp}/r.html", "--fields", "{long}"], "--fields"),
        (["report", "--db", "{tmp}/{long}"], "--db"),
        (["export", "1", "--db", "{db}", "--out", "{tmp}/{long}/e.csv"], "--out"),
        (["runs", "--db", "{long}"], "--db"),
        (["scan", "{samples}", "--model", "{tmp}/{long}", "--db", "{db}", "--no-report"], "--model"),
    ],
)  # fmt: skip
def test_a_path_name_too_long_for_the_file_system_is_one_line(runner, tmp_path, sample_dir, scanned_db, args, option):
    """Issue 15: a path component over 255 bytes was an OSError (File name too long) traceback."""
    model = write_answers(tmp_path / "more.json", ["{}"] * len(discover([sample_dir])))
    values = {"samples": sample_dir, "model": model, "tmp": tmp_path, "long": LONG, "db": scanned_db}
    result = runner.invoke(cli, [arg.format(**values) for arg in args])
    assert result.exit_code == 1, result.output
    assert result.output == (
        f"Error: {option}: the name {LONG[:24]}… in it is 256 bytes long, more than the 255 bytes a file or folder "
        "name may have; pass a shorter path\n"
    )
    assert not list(tmp_path.glob("aaaa*")) and not (tmp_path / "r.html").exists()


def _catalogue_with_unreadable_cells(tmp_path: Path, sample_dir: Path) -> tuple[Path, Path, Path]:
    """Three images; row 2's price "1,290" (no currency) and weight "heavy" cannot be read."""
    import shutil

    images = tmp_path / "images"
    images.mkdir()
    names = sorted(p.name for p in sample_dir.glob("*.jpg"))[:3]
    for name in names:
        shutil.copy(sample_dir / name, images / name)
    truth = tmp_path / "catalogue.csv"
    truth.write_text(
        "path,price,currency,weight\n"
        f"{names[0]},10.00,USD,500 g\n"
        f'{names[1]},"1,290",,heavy\n'
        f"{names[2]},20.00,USD,300 g\n",
        encoding="utf-8",
    )
    fields = tmp_path / "fields.toml"
    fields.write_text('[fields.weight]\nkind = "number"\nunit = "g"\n', encoding="utf-8")
    return images, truth, fields


def test_unreadable_catalogue_cells_are_not_scored_but_counted_and_listed(runner, tmp_path, sample_dir):
    """Issue 20.1: a weight "heavy" plus an answer counted as spurious (and with no answer as both_empty)."""
    images, truth, fields = _catalogue_with_unreadable_cells(tmp_path, sample_dir)
    model = write_answers(tmp_path / "answers.json", ['{"price": 10, "currency": "USD", "weight": "500 g"}'] * 3)
    db, report = tmp_path / "r.db", tmp_path / "report.html"
    result = runner.invoke(
        cli,
        ["scan", str(images), "--truth", str(truth), "--fields", str(fields), "--model", model,
         "--db", str(db), "--report", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1] == "Truth: 3 of 3 images matched a row, 0 of 3 rows matched no image (2 unparseable cells)"
    assert lines[2] == "Unreadable catalogue cells, left out of the metrics: price 1, weight 1 (listed in the report)"
    # two judged rows, one right: 50 %, not 66.7 % (both_empty) or 33.3 % (spurious)
    assert "│ weight   │ 2 │    50.0% │     50.0% │  50.0% │ 50.0% │   100.00 │" in lines
    assert "│ price    │ 2 │    50.0% │     50.0% │  50.0% │ 50.0% │ 5.00 USD │" in lines
    with sqlite3.connect(db) as connection:
        unreadable = connection.execute(
            "select field, outcome, predicted, expected, score from field_results where outcome = 'unreadable' "
            "order by field"
        ).fetchall()
        stored = connection.execute(
            "select field, value, data from field_values where source = 'unreadable' order by field"
        ).fetchall()
    assert unreadable == [("price", "unreadable", "10.00", "1,290", None), ("weight", "unreadable", "500 g", "heavy", None)]
    assert [(name, value, json.loads(data)["column"]) for name, value, data in stored] == [
        ("price", "1,290", "price"),
        ("weight", "heavy", "weight"),
    ]
    html = report.read_text(encoding="utf-8")
    assert "Unreadable catalogue cells" in html
    assert (
        '<tr><td class="num">2</td><td>weight</td><td><code>heavy</code></td>\n'
        "      <td>not a number in g (or a unit convertible to it)</td><td>weight</td><td>500 g</td>"
    ) in html
    assert "<td>ambiguous price: one separator before three digits" in html


def test_unreadable_cell_without_an_answer_is_not_counted_as_both_empty(tmp_path, sample_dir):
    from inspector.fields import load_fields
    from inspector.scoring import summarise
    from inspector.truth import load_truth

    images, truth, fields = _catalogue_with_unreadable_cells(tmp_path, sample_dir)
    fieldset = load_fields(fields)
    table = load_truth(truth, fieldset=fieldset)
    record = table.records[1]
    assert {name: (cell.column, cell.value) for name, cell in record.unreadable().items()} == {
        "price": ("price", "1,290"),
        "weight": ("weight", "heavy"),
    }
    from inspector.fields import ProductFields
    from inspector.scoring import score_answer

    unreadable = {name: cell.value for name, cell in record.unreadable().items()}
    results = score_answer(ProductFields(), record.fields, fieldset=fieldset, unreadable=unreadable)
    by_field = {r.field: r.outcome for r in results}
    assert by_field["weight"] == by_field["price"] == "unreadable"
    metrics = summarise(results, fieldset)
    assert (metrics["weight"].n, metrics["weight"].unreadable, metrics["weight"].accuracy) == (0, 1, None)


def test_price_errors_are_per_currency_and_outside_values_are_counted(runner, tmp_path, sample_dir):
    """Issue 20.3 and 20.4: the price MAE averaged EUR and JPY errors; a colour outside the declared values was
    marked only by a score of 0, and a category's score 1.0 stood beside outcome=wrong in the export."""
    import csv
    import shutil

    images = tmp_path / "images"
    images.mkdir()
    names = sorted(p.name for p in sample_dir.glob("*.jpg"))[:3]
    for name in names:
        shutil.copy(sample_dir / name, images / name)
    truth = tmp_path / "catalogue.csv"
    truth.write_text(
        "path,price,currency,colour\n"
        f"{names[0]},10.00,EUR,Navy\n"
        f"{names[1]},1000,JPY,Purple\n"
        f"{names[2]},20.00,EUR,Red\n",
        encoding="utf-8",
    )
    fields = tmp_path / "fields.toml"
    fields.write_text('[fields.colour]\nkind = "category"\nvalues = ["Navy", "Red"]\n', encoding="utf-8")
    from inspector.backends.fake import pixel_key
    from inspector.discovery import read_source
    from inspector.images import decode_image

    by_pixels = {}

    answers = [
        '{"price": 11, "currency": "EUR", "colour": "Navy"}',
        '{"price": 1100, "currency": "JPY", "colour": "Purple"}',
        '{"price": 23, "currency": "EUR", "colour": "Navy"}',
    ]
    for source, answer in zip(discover([images]), answers, strict=True):
        by_pixels[pixel_key(decode_image(read_source(source)).image)] = answer
    (tmp_path / "answers.json").write_text(json.dumps(by_pixels))
    db = tmp_path / "r.db"
    result = runner.invoke(
        cli,
        ["scan", str(images), "--truth", str(truth), "--fields", str(fields), "--model", f"fake:{tmp_path / 'answers.json'}",
         "--db", str(db), "--no-report"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "Outside the declared values: colour 1 answers, 1 catalogue values" in lines
    price = next(line for line in lines if line.startswith("│ price"))
    assert price.endswith("│ 2.00 EUR · 100.00 JPY │"), price  # EUR errors 1 and 3, JPY 100: never (1+3+100)/3

    out = tmp_path / "results.csv"
    exported = runner.invoke(cli, ["export", "1", "--db", str(db), "--out", str(out), "--field", "colour"])
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [(r["outcome"], r["model_value"], r["catalogue_value"], r["score"], r["outside_values"]) for r in rows] == [
        ("correct", "Navy", "Navy", "", ""),
        ("correct", "Purple", "Purple", "", "both"),
        ("wrong", "Navy", "Red", "", ""),
    ]


def test_a_model_that_answers_no_field_says_so(runner, tmp_path, sample_dir):
    """Issue 20.5: the review view blamed the catalogue or the backend's token probabilities."""
    n_images = len(discover([sample_dir]))
    model = write_answers(tmp_path / "answers.json", ["I cannot tell."] * n_images)
    report = tmp_path / "report.html"
    result = runner.invoke(
        cli,
        ["scan", str(sample_dir), "--truth", str(sample_dir / "truth.csv"), "--model", model,
         "--db", str(tmp_path / "r.db"), "--report", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2] == (
        "The model answered no field in any image: every answer was empty or could not be read (the raw answers "
        "are in the report and in predictions.raw_output; check --model and --prompt)."
    )
    html = report.read_text(encoding="utf-8")
    assert (
        '<p class="muted" id="no-confidence">No value has a confidence: the model answered no field in any image '
        "(every answer was empty or could not be read).</p>"
    ) in html
    assert '<p class="empty-model">The model answered no field' in html

    answered = write_answers(tmp_path / "some.json", ['{"brand": "Acme"}'] * n_images)
    again = runner.invoke(
        cli,
        ["scan", str(sample_dir), "--model", answered, "--db", str(tmp_path / "r2.db"), "--report", str(report)],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "answered no field" not in again.stdout
    assert "No value has a confidence: the run has no catalogue rows (scan with --truth catalogue.csv)." in (
        report.read_text(encoding="utf-8")
    )


def test_scan_warns_when_several_columns_could_be_a_field(runner, tmp_path, sample_dir):
    images, _truth, _fields = _catalogue_with_unreadable_cells(tmp_path, sample_dir)
    truth = tmp_path / "two-brands.csv"
    names = sorted(p.name for p in images.iterdir())
    truth.write_text("path,brand,Brand\n" + "".join(f"{name},Acme,Other\n" for name in names), encoding="utf-8")
    model = write_answers(tmp_path / "answers.json", ['{"brand": "Acme"}'] * 3)
    result = runner.invoke(
        cli,
        ["scan", str(images), "--truth", str(truth), "--model", model, "--db", str(tmp_path / "r.db"), "--no-report"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert " ".join(result.stderr.split()).count(
        "warning: 2 catalogue columns look like brand ('brand', 'Brand'); using 'brand'. "
        'Choose one with --truth-columns brand="COLUMN"'
    ) == 1


def _options(command: click.Command, path: str):
    """Every (command path, option) of `command` and its subcommands."""
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _options(sub, f"{path} {name}")
    for param in command.params:
        if isinstance(param, click.Option):
            yield path, param


def test_every_option_of_every_command_has_a_help_text():
    """Issue 20.7: 21 train options (--epochs, --batch-size, ...) had none."""
    missing = [f"{path} {'/'.join(option.opts)}" for path, option in _options(cli, "inspector") if not option.help]
    assert missing == []


def test_one_option_name_means_one_thing_in_every_command(runner, tmp_path, sample_dir, monkeypatch):
    """Issue 20.7: --workers was threads in scan and processes in train; --run-name a database run in scan and a
    W&B name in train. train's are --dataloader-workers and --wandb-name; the old spellings still work (hidden,
    with a deprecation warning) for one release."""
    from inspector.train_cli import train_command

    train_help = runner.invoke(cli, ["train", "--help"]).output
    assert "--dataloader-workers" in train_help and "--wandb-name" in train_help
    assert re.search(r"--workers\b", train_help) is None and "--run-name" not in train_help
    names = {param.name: param for param in train_command.params}
    assert names["workers"].opts == ["--dataloader-workers"] and names["run_name"].opts == ["--wandb-name"]
    # the old spellings are read into the same settings, with a warning
    import inspector.training
    from inspector.errors import TrainingError

    seen = []

    def train(config, progress):
        seen.append(config)
        raise TrainingError("stopped here")

    monkeypatch.setattr(inspector.training, "train", train)
    base = ["train", "--truth", str(sample_dir / "truth.csv"), "--model", "fake:x", "--output", str(tmp_path / "o")]
    old = runner.invoke(cli, [*base, "--workers", "3", "--run-name", "trial"])
    assert old.stderr.splitlines()[:2] == [
        "Warning: train's --workers is now --dataloader-workers (scan's --workers counts threads); --workers goes "
        "away in the next release.",
        "Warning: train's --run-name is now --wandb-name (scan's --run-name names a database run); --run-name goes "
        "away in the next release.",
    ]
    new = runner.invoke(cli, [*base, "--dataloader-workers", "3", "--wandb-name", "trial"])
    assert "deprecated" not in new.output and new.output.endswith("Error: stopped here\n")
    assert [(config.workers, config.run_name) for config in seen] == [(3, "trial"), (3, "trial")]


def test_export_run_defaults_to_the_latest_run(runner, tmp_path, sample_dir):
    n_images = len(discover([sample_dir]))
    model = write_answers(tmp_path / "answers.json", ['{"brand": "Acme"}'] * n_images)
    db = tmp_path / "r.db"
    scanned = runner.invoke(cli, ["scan", str(sample_dir), "--model", model, "--db", str(db), "--no-report"])
    assert scanned.exit_code == 0, scanned.output
    out = tmp_path / "results.csv"
    result = runner.invoke(cli, ["export", "--db", str(db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output == f"Wrote {n_images} results rows of run 1 to {out}\n"


def test_settings_echo_says_batch_size_auto(runner, tmp_path, sample_dir):
    model = write_answers(tmp_path / "answers.json", ["{}"] * len(discover([sample_dir])))
    result = runner.invoke(cli, ["scan", str(sample_dir), "--model", model, "--db", str(tmp_path / "r.db"), "--no-report"])
    assert result.exit_code == 0, result.output
    echo = " ".join(result.stderr.split())
    assert "batch_size=auto," in echo and "batch_size=0" not in echo


def test_a_mistyped_model_folder_fails_at_once_with_the_near_miss(runner, tmp_path, sample_dir, monkeypatch):
    """Issue 20.7: `--model models/tiny-dem` waited 28 s of hub retries on a machine without network."""
    import time

    (tmp_path / "models" / "tiny-demo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    result = runner.invoke(cli, ["scan", str(sample_dir), "--model", "models/tiny-dem", "--no-report"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: --model models/tiny-dem: no such folder; did you mean models/tiny-demo? "
        "(a Hugging Face model id is written ORG/NAME)\n"
    )
    assert time.perf_counter() - started < 5
    far = runner.invoke(cli, ["scan", str(sample_dir), "--model", "./nothing/like/it", "--no-report"])
    assert far.output == (
        "Error: --model ./nothing/like/it: no such folder (a Hugging Face model id is written ORG/NAME)\n"
    )
    trained = runner.invoke(
        cli, ["train", "--truth", str(sample_dir / "truth.csv"), "--model", "models/tiny-dem", "--output", "o"]
    )
    assert trained.output.startswith("Error: --model models/tiny-dem: no such folder; did you mean models/tiny-demo?")


def test_ray_does_not_swallow_a_path_after_it(runner, tmp_path, sample_dir):
    """Issue 20.7: `scan --ray ./images` read ./images as --ray's address."""
    from inspector.cli import _ray_value_or_path

    assert _ray_value_or_path((), str(sample_dir)) == ((str(sample_dir),), "local")
    assert _ray_value_or_path((str(sample_dir),), "auto") == ((str(sample_dir),), "auto")
    assert _ray_value_or_path((str(sample_dir),), "10.0.0.1:6379") == ((str(sample_dir),), "10.0.0.1:6379")
    assert _ray_value_or_path((str(sample_dir),), None) == ((str(sample_dir),), None)
    missing = runner.invoke(cli, ["scan", "--no-report"])
    assert missing.exit_code == 2 and "Missing argument 'PATHS...'" in missing.output


def test_samples_help_names_n(runner):
    result = runner.invoke(cli, ["samples", "--help"])
    assert "Draw N (-n) synthetic" in result.output
    assert re.search(r"-n N\s+How many images to draw\.\s+\[default: 36", result.output)


def test_train_prints_its_settings_and_transformers_notices_only_when_verbose(runner, sample_dir, tmp_path, monkeypatch):
    """Issue 20.8: a 35-line settings dump and transformers' PAD/BOS/EOS and use_cache notices by default."""
    from transformers.utils import logging as hf_logging

    import inspector.training
    from inspector.errors import TrainingError

    verbosity = []

    def train(config, progress):
        verbosity.append(hf_logging.get_verbosity())
        raise TrainingError("stopped here")

    monkeypatch.setattr(inspector.training, "train", train)
    before = hf_logging.get_verbosity()
    base = ["train", "--truth", str(sample_dir / "truth.csv"), "--model", "fake:x", "--output", str(tmp_path / "o")]
    try:
        quiet = runner.invoke(cli, base)
        verbose = runner.invoke(cli, [*base, "--verbose"])
    finally:
        hf_logging.set_verbosity(before)
    assert " ".join(quiet.stderr.split()) == (
        f"training fake:x (full) into {tmp_path / 'o'}; every setting is saved in train_config.json with each "
        "model (--verbose prints them here) Error: stopped here"
    )
    assert verbose.stderr.startswith("training config:\n") and "method = 'full'" in verbose.stderr
    assert verbosity == [hf_logging.ERROR, hf_logging.WARNING]


def test_the_readme_review_demo_with_the_fake_backend_works(runner, tmp_path, sample_dir, monkeypatch):
    """Issue 20.10: the README documents the fake backend's answers file; its example must run as written."""
    import shlex

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- review-demo -->\n```bash\n", 1)[1].split("\n```", 1)[0]
    answers = block.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    command = shlex.split(block.split("\nEOF\n", 1)[1].replace("\\\n", " "))
    assert command[:2] == ["inspector", "scan"]
    monkeypatch.chdir(tmp_path)
    Path("answers.json").write_text(answers, encoding="utf-8")
    args = [str(sample_dir) + arg[len("sample_images"):] if arg.startswith("sample_images") else arg
            for arg in command[1:]]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    html = Path("review-demo.html").read_text(encoding="utf-8")
    review = json.loads(re.search(r'<script type="application/json" id="review-data">(.*?)</script>', html, re.S)[1])
    wrong = sorted(
        ((item[2], item[3], item[4], item[5], round(item[6], 6)) for item in review["items"] if item[3] == "wrong"),
        key=lambda item: -item[4],
    )
    assert wrong == [("category", "wrong", "coat", "t-shirt", 0.97), ("price", "wrong", "420.00", "4200.00", 0.35)]
