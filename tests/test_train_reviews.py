"""`inspector train --reviews`: the inspectors' decisions become training examples (issue 17).

A fake-model scan of generated cards against their catalogue, with decisions imported as the report writes them;
then the examples built from it: corrections applied, model_wrong keeps the catalogue value, unconfirmed fields
left out (and out of the loss), --reviewed-only, moved images found by sha256, the errors, --write-dataset, and a
tiny model trained from --reviews end to end.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from inspector.cli import cli
from inspector.discovery import discover
from inspector.errors import InputError, NoCatalogueError, NoDecisionsError, RunNotFoundError
from inspector.images import sha256_hex
from inspector.review import import_decisions
from inspector.samples import generate_samples
from inspector.store import open_store
from inspector.training import TrainConfig
from inspector.training.data import load_training_data


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _scan(folder: Path, truth: Path | None, db: Path, answers: list[dict], name: str) -> None:
    answers_file = db.parent / f"{name}-answers.json"
    answers_file.write_text(json.dumps({"answers": answers}))
    args = ["scan", str(folder), "--model", f"fake:{answers_file}", "--db", str(db), "--no-report",
            "--run-name", name]  # fmt: skip
    if truth is not None:
        args += ["--truth", str(truth)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output


def _write_decisions(path: Path, rows: list[tuple]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run_id", "sha256", "field", "decision", "corrected_value"])
        writer.writerows(rows)
    return path


@pytest.fixture()
def reviewed(tmp_path) -> dict:
    """5 cards scanned by a fake model that disagrees with the catalogue on images 2-5, and the decisions:

    - image 1: brand both_fine;
    - image 2: category catalogue_wrong, corrected to "scarf";
    - image 3: price model_wrong (the model read 100 more than the catalogue);
    - image 4: category catalogue_wrong with no corrected value;
    - image 5: price catalogue_wrong corrected to "1.234,50" (its currency reads the separators), currency
      catalogue_wrong corrected to "EUR".
    """
    folder = tmp_path / "cards"
    truth = generate_samples(folder, n=5, seed=11, formats=("png",))
    catalogue = {row["local_image_path"]: row for row in csv.DictReader(truth.open())}
    sources = discover([folder])
    rows = [catalogue[source.path.name] for source in sources]
    shas = [sha256_hex(source.path.read_bytes()) for source in sources]
    answers = []
    for index, row in enumerate(rows):
        answer = {"brand": row["brand"], "title": row["title"], "category": row["category3_code"],
                  "price": float(row["full_price"]), "currency": row["currency_code"]}  # fmt: skip
        if index in (1, 3):
            answer["category"] = "watch" if row["category3_code"] != "watch" else "cap"
        if index in (2, 4):
            answer["price"] = float(row["full_price"]) + 100
        answers.append({"answer": answer, "confidence": {"category": 0.9, "price": 0.8}})
    db = tmp_path / "reviews.db"
    _scan(folder, truth, db, answers, "first")
    decisions = _write_decisions(
        tmp_path / "decisions.csv",
        [
            (1, shas[0], "brand", "both_fine", ""),
            (1, shas[1], "category", "catalogue_wrong", "scarf"),
            (1, shas[2], "price", "model_wrong", ""),
            (1, shas[3], "category", "catalogue_wrong", ""),
            (1, shas[4], "price", "catalogue_wrong", "1.234,50"),
            (1, shas[4], "currency", "catalogue_wrong", "EUR"),
        ],
    )
    with open_store(db) as store:
        summary = import_decisions(store, decisions)
    assert (summary.added, summary.skipped) == (6, [])
    return {"db": db, "folder": folder, "truth": truth, "rows": rows, "shas": shas, "sources": sources}


def _examples(db: Path, **settings) -> dict:
    data = load_training_data(TrainConfig(reviews=[str(db)], val_fraction=0, **settings))
    return {"data": data, **{example.sha256: example for example in data.train}}


# ------------------------------------------------------------------------------------------------ the dataset


def test_corrections_replace_the_catalogue_value_and_model_wrong_keeps_it(reviewed):
    examples = _examples(reviewed["db"])
    rows, shas = reviewed["rows"], reviewed["shas"]
    assert len(examples["data"].train) == 5

    corrected = examples[shas[1]]
    assert corrected.truth.category == "scarf" and json.loads(corrected.answer)["category"] == "scarf"
    assert dict(corrected.decided) == {"category": "catalogue_wrong"}
    assert corrected.left_out == () and corrected.ignored_spans == ()

    kept = examples[shas[2]]
    assert kept.truth.price == float(rows[2]["full_price"]) != kept.truth.price + 100
    assert json.loads(kept.answer)["price"] == float(rows[2]["full_price"])
    assert dict(kept.decided) == {"price": "model_wrong"}

    both_fine = examples[shas[0]]
    assert json.loads(both_fine.answer)["brand"] == rows[0]["brand"]

    # The currency correction comes first, and settles the corrected price's separators: 1234.5 EUR.
    repriced = json.loads(examples[shas[4]].answer)
    assert (repriced["price"], repriced["currency"]) == (1234.5, "EUR")
    summary = examples["data"].summary.reviews
    assert summary.decisions == {"catalogue_wrong": 4, "model_wrong": 1, "both_fine": 1}
    assert (summary.corrections, summary.unconfirmed_fields, summary.unreadable_corrections) == (3, 1, 0)
    assert summary.runs == [f"{reviewed['db']} run 1 (first)"]


def test_an_unconfirmed_field_is_left_out_of_the_example_and_its_loss(reviewed):
    example = _examples(reviewed["db"])[reviewed["shas"][3]]
    assert example.left_out == ("category",) and example.truth.category is None
    answer = json.loads(example.answer)
    assert answer["category"] is None  # the JSON answer keeps every key...
    assert [example.answer[start:end] for start, end in example.ignored_spans] == ["null"]  # ...not trained on
    start, _ = example.ignored_spans[0]
    assert example.answer[:start].endswith('"category": ')
    # Every other field keeps its catalogue value.
    row = reviewed["rows"][3]
    assert (answer["brand"], answer["price"]) == (row["brand"], float(row["full_price"]))


def test_an_unreadable_correction_is_left_out_and_counted(reviewed, tmp_path):
    again = _write_decisions(tmp_path / "again.csv", [(1, reviewed["shas"][2], "price", "catalogue_wrong", "TBD")])
    with open_store(reviewed["db"]) as store:
        import_decisions(store, again)
    examples = _examples(reviewed["db"])
    assert examples[reviewed["shas"][2]].left_out == ("price",)
    assert examples["data"].summary.reviews.unreadable_corrections == 1


def test_reviewed_only_teaches_only_decided_fields(reviewed):
    examples = _examples(reviewed["db"], reviewed_only=True)
    shas = reviewed["shas"]
    # Image 4's one decision left its category out: nothing is left to teach.
    assert set(examples) - {"data"} == {shas[0], shas[1], shas[2], shas[4]}
    assert examples["data"].summary.reviews.nothing_to_teach == 1
    brand_only = examples[shas[0]]
    assert set(brand_only.left_out) == {"title", "category", "price", "currency", "size_prices"}
    taught = {brand_only.answer[:start].rsplit('"', 2)[-2] for start, _ in brand_only.ignored_spans}
    assert taught == {"title", "category", "price", "currency", "sizes"}  # every key but brand is skipped
    assert examples[shas[4]].left_out == ("brand", "title", "category", "size_prices")


def test_moved_images_are_found_by_sha256_and_the_rest_are_skipped_and_listed(reviewed, tmp_path):
    sources = reviewed["sources"]
    renamed = tmp_path / "elsewhere" / "deeper" / "renamed.png"
    renamed.parent.mkdir(parents=True)
    sources[0].path.rename(renamed)
    sources[1].path.unlink()
    sources[2].path.write_bytes(sources[3].path.read_bytes())  # another image's bytes at its path

    examples = _examples(reviewed["db"], images=str(tmp_path / "elsewhere"))
    shas = reviewed["shas"]
    assert set(examples) - {"data"} == {shas[0], shas[3], shas[4]}
    assert examples[shas[0]].path == renamed and examples[shas[3]].path == sources[3].path
    reviews = examples["data"].summary.reviews
    assert (reviews.moved_images, reviews.missing_images) == (1, 2)
    origin = f"{reviewed['db']} run 1 (first)"
    # Searched: the --images folder, then the run's own input folder.
    searched = f"no file with its sha256 under {tmp_path / 'elsewhere'}, {reviewed['folder']}"
    assert reviews.missing == {
        f"{origin}: {reviewed['sources'][1].location}": f"not at its scanned path any more; {searched}",
        f"{origin}: {reviewed['sources'][2].location}": f"changed since the scan (its sha256 differs); {searched}",
    }
    result = CliRunner().invoke(cli, ["train", "--reviews", str(reviewed["db"]), "--images", str(tmp_path / "elsewhere"),
                                      "--write-dataset", str(tmp_path / "d.jsonl")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2:5] == [
        "Review images: 1 moved (found by sha256); skipped 2 not found, 0 without a catalogue row, 0 with nothing to "
        "teach",
        *(f"  skipped {location}: {why}" for location, why in reviews.missing.items()),
    ]


def test_a_catalogue_cell_the_scan_could_not_read_is_left_out_not_taught_as_none(tmp_path):
    """The store keeps an unreadable cell (price "TBD") as no value; the example must not teach "price": null."""
    folder = tmp_path / "cards"
    truth = generate_samples(folder, n=3, seed=2, formats=("png",))
    rows = list(csv.DictReader(truth.open()))
    rows[1]["full_price"] = "TBD"
    with truth.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    db = tmp_path / "tbd.db"
    _scan(folder, truth, db, [], "tbd")
    shas = {source.path.name: sha256_hex(source.path.read_bytes()) for source in discover([folder])}
    decisions = [(1, sha, "brand", "model_wrong", "") for sha in shas.values()]
    with open_store(db) as store:
        import_decisions(store, _write_decisions(tmp_path / "d.csv", decisions))
    examples = _examples(db)
    tbd = examples[shas[Path(rows[1]["local_image_path"]).name]]
    assert tbd.left_out == ("price",) and [tbd.answer[a:b] for a, b in tbd.ignored_spans] == ["null"]
    assert examples[shas[Path(rows[0]["local_image_path"]).name]].left_out == ()
    assert examples["data"].summary.reviews.unreadable_cells == 1

    # The catalogue is read again to tell which cell it was: gone, that cannot be known.
    truth.rename(tmp_path / "elsewhere.csv")
    with pytest.raises(InputError, match=r"^.* run 1 \(tbd\): its catalogue had 1 unreadable cells and cannot be read "
                       r"again to tell which \(Truth CSV .* does not exist; check the --truth path.\); restore "):
        _examples(db)


def test_reviews_combine_with_a_truth_catalogue_and_decisions_win(reviewed, tmp_path):
    data = load_training_data(
        TrainConfig(reviews=[str(reviewed["db"])], truth=str(reviewed["truth"]), val_fraction=0)
    )
    by_sha = {example.sha256: example for example in data.train}
    assert len(data.train) == 5 and data.summary.duplicate_images == 5
    assert by_sha[reviewed["shas"][1]].truth.category == "scarf"


def test_several_databases_and_runs_combine(reviewed, tmp_path):
    other = tmp_path / "other"
    generate_samples(other, n=3, seed=12, formats=("png",))
    db = tmp_path / "other.db"
    _scan(other, other / "truth.csv", db, [], "second")
    _scan(other, other / "truth.csv", db, [], "third")  # the same cards with another fake model: another run
    with open_store(db) as store:
        for run in (1, 2):
            sha = next(iter(store.reviewable(run)))[0]
            import_decisions(store, _write_decisions(tmp_path / f"d{run}.csv", [(run, sha, "brand", "both_fine", "")]))
    both = load_training_data(TrainConfig(reviews=[str(reviewed["db"]), str(db)], val_fraction=0))
    assert both.summary.reviews.runs == [f"{reviewed['db']} run 1 (first)", f"{db} run 1 (second)", f"{db} run 2 (third)"]
    assert len(both.train) == 5 + 3 and both.summary.duplicate_images == 3  # run 3 has run 2's images
    # --run is looked up in every database: run 1 is in both.
    first = load_training_data(TrainConfig(reviews=[str(reviewed["db"]), str(db)], runs=["1"], val_fraction=0))
    assert first.summary.reviews.runs == [f"{reviewed['db']} run 1 (first)", f"{db} run 1 (second)"]
    named = load_training_data(TrainConfig(reviews=[str(reviewed["db"]), str(db)], runs=["third"], val_fraction=0))
    assert named.summary.reviews.runs == [f"{db} run 2 (third)"]


def test_write_dataset_writes_one_line_per_example_and_trains_nothing(reviewed, tmp_path):
    out = tmp_path / "dataset.jsonl"
    result = CliRunner().invoke(
        cli, ["train", "--reviews", str(reviewed["db"]), "--write-dataset", str(out), "--val-fraction", "0.2"]
    )
    assert result.exit_code == 0, result.output
    origin = f"{reviewed['db']} run 1 (first)"
    assert result.stdout.splitlines() == [
        "Data: 0 catalogue rows, 5 images found, 4 for training, 1 for validation; skipped 0 without a row, "
        "0 unreadable, 0 duplicates, 0 empty rows",
        f"Reviews: 1 run ({origin}), 5 images; decisions applied: 4 catalogue_wrong, 1 model_wrong, 1 both_fine; "
        "3 corrected values taught, 1 unconfirmed fields left out (0 with an unreadable correction)",
        "Review images: 0 moved (found by sha256); skipped 0 not found, 0 without a catalogue row, "
        "0 with nothing to teach",
        f"Wrote 5 examples (4 for training, 1 for validation) to {out}; nothing trained",
    ]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["split"] for r in records] == ["train"] * 4 + ["val"]
    by_sha = {r["sha256"]: r for r in records}
    assert set(by_sha) == set(reviewed["shas"])
    unconfirmed = by_sha[reviewed["shas"][3]]
    assert unconfirmed["decisions"] == {"category": "catalogue_wrong"}
    assert unconfirmed["left_out"] == ["category"]
    assert [unconfirmed["answer"][a:b] for a, b in unconfirmed["ignored_spans"]] == ["null"]
    corrected = by_sha[reviewed["shas"][1]]
    assert json.loads(corrected["answer"])["category"] == "scarf"
    assert Path(corrected["image"]) == reviewed["sources"][1].path
    assert corrected["origin"] == origin and isinstance(corrected["row"], int)


# ------------------------------------------------------------------------------------------------ errors


def _train(*args: str) -> str:
    """The error line of a train command whose model does not exist: an error about the reviews proves they were
    checked before any model loaded. Nothing goes to stdout."""
    result = CliRunner().invoke(cli, ["train", *args, "--model", "no/such-model", "--output", "unused"])
    assert result.exit_code == 1 and result.stdout == "" and "Traceback" not in result.output
    return result.stderr.splitlines()[-1] + "\n"


def test_a_database_without_decisions_is_a_one_line_error_before_any_model_loads(reviewed, tmp_path):
    db = tmp_path / "bare.db"
    with sqlite3.connect(reviewed["db"]) as source, sqlite3.connect(db) as copy:
        source.backup(copy)  # the scan's writes may still be in its write-ahead log
        copy.execute("DELETE FROM reviews")
    assert _train("--reviews", str(db)) == (
        f"Error: no decisions in {db}: import the report's decisions with `inspector review import decisions.csv "
        f"--db {db}`, or train on a catalogue with --truth\n"
    )
    with pytest.raises(NoDecisionsError):
        load_training_data(TrainConfig(reviews=[str(db)]))
    missing = tmp_path / "nowhere.db"
    assert _train("--reviews", str(missing)) == (
        f"Error: --reviews {missing}: no such database; pass the --db file that the scan wrote\n"
    )
    assert not missing.exists()


def test_an_unknown_run_is_a_one_line_error(reviewed):
    assert _train("--reviews", str(reviewed["db"]), "--run", "7") == (
        f"Error: --run 7: no run '7' in sqlite:///{reviewed['db']}; pass a run id or name, e.g. one of the latest: 1 (first)\n"
    )
    with pytest.raises(RunNotFoundError):
        load_training_data(TrainConfig(reviews=[str(reviewed["db"])], runs=["nope"]))


def test_a_run_without_a_catalogue_is_a_one_line_error(reviewed):
    _scan(reviewed["folder"], None, reviewed["db"], [], "no-catalogue")
    assert _train("--reviews", str(reviewed["db"]), "--run", "no-catalogue") == (
        f"Error: {reviewed['db']} run 2 (no-catalogue) was scanned without a catalogue (--truth), so it has no "
        "values to learn; pass --run with runs scanned with --truth\n"
    )
    with pytest.raises(NoCatalogueError):
        load_training_data(TrainConfig(reviews=[str(reviewed["db"])], runs=["1", "2"]))
    # Without --run, only the runs with decisions are used: the run without a catalogue has none.
    assert len(_examples(reviewed["db"])["data"].train) == 5


def test_review_options_need_reviews_and_training_needs_data():
    assert CliRunner().invoke(cli, ["train", "--run", "1", "--model", "m", "--output", "o"]).output == (
        "Error: No training data: pass the catalogue CSV with --truth or reviewed scans' databases with --reviews\n"
    )
    assert CliRunner().invoke(cli, ["train", "--truth", "t.csv", "--reviewed-only", "-m", "m", "-o", "o"]).output == (
        "Error: --reviewed-only chooses among reviewed scans: pass their database with --reviews\n"
    )


# ------------------------------------------------------------------------------------------------ training


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava", "phi3v"])
def test_the_loss_skips_an_unconfirmed_value(reviewed, family, request):
    from inspector.backends.hf import load_processor
    from inspector.prompts import get_prompt
    from inspector.training.collator import IGNORE_INDEX, TrainingCollator
    from inspector.training.data import ExampleDataset

    example = _examples(reviewed["db"])[reviewed["shas"][3]]
    folder = request.getfixturevalue(f"tiny_{family}")
    num_crops = 1 if family == "phi3v" else None
    collator = TrainingCollator(load_processor(str(folder)), get_prompt().text, num_crops=num_crops)
    item = ExampleDataset([example])[0]
    masked = collator([item])
    plain = collator([{**item, "ignored_spans": ()}])
    assert torch.equal(masked["input_ids"], plain["input_ids"])
    skipped = (plain["labels"] != IGNORE_INDEX) & (masked["labels"] == IGNORE_INDEX)
    text = collator.tokenizer.decode(masked["input_ids"][0][skipped[0]])
    assert text.strip() == "null"
    trained = collator.tokenizer.decode(masked["labels"][0][masked["labels"][0] != IGNORE_INDEX])
    assert '"category":' in trained and '"category": null' not in trained


@pytest.mark.slow
def test_a_tiny_model_trains_from_reviews_end_to_end(reviewed, tiny_llava, tmp_path):
    output = tmp_path / "from-reviews"
    args = ["train", "--reviews", str(reviewed["db"]), "--run", "first", "--model", str(tiny_llava), "--output",
            str(output), "--max-steps", "3", "--batch-size", "2", "--workers", "0", "--val-fraction", "0.2",
            "--eval-every", "3", "--eval-samples", "1", "--max-new-tokens", "8", "--lr", "1e-3",
            "--logging-steps", "1"]  # fmt: skip
    enabled = torch.is_grad_enabled()
    try:
        result = CliRunner().invoke(cli, args)
    finally:
        torch.set_grad_enabled(enabled)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Trained to step 3 (")
    assert lines[1].startswith("Data: 0 catalogue rows, 5 images found, 4 for training, 1 for validation")
    assert lines[2].startswith(f"Reviews: 1 run ({reviewed['db']} run 1 (first)), 5 images; decisions applied:")
    assert (output / "final" / "config.json").is_file() and (output / "best" / "config.json").is_file()
    summary = json.loads((output / "data_summary.json").read_text())
    assert summary["reviews"]["corrections"] == 3 and summary["reviews"]["unconfirmed_fields"] == 1
    losses = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in losses if "loss" in record] == [1, 2, 3]
    assert TrainConfig.load(output / "final").reviews == [str(reviewed["db"])]


# ------------------------------------------------------------------------------------------------ review order


def test_disagreements_come_in_the_review_views_order(confident_scan):
    """The bench's simulated inspectors take the disagreements as the review view lists them (review.js render):
    most confident first, those without a confidence last by path; agreements are not listed."""
    from inspector.review import disagreements_in_review_order, review_view_data

    with open_store(confident_scan["db"]) as store:
        rows = store.run_rows(1, with_thumbnails=False)
        items = review_view_data(store, 1, rows, "db")["items"]
    ordered = disagreements_in_review_order(items)
    names = {source.path.name: index for index, source in enumerate(confident_scan["sources"])}
    head = [(names[Path(item[1]).name], item[2], item[6]) for item in ordered[:4]]
    assert head == [(1, "category", 0.97), (3, "price", 0.9), (2, "category", 0.55), (3, "category", 0.2)]
    tail = ordered[4:]
    assert tail and all(item[6] is None and item[3] == "missed" for item in tail)
    assert [item[1] for item in tail] == sorted(item[1] for item in tail)
    assert all(item[3] in ("wrong", "spurious", "missed") for item in ordered)
    assert len(ordered) == sum(item[3] in ("wrong", "spurious", "missed") for item in items)
