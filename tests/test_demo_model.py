"""`--model demo`: the registry resolves it to the package's demo_model/ folder for scan and train, offline; a
missing or empty folder is a one-line error; report picks runs by model. Tests marked by the demo_model_dir
fixture use the real folder (any valid one: accuracy is tested elsewhere) and skip where it is absent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import inspector
from inspector.checkpoints import TrainedQuestion
from inspector.cli import cli
from inspector.errors import InputError
from inspector.prompts import get_prompt
from inspector.registry import DEMO_MODEL_DIR, MODELS, RegisteredModel, resolve_model
from inspector.scan import ScanConfig
from inspector.store import open_store
from inspector.train_cli import train_command


def fake_folder(folder: Path, weights: bytes = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ") -> Path:
    """A folder that passes the registry's checks (config.json and a non-empty *.safetensors); not loadable."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(weights)
    return folder


@pytest.fixture()
def demo_at(monkeypatch):
    """Point `demo` at another folder for one test."""

    def point(folder: Path) -> Path:
        monkeypatch.setitem(MODELS, "demo", RegisteredModel("demo", folder, MODELS["demo"].description))
        return folder

    return point


def test_demo_is_the_folder_inside_the_package():
    assert Path(inspector.__file__).resolve().parent / "demo_model" == DEMO_MODEL_DIR
    assert MODELS["demo"].folder == DEMO_MODEL_DIR


def test_a_registered_name_resolves_to_its_folder_and_anything_else_stays(demo_at, tmp_path):
    folder = demo_at(fake_folder(tmp_path / "weights"))
    assert resolve_model("demo") == str(folder)
    for other in ("microsoft/Phi-3.5-vision-instruct", "./demo", str(tmp_path), "fake:answers.json"):
        assert resolve_model(other) == other


@pytest.mark.parametrize("command", ["scan", "train"])
@pytest.mark.parametrize("state", ["missing", "empty", "no weights", "lfs pointer"])
def test_a_demo_folder_that_is_missing_or_has_no_weights_is_a_one_line_error(
    demo_at, tmp_path, sample_dir, command, state
):
    folder = demo_at(tmp_path / "demo_model")
    if state != "missing":
        folder.mkdir()
    if state == "no weights":
        (folder / "config.json").write_text("{}")
        (folder / "README.md").write_text("# model card")
        (folder / "model.safetensors").write_bytes(b"")
    if state == "lfs pointer":
        fake_folder(folder, b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 41000000\n")
    expected = {
        "missing": f"Error: --model demo: its folder {folder} is missing (it ships inside the inspector package)",
        "empty": f"Error: --model demo: {folder} holds no model weights (config.json and *.safetensors)",
        "no weights": f"Error: --model demo: {folder} holds no model weights (config.json and *.safetensors)",
        "lfs pointer": f"Error: --model demo: {folder / 'model.safetensors'} is a Git LFS pointer, not the weights: "
        "run `git lfs pull`",
    }[state]
    if command == "scan":
        args = ["scan", str(sample_dir), "--model", "demo", "--db", str(tmp_path / "r.db"), "--no-report"]
        result = CliRunner().invoke(cli, args)
    else:
        args = ["--truth", str(sample_dir / "truth.csv"), "--model", "demo", "--output", str(tmp_path / "out")]
        result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 1
    assert result.output == expected + "\n"
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "out").exists()  # nothing started


def test_the_run_key_of_demo_follows_its_weights(demo_at, tmp_path):
    """The folder is replaced in place when retrained: new weights are a new run, the same weights the same."""
    folder = demo_at(fake_folder(tmp_path / "demo_model", b"weights one"))
    config = ScanConfig(inputs=[str(tmp_path)], model="demo")
    prompt = get_prompt()
    first = config.run_key(prompt)
    assert config.run_key(prompt) == first
    (folder / "model.safetensors").write_bytes(b"other weights")
    second = config.run_key(prompt)
    assert second != first
    moved = demo_at(tmp_path / "copied")
    shutil.copytree(folder, moved)
    assert config.run_key(prompt) == second


def test_demo_asks_the_question_its_folder_was_trained_on(demo_at, tmp_path):
    from inspector.scan import ask_as_trained
    from inspector.training.config import TrainConfig

    fields_file = tmp_path / "fields.toml"
    fields_file.write_text('[fields.colour]\nkind = "category"\n')
    folder = demo_at(fake_folder(tmp_path / "demo_model"))
    TrainConfig(truth="cards.csv", output=str(folder), fields_file=str(fields_file), num_crops=1).save(folder)
    config, adopted = ask_as_trained(ScanConfig(inputs=[str(tmp_path)], model="demo"))
    assert adopted == TrainedQuestion(fields_file=str(folder / "train_fields.toml"), num_crops=1)
    assert config.model == "demo" and config.fieldset().names[-1] == "colour"


