"""The scan pipeline end to end: discovery → batches → parsing → scoring → store, with fake and tiny real models."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hostile import make_hostile_files

from inspector.backends import BackendError, GenerationSettings, load_backend
from inspector.backends.fake import FakeBackend
from inspector.checkpoints import TrainedQuestion
from inspector.discovery import discover, read_source
from inspector.errors import InputError
from inspector.fields import load_fields
from inspector.images import decode_image
from inspector.prompts import format_answer, get_prompt
from inspector.scan import ScanConfig, Scanner, ask_as_trained, read_scan_inputs
from inspector.store import open_store
from inspector.truth import load_truth


def pixel_key(image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def truth_answers(folder: Path, csv: Path, mutate=None) -> dict[str, str]:
    """pixel hash → the catalogue's own answer (optionally changed by `mutate(index, fields)`)."""
    sources = discover([folder])
    match = load_truth(csv).match([s.path for s in sources], [folder])
    answers = {}
    for index, source in enumerate(sources):
        fields = match.records[source.path].fields
        if mutate:
            mutate(index, fields)
        answers[pixel_key(decode_image(read_source(source)).image)] = format_answer(fields)
    return answers


def answering(answers: dict[str, str]) -> FakeBackend:
    return FakeBackend(lambda image, prompt: answers.get(pixel_key(image), "I don't know"))


def scan(tmp_path: Path, backend, inputs, **options):
    config = ScanConfig(inputs=[str(i) for i in inputs], model="fake", db=str(tmp_path / "r.db"), **options)
    store = open_store(config.db)
    return Scanner(config, backend, store).run(), store