def _scan_fake(tmp_path: Path, sample_dir: Path, name: str) -> None:
    answers = tmp_path / f"{name}.json"
    answers.write_text(json.dumps(['{"brand": "Acme"}'] * 2))
    args = ["scan", str(sample_dir), "--model", f"fake:{answers}", "--db", str(tmp_path / "r.db"), "--no-report",
            "--limit", "2"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output


def test_report_model_picks_the_latest_run_of_that_model(tmp_path, sample_dir):
    for name in ("a", "b", "a2"):
        _scan_fake(tmp_path, sample_dir, name)
    db, out = str(tmp_path / "r.db"), tmp_path / "report.html"
    model_a = f"fake:{tmp_path / 'a.json'}"
    runner = CliRunner()
    result = runner.invoke(cli, ["report", "--db", db, "--out", str(out), "--model", model_a])
    assert (result.exit_code, result.output) == (0, f"Report: {out}\n")
    store = open_store(db, read_only=True)
    assert store.get_run(model=model_a).id == 1
    assert store.get_run(model=f"fake:{tmp_path / 'a2.json'}").id == 3
    assert store.get_run("2", model=f"fake:{tmp_path / 'b.json'}").id == 2

    result = runner.invoke(cli, ["report", "2", "--db", db, "--out", str(out), "--model", model_a])
    assert (result.exit_code, result.output) == (
        1, f"Error: run 2 was scanned with model 'fake:{tmp_path / 'b.json'}', not '{model_a}'\n"
    )  # fmt: skip
    result = runner.invoke(cli, ["report", "--db", db, "--out", str(out), "--model", "demo"])
    models = ", ".join(sorted(f"fake:{tmp_path / name}.json" for name in ("a", "a2", "b")))
    assert (result.exit_code, result.output) == (
        1, f"Error: no run of model 'demo' in sqlite:///{db}; the runs' models: {models}\n"
    )  # fmt: skip


def test_a_model_that_reads_every_card_right_disagrees_with_the_samples_exactly_at_the_planted_errors(
    tmp_path, sample_dir
):
    """What the demo is for, model aside: answers that are the cards' true values (the clean catalogue) are scored
    against sample_images/truth.csv as correct everywhere except the planted errors, each a `wrong` of its field."""
    from inspector.backends.fake import FakeBackend, pixel_key
    from inspector.discovery import discover, read_source
    from inspector.fields import load_fields
    from inspector.images import decode_image
    from inspector.prompts import format_answer
    from inspector.samples import PLANTED_ERRORS, generate_samples
    from inspector.scan import Scanner
    from inspector.truth import load_truth

    fieldset = load_fields(sample_dir / "fields.toml")
    clean = load_truth(generate_samples(tmp_path / "clean", with_planted_errors=False), fieldset=fieldset)
    sources = discover([sample_dir])
    match = clean.match([Path(source.path.name) for source in sources], [])
    answers = {
        pixel_key(decode_image(read_source(source)).image): format_answer(
            match.records[Path(source.path.name)].fields, fieldset=fieldset
        )
        for source in sources
    }
    config = ScanConfig(inputs=[str(sample_dir)], model="fake", db=str(tmp_path / "r.db"), report=None,
                        truth=str(sample_dir / "truth.csv"), fields_file=str(sample_dir / "fields.toml"))  # fmt: skip
    store = open_store(config.db)
    backend = FakeBackend(lambda image, prompt: answers[pixel_key(image)])
    summary = Scanner(config, backend, store).run()
    disagreements = {
        (Path(row["path"]).name, result["field"], result["outcome"], result["expected"], result["predicted"])
        for row in store.run_rows(summary.run_id, with_thumbnails=False)
        for result in row["field_results"]
        if result["outcome"] not in ("correct", "both_empty")
    }
    assert disagreements == {(e.file_name, e.field, "wrong", e.catalogue, e.true) for e in PLANTED_ERRORS}


# ------------------------------------------------------------------------------- the real folder, where present


def test_the_demo_folder_is_a_model_with_its_card_and_question(demo_model_dir):
    """Any valid demo folder: weights of at most about 40 MB, a model card, and the question it was trained on,
    its files beside it, colour among its fields."""
    assert demo_model_dir == DEMO_MODEL_DIR
    assert resolve_model("demo") == str(DEMO_MODEL_DIR)
    weights = sum(path.stat().st_size for path in DEMO_MODEL_DIR.glob("*.safetensors"))
    assert weights <= 45_000_000, weights
    assert (DEMO_MODEL_DIR / "README.md").is_file()
    question = TrainedQuestion.of(DEMO_MODEL_DIR)
    assert question is not None and question.missing == {}
    assert "colour" in question.as_prompt().text


def test_scan_with_model_demo_runs_offline_on_cpu_and_asks_its_own_question(demo_model_dir, tmp_path, sample_dir):
    question = TrainedQuestion.of(demo_model_dir)
    db = tmp_path / "demo.db"
    args = ["scan", str(sample_dir), "--truth", str(sample_dir / "truth.csv"), "--model", "demo", "--device", "cpu",
            "--db", str(db), "--report", str(tmp_path / "report.html"), "--limit", "2"]  # fmt: skip
    result = CliRunner().invoke(cli, args)  # conftest sets HF_HUB_OFFLINE=1
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0].startswith(
        f"Asking demo the question it was trained on: {question.options()} (fields: "
    )
    assert result.stdout.startswith("Run 1: 2 images answered, 0 failed")
    run = open_store(db, read_only=True).get_run(model="demo")
    assert run.prompt_text == question.as_prompt().text
    assert "colour" in run.fields.names


def test_a_demo_folder_without_its_weights_is_refused(demo_model_dir, tmp_path, demo_at):
    """A copy of the real folder without model.safetensors: the one-line error, not a transformers traceback."""
    copy = demo_at(tmp_path / "demo_model")
    shutil.copytree(demo_model_dir, copy, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(InputError, match="holds no model weights"):
        resolve_model("demo")