def db_counts(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as connection:
        total = connection.execute("select count(*) from predictions").fetchone()[0]
        distinct = connection.execute("select count(distinct run_id || '-' || image_id) from predictions").fetchone()[0]
    return total, distinct


def test_scan_scores_answers_against_truth(tmp_path, sample_dir):
    n_images = len(discover([sample_dir]))

    def mutate(index, fields):
        if index < 3:
            fields.price = (fields.price or 0) + 10
        if index in (5, 6):
            fields.brand = "Counterfeit Co"

    backend = answering(truth_answers(sample_dir, sample_dir / "truth.csv", mutate))
    summary, store = scan(tmp_path, backend, [sample_dir], truth=str(sample_dir / "truth.csv"), batch_size=5)
    assert summary.status == "completed"
    assert (summary.processed, summary.failed) == (n_images, 0)
    assert summary.truth["matched_images"] == n_images
    metrics = store.run_metrics(summary.run_id)
    assert metrics["price"].wrong == 3
    assert metrics["price"].correct == n_images - 3
    assert metrics["brand"].wrong == 2
    assert metrics["title"].accuracy == 1.0
    assert metrics["category"].accuracy == 1.0
    # batches of 5 (one batch key for the fake), every image once
    assert [size for size, _ in backend.calls] == [5] * (n_images // 5) + ([n_images % 5] if n_images % 5 else [])
    rows = store.run_rows(summary.run_id)
    assert len(rows) == n_images


def test_rerun_resumes_and_never_duplicates(tmp_path, sample_dir):
    n_images = len(discover([sample_dir]))
    answers = truth_answers(sample_dir, sample_dir / "truth.csv")
    seen = []

    def interrupt_at_tenth(image, prompt):
        seen.append(1)
        return KeyboardInterrupt() if len(seen) == 10 else None

    first = answering(answers)
    first.fail_on = interrupt_at_tenth
    with pytest.raises(KeyboardInterrupt):
        scan(tmp_path, first, [sample_dir], batch_size=4)
    assert db_counts(tmp_path / "r.db") == (8, 8)  # two whole batches committed, the third lost

    second = answering(answers)
    summary, store = scan(tmp_path, second, [sample_dir], batch_size=4)
    assert summary.already_done == 8
    assert summary.processed == n_images - 8
    assert sum(size for size, _ in second.calls) == n_images - 8
    assert db_counts(tmp_path / "r.db") == (n_images, n_images)
    assert store.get_run(summary.run_id).status == "completed"
    assert len(store.list_runs()) == 1


def test_scan_killed_with_sigkill_loses_at_most_the_batch_in_flight(tmp_path, sample_dir):
    n_images = len(discover([sample_dir]))
    db = tmp_path / "r.db"
    script = textwrap.dedent(
        f"""
        import time
        from inspector.backends.fake import FakeBackend
        from inspector.scan import ScanConfig, Scanner
        from inspector.store import open_store

        def slow(image, prompt):
            time.sleep(0.15)
            return '{{"brand": "Acme", "price": 1.0}}'

        config = ScanConfig(inputs=[{str(sample_dir)!r}], model="fake", db={str(db)!r}, batch_size=3)
        Scanner(config, FakeBackend(slow), open_store(config.db)).run()
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if db.exists():
                try:
                    if db_counts(db)[0] >= 6:
                        break
                except sqlite3.OperationalError:
                    pass
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    stored_before, _ = db_counts(db)
    assert 6 <= stored_before < n_images
    assert stored_before % 3 == 0  # whole batches only

    summary, _ = scan(tmp_path, FakeBackend(default='{"brand": "Acme"}'), [sample_dir], batch_size=3)
    assert summary.already_done == stored_before
    assert db_counts(db) == (n_images, n_images)


def test_hostile_files_are_recorded_never_fatal(tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    expected = make_hostile_files(folder)
    backend = FakeBackend(default='{"brand": "Acme"}')
    summary, store = scan(tmp_path, backend, [folder], batch_size=4)
    assert summary.status == "completed"
    rows = store.run_rows(summary.run_id)
    by_name = {Path(row["path"]).relative_to(folder).as_posix(): row for row in rows}
    # identical bytes under two names are one image: every distinct file is stored once
    assert set(by_name) <= set(expected)
    assert summary.processed + summary.duplicates == len(expected)
    for name, row in by_name.items():
        if expected[name]:
            assert row["error"] is None, (name, row["error"])
            assert row["raw_output"] == '{"brand": "Acme"}'
        else:
            assert row["error"], name
    assert summary.failed == sum(1 for name in by_name if not expected[name])


class OutOfMemoryAbove(FakeBackend):
    """Runs out of memory on batches larger than `limit`, like a GPU would."""

    def __init__(self, limit: int) -> None:
        super().__init__(default='{"price": 5}')
        self.limit = limit

    def generate(self, images, prompts, settings):
        import torch

        if len(images) > self.limit:
            self.calls.append((len(images), ["OOM"]))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().generate(images, prompts, settings)


def test_out_of_memory_batch_is_retried_in_halves(tmp_path, sample_dir):
    backend = OutOfMemoryAbove(limit=2)
    summary, store = scan(tmp_path, backend, [sample_dir], batch_size=8, limit=8)
    assert (summary.processed, summary.failed) == (8, 0)
    assert [size for size, prompts in backend.calls] == [8, 4, 2, 2, 4, 2, 2]
    assert all(row["raw_output"] == '{"price": 5}' for row in store.run_rows(summary.run_id))


def test_an_image_that_breaks_the_model_fails_alone(tmp_path, sample_dir):
    sources = discover([sample_dir])[:6]
    bad = pixel_key(decode_image(read_source(sources[2])).image)

    def fail_on(image, prompt):
        return RuntimeError("shape mismatch in vision tower") if pixel_key(image) == bad else None

    backend = FakeBackend(default="{}", fail_on=fail_on)
    summary, store = scan(tmp_path, backend, [sample_dir], batch_size=6, limit=6)
    rows = {row["path"]: row for row in store.run_rows(summary.run_id)}
    assert summary.failed == 1
    assert rows[sources[2].location]["error"] == "RuntimeError: shape mismatch in vision tower"
    assert sum(1 for row in rows.values() if row["error"] is None) == 5


def test_duplicate_images_are_answered_once(tmp_path, sample_dir):
    folder = tmp_path / "dups"
    folder.mkdir()
    first = sorted(p for p in sample_dir.iterdir() if p.suffix in (".jpg", ".png", ".webp"))[0]
    shutil.copy(first, folder / f"a{first.suffix}")
    shutil.copy(first, folder / f"b{first.suffix}")
    backend = FakeBackend(default="{}")
    summary, _ = scan(tmp_path, backend, [folder])
    assert (summary.processed, summary.duplicates) == (1, 1)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(BackendError, match="pass --model DIR"):
        load_backend("no-such-org/no-such-model-xyz")
    with pytest.raises(BackendError, match="not a model folder"):
        load_backend(str(tmp_path))


def test_text_only_model_is_rejected(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(BackendError, match="not a vision-language model"):
        load_backend(str(tmp_path))


@pytest.mark.slow
def test_tiny_models_batched_generation_equals_one_by_one(tiny_vlm):
    from PIL import Image

    backend = load_backend(str(tiny_vlm))
    images = [Image.new("RGB", (64, 48), "red"), Image.new("RGB", (30, 90), "blue"), Image.new("RGB", (200, 120), "green")]
    prompts = ["What is shown?", "Give the price as JSON.", "What brand is it?"]
    settings = GenerationSettings(max_new_tokens=12)
    batched = backend.generate(images, prompts, settings)
    single = [backend.generate([image], [prompt], settings)[0] for image, prompt in zip(images, prompts, strict=True)]
    assert [a.text for a in batched] == [a.text for a in single]
    assert all(isinstance(answer.text, str) for answer in batched)


@pytest.mark.slow
def test_scan_with_real_tiny_models(tmp_path, tiny_vlm, sample_dir):
    backend = load_backend(str(tiny_vlm))
    summary, store = scan(
        tmp_path, backend, [sample_dir], truth=str(sample_dir / "truth.csv"), batch_size=3, limit=6, max_new_tokens=8
    )
    assert (summary.processed, summary.failed) == (6, 0)
    rows = store.run_rows(summary.run_id)
    assert len(rows) == 6
    assert all(row["error"] is None and row["raw_output"] is not None for row in rows)
    run = store.get_run(summary.run_id)
    assert run.versions["backend"]["model_type"] in ("llava", "idefics3")



@pytest.mark.slow
def test_scan_cli_runs_native_phi3v_batched(tmp_path, tiny_phi3v, sample_dir):
    """`inspector scan --model <folder>` on a Phi-3.5-vision checkpoint folder: batched, grouped by crop grid."""
    from click.testing import CliRunner

    from inspector.cli import cli

    db = tmp_path / "phi.db"
    result = CliRunner().invoke(
        cli,
        ["scan", str(sample_dir), "--model", str(tiny_phi3v), "--db", str(db), "--no-report",
         "--limit", "6", "--batch-size", "3", "--max-new-tokens", "6"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Run 1: 6 images answered, 0 failed")
    store = open_store(db)
    run = store.get_run(1)
    assert run.versions["backend"]["model_type"] == "phi3_v"
    assert run.settings["batch_size"] == 3
    backend = load_backend(str(tiny_phi3v))
    grids = {backend.batch_key(decode_image(read_source(s)).image) for s in discover([sample_dir])[:6]}
    assert len(grids) > 1  # the sample images span several crop grids, so batches were grouped


def test_images_without_an_answer_count_as_missed_fields(tmp_path, sample_dir):
    """A catalogue row whose image failed (unreadable, or the model failed on it) is scored, as all "missed"."""
    folder = tmp_path / "cards"
    folder.mkdir()
    names = sorted(p.name for p in sample_dir.iterdir() if p.suffix in (".jpg", ".png", ".webp"))[:3]
    for name in names:
        shutil.copy(sample_dir / name, folder / name)
    (folder / names[0]).write_bytes(b"not an image at all")  # unreadable, but the catalogue has its row
    lines = (sample_dir / "truth.csv").read_text().splitlines()
    (folder / "truth.csv").write_text("\n".join([lines[0]] + [row for row in lines[1:] if row.split(",")[0] in names]))
    broken = pixel_key(decode_image((folder / names[1]).read_bytes()).image)

    def fail_on(image, prompt):
        return RuntimeError("vision tower failed") if pixel_key(image) == broken else None

    backend = answering(truth_answers(sample_dir, sample_dir / "truth.csv"))
    backend.fail_on = fail_on
    summary, store = scan(tmp_path, backend, [folder], truth=str(folder / "truth.csv"))
    assert summary.failed == 2
    rows = {Path(row["path"]).name: row for row in store.run_rows(summary.run_id)}
    for name in names[:2]:
        outcomes = {r["outcome"] for r in rows[name]["field_results"]}
        assert rows[name]["error"] and outcomes <= {"missed", "both_empty"} and "missed" in outcomes, name
    assert {r["outcome"] for r in rows[names[2]]["field_results"]} <= {"correct", "both_empty"}
    metrics = store.run_metrics(summary.run_id)
    assert metrics["brand"].missed == 2 and metrics["brand"].correct == 1


def _fine_tuned_folder(tmp_path: Path, **settings) -> Path:
    """A model folder as `inspector train` leaves it, as far as the scan's input checks read it."""
    from inspector.training.config import TrainConfig

    folder = tmp_path / "fine-tuned"
    folder.mkdir()
    TrainConfig(truth="catalogue.csv", images="images", output=str(folder), **settings).save(folder)
    return folder


def test_a_fine_tuned_model_asked_another_question_than_it_learned_is_warned_about_before_it_loads(
    tmp_path, sample_dir
):
    fields_file = tmp_path / "fields.toml"
    fields_file.write_text('[fields.colour]\nkind = "category"\n', encoding="utf-8")
    folder = _fine_tuned_folder(tmp_path, fields_file=str(fields_file), num_crops=2)
    asked_otherwise = ScanConfig(inputs=[str(sample_dir)], model=str(folder), device="cpu", report=None)
    warnings = read_scan_inputs(asked_otherwise).warnings
    # The advice names the copy saved beside the model: the recorded path is the training machine's.
    assert warnings == [
        f"{folder} was fine-tuned on another question than this scan asks; ask as it was trained: "
        f"--fields {folder / 'train_fields.toml'} --num-crops 2"
    ]
    for fields in (fields_file, folder / "train_fields.toml"):
        asked_the_same = ScanConfig(
            inputs=[str(sample_dir)], model=str(folder), device="cpu", report=None, fields_file=str(fields),
            num_crops=2,
        )  # fmt: skip
        assert read_scan_inputs(asked_the_same).warnings == []
    other_crops = dataclasses.replace(asked_the_same, num_crops=4)
    assert read_scan_inputs(other_crops).warnings == warnings


def test_a_fine_tuned_model_whose_fields_file_is_gone_is_warned_about(tmp_path, sample_dir):
    folder = _fine_tuned_folder(tmp_path, fields_file=str(tmp_path / "gone.toml"))
    config = ScanConfig(inputs=[str(sample_dir)], model=str(folder), device="cpu", report=None)
    (warning,) = read_scan_inputs(config).warnings
    assert warning.startswith(f"{folder} was fine-tuned with a prompt or fields file that cannot be read here (")


def test_a_model_that_inspector_did_not_train_gets_no_warning(tmp_path, sample_dir):
    config = ScanConfig(inputs=[str(sample_dir)], model=str(tmp_path), device="cpu", report=None)
    assert read_scan_inputs(config).warnings == []


# ------------------------------------------------------------------------------------------------------------
# No answer can stop a scan (issue 15)
# ------------------------------------------------------------------------------------------------------------

HUGE = "9" * 400


def three_images(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir()
    for index, colour in enumerate(["red", "green", "blue"]):
        Image.new("RGB", (16, 16), colour).save(folder / f"{index}.png")
    return folder


def test_answers_with_numbers_no_float_holds_leave_those_values_empty_counted_and_a_rerun_finishes(tmp_path):
    """A JSON integer of 309+ digits in a price, a size table or a number field raised OverflowError: the run
    ended `failed` and every rerun crashed the same way."""
    import json

    from click.testing import CliRunner

    from inspector.cli import cli

    images = three_images(tmp_path / "images")
    (tmp_path / "fields.toml").write_text('[fields.volume]\nkind = "number"\nunit = "ml"\n')
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([
        f'{{"brand": "A", "price": {HUGE}, "volume": 500}}',
        f'{{"brand": "B", "price": 5, "sizes": {{"6.5": {HUGE}, "7": 120}}}}',
        f'{{"brand": "C", "price": 6, "volume": {HUGE}}}',
    ]))  # fmt: skip
    db = tmp_path / "r.db"
    args = ["scan", str(images), "--model", f"fake:{answers}", "--db", str(db), "--no-report",
            "--fields", str(tmp_path / "fields.toml")]  # fmt: skip

    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 0, result.output
    assert "Run 1: 3 images answered, 0 failed, 3 values too large to be a number left empty (" in result.output
    store = open_store(db)
    run = store.get_run(1)
    assert (run.status, run.n_images, run.n_failed) == ("completed", 3, 0)
    assert run.stats["unrepresentable_values"] == 3
    predicted = sorted((row["predicted"]["brand"], row["predicted"]["price"], row["predicted"]["volume"],
                        row["predicted"]["size_prices"]) for row in store.run_rows(1))  # fmt: skip
    assert predicted == [("A", None, 500.0, {}), ("B", 5.0, None, {"7": 120.0}), ("C", 6.0, None, {})]

    rerun = CliRunner().invoke(cli, args)
    assert rerun.exit_code == 0, rerun.output
    assert "Run 1: 0 images answered, 0 failed, 3 already done" in rerun.output
    assert store.get_run(1).status == "completed"


def test_a_bug_while_reading_one_answer_is_recorded_on_that_image_and_counted_not_the_end_of_the_run(
    tmp_path, monkeypatch
):
    """Anything unexpected while one answer is read is that image's error (type and message, visible as a bug),
    never the run's; a rerun tries that image again."""
    from click.testing import CliRunner

    import inspector.scan
    from inspector.cli import cli
    from inspector.parsing import read_answer

    def read_with_a_bug(text, fields):
        if "B" in text:
            raise ZeroDivisionError("division by zero")
        return read_answer(text, fields)

    monkeypatch.setattr(inspector.scan, "read_answer", read_with_a_bug)
    images = three_images(tmp_path / "images")
    answers = tmp_path / "answers.txt"
    answers.write_text('{"brand": "A"}\n{"brand": "B"}\n{"brand": "C"}\n')
    db = tmp_path / "r.db"
    args = ["scan", str(images), "--model", f"fake:{answers}", "--db", str(db), "--no-report"]

    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 0, result.output
    assert (
        "Run 1: 2 images answered, 1 failed (1 by an internal error while reading the answer: please report it) ("
        in result.output
    )
    store = open_store(db)
    run = store.get_run(1)
    assert (run.status, run.n_images, run.n_failed) == ("completed", 3, 1)
    assert run.stats["internal_errors"] == 1
    (failed,) = [row for row in store.run_rows(1) if row["error"]]
    assert failed["raw_output"] == '{"brand": "B"}'
    assert failed["error"] == (
        "internal error while reading the answer (please report it): ZeroDivisionError: division by zero"
    )

    monkeypatch.setattr(inspector.scan, "read_answer", read_answer)  # the bug fixed: the rerun reads that image
    answers.write_text('{"brand": "B"}\n')
    rerun = CliRunner().invoke(cli, args)
    assert rerun.exit_code == 0, rerun.output
    assert "Run 1: 1 images answered, 0 failed, 2 already done" in rerun.output
    assert (store.get_run(1).n_images, store.get_run(1).n_failed) == (3, 0)


def _question_files(tmp_path: Path) -> tuple[Path, Path]:
    fields_file = tmp_path / "my-fields.toml"
    fields_file.write_text('[fields.colour]\nkind = "category"\n', encoding="utf-8")
    prompt_file = tmp_path / "my-question.txt"
    prompt_file.write_text('Answer in JSON with "brand", "price" and "colour".', encoding="utf-8")
    return fields_file, prompt_file


def test_a_scan_of_a_fine_tuned_model_asks_the_question_it_was_trained_on(tmp_path, sample_dir):
    """Every part of the question the scan leaves open (prompt or prompt file, fields, sizes, crops) comes from the
    checkpoint, read from the copies beside its config even after the training files are gone; the run key is
    that of the same scan with those options given."""
    fields_file, prompt_file = _question_files(tmp_path)
    folder = _fine_tuned_folder(
        tmp_path, fields_file=str(fields_file), prompt_file=str(prompt_file), sizes=["8", "9.5"], num_crops=2
    )
    trained_prompt = get_prompt(None, prompt_file, ["8", "9.5"], load_fields(fields_file))
    fields_file.unlink()
    prompt_file.unlink()
    plain = ScanConfig(inputs=[str(sample_dir)], model=str(folder), device="cpu", report=None)
    config, adopted = ask_as_trained(plain)
    copies = {"fields_file": str(folder / "train_fields.toml"), "prompt_file": str(folder / "train_prompt.txt")}
    assert adopted == TrainedQuestion(sizes=["8", "9.5"], num_crops=2, **copies)
    assert config == dataclasses.replace(plain, sizes=["8", "9.5"], num_crops=2, **copies)
    assert adopted.options() == (
        f"--fields {copies['fields_file']} --prompt-file {copies['prompt_file']} --sizes 8,9.5 --num-crops 2"
    )
    assert config.scan_prompt().text == trained_prompt.text
    assert config.fieldset().names[-1] == "colour"
    assert read_scan_inputs(config).warnings == []
    key = config.run_key(config.scan_prompt())
    assert key != plain.run_key(plain.scan_prompt())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("train_fields.toml", "train_prompt.txt"):  # the same question from other files: the same run
        shutil.copy(folder / name, elsewhere / name)
    explicit = dataclasses.replace(
        plain, fields_file=str(elsewhere / "train_fields.toml"), prompt_file=str(elsewhere / "train_prompt.txt"),
        sizes=["8", "9.5"], num_crops=2,
    )  # fmt: skip
    assert ask_as_trained(explicit) == (explicit, None)
    assert explicit.run_key(explicit.scan_prompt()) == key


def test_options_given_win_over_the_trained_question_and_are_warned_about(tmp_path, sample_dir):
    fields_file, prompt_file = _question_files(tmp_path)
    folder = _fine_tuned_folder(tmp_path, fields_file=str(fields_file), prompt_file=str(prompt_file), sizes=["8"])
    given = ScanConfig(inputs=[str(sample_dir)], model=str(folder), device="cpu", report=None, prompt="extract",
                       sizes=["9"])  # fmt: skip
    config, adopted = ask_as_trained(given)
    assert adopted == TrainedQuestion(fields_file=str(folder / "train_fields.toml"))
    assert (config.prompt, config.prompt_file, config.sizes) == ("extract", None, ["9"])
    assert read_scan_inputs(config).warnings == [
        f"{folder} was fine-tuned on another question than this scan asks; ask as it was trained: "
        f"--fields {folder / 'train_fields.toml'} --prompt-file {folder / 'train_prompt.txt'} --sizes 8"
    ]


def test_a_model_trained_on_the_default_question_or_not_by_inspector_changes_nothing(tmp_path, sample_dir):
    folder = _fine_tuned_folder(tmp_path)
    for model in (str(folder), str(tmp_path / "not-a-checkpoint"), "org/some-model", "fake:answers.json"):
        config = ScanConfig(inputs=[str(sample_dir)], model=model, device="cpu", report=None)
        assert ask_as_trained(config) == (config, None)


def test_a_trained_question_whose_file_is_gone_is_an_error_only_when_it_would_be_asked(tmp_path, sample_dir):
    fields_file, _ = _question_files(tmp_path)
    folder = _fine_tuned_folder(tmp_path, fields_file=str(fields_file), sizes=["8"])
    (folder / "train_fields.toml").unlink()
    fields_file.unlink()
    plain = ScanConfig(inputs=[str(sample_dir)], model=str(folder), device="cpu", report=None)
    with pytest.raises(InputError) as caught:
        ask_as_trained(plain)
    assert str(caught.value) == (
        f"{folder} was trained with --fields {fields_file}, which is neither beside it (train_fields.toml) nor at "
        "that path: pass --fields to ask it"
    )
    other_fields = tmp_path / "other.toml"
    other_fields.write_text('[fields.material]\nkind = "text"\n', encoding="utf-8")
    config, adopted = ask_as_trained(dataclasses.replace(plain, fields_file=str(other_fields)))
    assert adopted == TrainedQuestion(sizes=["8"]) and config.fields_file == str(other_fields)


def test_a_relative_question_file_is_read_beside_the_config_not_from_the_working_folder(
    tmp_path, sample_dir, monkeypatch
):
    """A folder assembled by hand (as bench/train_demo.py ships the demo): train_config.json names "fields.toml",
    the file beside it. A fields.toml in the folder the scan runs from is not it."""
    folder = _fine_tuned_folder(tmp_path, num_crops=1)
    settings = json.loads((folder / "train_config.json").read_text())
    (folder / "train_config.json").write_text(json.dumps({**settings, "fields_file": "fields.toml", "truth": ""}))
    (folder / "fields.toml").write_text('[fields.colour]\nkind = "category"\n', encoding="utf-8")
    elsewhere = tmp_path / "working folder"
    elsewhere.mkdir()
    (elsewhere / "fields.toml").write_text('[fields.material]\nkind = "text"\n', encoding="utf-8")
    monkeypatch.chdir(elsewhere)
    config, adopted = ask_as_trained(ScanConfig(inputs=[str(sample_dir)], model=str(folder), report=None))
    assert adopted == TrainedQuestion(fields_file=str(folder / "fields.toml"), num_crops=1)
    assert config.fieldset().names[-1] == "colour"


def test_the_trained_question_is_read_from_a_config_of_another_inspector_version(tmp_path, sample_dir):
    """Only the question's settings are read: a setting this version does not know does not stop the scan."""
    folder = _fine_tuned_folder(tmp_path, sizes=["8"])
    settings = json.loads((folder / "train_config.json").read_text())
    (folder / "train_config.json").write_text(json.dumps({**settings, "curriculum": "sizes-last"}))
    plain = ScanConfig(inputs=[str(sample_dir)], model=str(folder), device="cpu", report=None)
    assert ask_as_trained(plain)[1] == TrainedQuestion(sizes=["8"])


def test_a_fields_file_edited_after_the_scan_resolved_it_changes_nothing_it_asks_or_scores(tmp_path, sample_dir):
    fields_file = tmp_path / "fields.toml"
    fields_file.write_text('[fields.colour]\nkind = "category"\n', encoding="utf-8")
    truth = sample_dir / "truth.csv"
    config = ScanConfig(
        inputs=[str(sample_dir)], model="fake", db=str(tmp_path / "r.db"), report=None, truth=str(truth),
        fields_file=str(fields_file),
    )
    inputs = read_scan_inputs(config)  # the scan resolves its question here, before the (slow) model load
    asked = config.scan_prompt().text
    key = config.run_key(config.scan_prompt())
    declared = load_fields(fields_file).to_json()
    assert "colour" in asked
    fields_file.write_text('[fields.material]\nkind = "text"\n', encoding="utf-8")  # edited while the model loads

    backend = FakeBackend(lambda image, prompt: '{"colour": "Brown"}')
    store = open_store(config.db)
    summary = Scanner(config, backend, store, inputs=inputs).run()
    assert summary.run_key == key
    assert {prompt for _, prompts in backend.calls for prompt in prompts} == {asked}
    run = store.get_run(summary.run_id)
    assert (run.prompt_text, run.settings["fields"]) == (asked, declared)
    metrics = store.run_metrics(summary.run_id)
    brown = truth.read_text(encoding="utf-8").count(",Brown\n")
    assert (metrics["colour"].correct, "material" in metrics) == (brown, False)


def test_a_shard_carries_the_resolved_question_and_a_changed_setting_reads_it_again(tmp_path):
    fields_file = tmp_path / "fields.toml"
    fields_file.write_text('[fields.colour]\nkind = "category"\n', encoding="utf-8")
    config = ScanConfig(inputs=[str(tmp_path)], model="fake", fields_file=str(fields_file))
    asked, declared = config.scan_prompt(), config.fieldset()
    fields_file.write_text('[fields.material]\nkind = "text"\n', encoding="utf-8")

    # what multigpu does: a derived config for each shard, pickled into a spawned process
    shard = pickle.loads(pickle.dumps(config.derive(device="cpu", shard=(1, 2), report=None)))
    assert (shard.scan_prompt(), shard.fieldset()) == (asked, declared)
    assert shard.run_key(shard.scan_prompt()) == config.run_key(asked)
    assert config == ScanConfig(inputs=[str(tmp_path)], model="fake", fields_file=str(fields_file))

    moved = tmp_path / "moved.toml"
    shutil.copy(fields_file, moved)
    other = config.derive(fields_file=str(moved))  # another file: read now, and the prompt follows it
    assert other.fieldset().names == load_fields(moved).names
    assert "material" in other.scan_prompt().text and "colour" not in other.scan_prompt().text
