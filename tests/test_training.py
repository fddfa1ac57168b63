"""`inspector train`: data, label masking, Trainer runs on tiny VLMs, LoRA / frozen vision, resume, best model, CLI.

Tiny random models learn nothing useful; these tests check that the machinery is right: what the loss sees,
that it falls, that evaluation generates, and that the saved models load in scan's backend.
"""

from __future__ import annotations

import csv
import glob
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from inspector.errors import InputError
from inspector.fields import ProductFields
from inspector.parsing import parse_answer
from inspector.prompts import format_answer, get_prompt
from inspector.samples import generate_samples
from inspector.training import TrainConfig
from inspector.training.collator import IGNORE_INDEX, TrainingCollator
from inspector.training.data import load_training_data, split_examples

QUESTION = get_prompt().text


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a busy 2-core machine two threads contend and run tiny models ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def keep_grad_mode():
    """HFBackend switches autograd off for the whole process; put it back for the tests that follow."""
    enabled = torch.is_grad_enabled()
    yield
    torch.set_grad_enabled(enabled)


@pytest.fixture(scope="module")
def cards(tmp_path_factory) -> Path:
    """8 synthetic listing cards and their truth.csv."""
    folder = tmp_path_factory.mktemp("cards")
    return generate_samples(folder, n=8, seed=3)


def _config(cards: Path, model: Path, output: Path, **overrides) -> TrainConfig:
    settings = dict(
        truth=str(cards),
        model=str(model),
        output=str(output),
        val_fraction=0.25,
        max_steps=24,
        lr=3e-3,
        batch_size=4,
        eval_every=12,
        eval_samples=2,
        max_new_tokens=24,
        workers=0,
        logging_steps=1,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def _metrics(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def _losses(output: Path) -> dict[int, float]:
    return {record["step"]: record["loss"] for record in _metrics(output) if "loss" in record}


# ------------------------------------------------------------------------------------------------ data


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_data_skips_and_counts_what_cannot_be_used(tmp_path):
    Image.new("RGB", (64, 64), "red").save(tmp_path / "a.png")
    Image.new("RGB", (64, 64), "blue").save(tmp_path / "b.png")
    shutil.copyfile(tmp_path / "a.png", tmp_path / "a_copy.png")  # same bytes as a.png
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.new("RGB", (64, 64), "green").save(tmp_path / "stray.png")  # no catalogue row
    Image.new("RGB", (64, 64), "white").save(tmp_path / "blank.png")  # a row with no product value
    rows = [
        {"file": "a.png", "title": "Alpha Tee", "price": "$10.00"},
        {"file": "a_copy.png", "title": "Alpha Tee", "price": "$10.00"},
        {"file": "b.png", "title": "Beta Cap", "price": "12,50 €"},
        {"file": "broken.jpg", "title": "Broken", "price": "1"},
        {"file": "missing.png", "title": "Nowhere", "price": "3"},
        {"file": "blank.png", "title": "", "price": ""},
    ]
    config = TrainConfig(truth=str(_write_csv(tmp_path / "truth.csv", rows)), val_fraction=0.5, seed=1)
    data = load_training_data(config)
    summary = data.summary
    assert (summary.rows, summary.images_found, summary.matched_images) == (6, 6, 5)
    assert (summary.unmatched_images, summary.unmatched_rows) == (1, 1)
    assert (summary.unreadable_images, summary.duplicate_images, summary.empty_rows) == (1, 1, 1)
    assert list(summary.unreadable) == [str(tmp_path / "broken.jpg")]
    assert (summary.train_examples, summary.val_examples) == (1, 1)
    used = sorted(Path(e.location).name for e in data.train + data.val)
    assert used == ["a.png", "b.png"]
    by_name = {Path(e.location).name: e for e in data.train + data.val}
    assert by_name["b.png"].truth.price == 12.5 and by_name["b.png"].truth.currency == "EUR"
    assert by_name["b.png"].answer == format_answer(by_name["b.png"].truth, "json")
    assert data.scored_fields == ["title", "price", "currency"]


def test_negative_ambiguous_and_malformed_catalogue_rows_never_become_targets(tmp_path):
    """Issue 8: "-5.00" was taught as 5.0, and an unquoted comma shifted a row's cells into the wrong fields."""
    for name, colour in (("a.png", "red"), ("b.png", "blue"), ("c.png", "green"), ("d.png", "white")):
        Image.new("RGB", (64, 64), colour).save(tmp_path / name)
    csv_path = tmp_path / "truth.csv"
    csv_path.write_text(
        "file,title,price\na.png,Alpha,-5.00\nb.png,Beta,\"1,290\"\nc.png,Gamma, Long,30.00\nd.png,Delta,40.00\n"
    )
    data = load_training_data(TrainConfig(truth=str(csv_path), val_fraction=0))
    assert [Path(e.location).name for e in data.train] == ["d.png"]
    assert (data.summary.bad_rows, data.summary.unparseable_cells, data.summary.malformed_rows) == (2, 2, 1)


def test_rows_with_unreadable_cells_are_skipped_and_counted(tmp_path):
    """A price that cannot be read would make the target say "price": null for an image that shows one."""
    for name, colour in (("a.png", "red"), ("b.png", "blue"), ("c.png", "green")):
        Image.new("RGB", (64, 64), colour).save(tmp_path / name)
    rows = [
        {"file": "a.png", "title": "Alpha Tee", "price": "$10.00"},
        {"file": "b.png", "title": "Beta Cap", "price": "TBD"},
        {"file": "c.png", "title": "Gamma Bag", "price": "$30.00"},
    ]
    config = TrainConfig(truth=str(_write_csv(tmp_path / "truth.csv", rows)), val_fraction=0)
    data = load_training_data(config)
    assert sorted(Path(e.location).name for e in data.train) == ["a.png", "c.png"]
    assert (data.summary.bad_rows, data.summary.unparseable_cells) == (1, 1)
    assert all(e.truth.price is not None for e in data.train)


def test_a_field_several_columns_could_be_is_warned_about_in_training_too(tmp_path):
    """Issue 20.2: train reads the catalogue as scan does, and says so when a field has several candidates."""
    for name, colour in (("a.png", "red"), ("b.png", "blue")):
        Image.new("RGB", (64, 64), colour).save(tmp_path / name)
    csv_path = tmp_path / "truth.csv"
    csv_path.write_text("file,title,Title,price\na.png,Alpha,A,10.00\nb.png,Beta,B,12.00\n")
    data = load_training_data(TrainConfig(truth=str(csv_path), val_fraction=0))
    assert data.summary.column_warnings == [
        "2 catalogue columns look like title ('title', 'Title'); using 'title'. "
        'Choose one with --truth-columns title="COLUMN"'
    ]
    assert sorted(e.truth.title for e in data.train) == ["Alpha", "Beta"]


def test_empty_training_set_is_a_clear_error(tmp_path):
    Image.new("RGB", (64, 64)).save(tmp_path / "x.png")
    csv_path = _write_csv(tmp_path / "truth.csv", [{"file": "other.png", "title": "T", "price": "1"}])
    with pytest.raises(InputError, match=r"No training examples: 1 images found under .*, 0 matched a row"):
        load_training_data(TrainConfig(truth=str(csv_path)))


def test_split_is_deterministic_and_by_catalogue_row(cards):
    data = load_training_data(TrainConfig(truth=str(cards), val_fraction=0.25, seed=5))
    again = load_training_data(TrainConfig(truth=str(cards), val_fraction=0.25, seed=5))
    assert [e.location for e in data.val] == [e.location for e in again.val]
    assert len(data.val) == 2 and len(data.train) == 6
    assert not {e.row_number for e in data.val} & {e.row_number for e in data.train}
    # Two images of one row stay together, whatever the seed.
    examples = data.train + data.val
    with_twin = [*examples, replace(examples[0], location="twin")]
    for seed in range(6):
        train, val = split_examples(with_twin, 0.5, seed)
        sides = {
            "train" if e in train else "val" for e in with_twin if e.row_number == examples[0].row_number
        }
        assert len(sides) == 1
    seeds = {tuple(e.location for e in split_examples(examples, 0.25, seed)[1]) for seed in range(6)}
    assert len(seeds) > 1


def test_separate_validation_csv_is_never_trained_on(cards, tmp_path):
    rows = list(csv.DictReader(cards.open()))
    folder = cards.parent
    _write_csv(
        tmp_path / "heldout.csv",
        [{**r, "local_image_path": str(folder / r["local_image_path"])} for r in rows[:2]],
    )
    train_rows = [{**r, "local_image_path": str(folder / r["local_image_path"])} for r in rows[2:]]
    train_rows.append({**train_rows[0], "local_image_path": str(folder / rows[0]["local_image_path"])})
    _write_csv(tmp_path / "train.csv", train_rows)  # its last row names a held-out image under another row
    config = TrainConfig(
        truth=str(tmp_path / "train.csv"), val_truth=str(tmp_path / "heldout.csv"), images=str(folder)
    )
    data = load_training_data(config)
    assert sorted(Path(e.location).name for e in data.val) == sorted(
        Path(r["local_image_path"]).name for r in rows[:2]
    )
    assert len(data.train) == 6 and not {e.location for e in data.train} & {e.location for e in data.val}
    assert data.summary.duplicate_images == 1
    assert (data.summary.train_examples, data.summary.val_examples) == (6, 2)


def test_sizes_prompt_teaches_only_the_asked_sizes(cards):
    data = load_training_data(TrainConfig(truth=str(cards), sizes=["6.5", "8"], val_fraction=0))
    sized = [e for e in data.train if e.truth.category == "sneakers"]
    assert sized, "the sample set has sneakers with a size table"
    for example in data.train:
        assert set(example.truth.size_prices or {}) <= {"6.5", "8"}
        assert json.loads(example.answer)["sizes"] == (example.truth.size_prices or {})


def test_config_checks_and_round_trip(tmp_path):
    with pytest.raises(InputError, match="--keep-adapter only applies to --method lora"):
        TrainConfig(truth="t.csv", model="m", output="o", keep_adapter=True).validate()
    with pytest.raises(InputError, match="needs generated answers"):
        TrainConfig(truth="t.csv", model="m", output="o", eval_samples=0).validate()
    TrainConfig(truth="t.csv", model="m", output="o", eval_samples=0, best_metric="loss").validate()
    config = TrainConfig(truth="t.csv", model="m", output="o", sizes=["8"], truth_columns={"title": "Name"})
    assert TrainConfig.load(config.save(tmp_path)) == config
    assert (config.best_metric_key, config.greater_is_better) == ("eval_field_accuracy", True)
    assert not TrainConfig(best_metric="price_mae").greater_is_better
    with pytest.raises(
        InputError, match="Unknown --best-metric 'accuracy'; use one of: loss, field_accuracy"
    ):
        TrainConfig(truth="t.csv", model="m", output="o", best_metric="accuracy").validate()


def test_generation_metrics_always_have_every_figure():
    """Any figure may pick the best model, so each is always logged: NaN when nothing was measured, and a NaN
    never makes a model the best."""
    import math

    from inspector.scoring import score_answer
    from inspector.training.data import Example
    from inspector.training.evaluation import AnswerRecord, generation_metrics
    from inspector.training.metrics import metric_names
    from inspector.training.trainer import BestExporter

    truth = ProductFields(brand="Acme", category="cap", price=12.0, currency="USD")
    example = Example("a.png", Path("a.png"), 1, truth, format_answer(truth))
    answer = '{"brand": "Acme", "category": "hat", "price": null, "currency": "USD"}'
    metrics = generation_metrics([AnswerRecord(example, answer, score_answer(parse_answer(answer), truth))],
                                 ["brand", "category", "price", "currency"])  # fmt: skip
    assert {f"eval_{name}" for name in metric_names() if name != "loss"} <= set(metrics)
    assert (metrics["eval_brand_accuracy"], metrics["eval_category_accuracy"]) == (1.0, 0.0)
    assert metrics["eval_price_accuracy"] == 0.0 and math.isnan(metrics["eval_price_mae"])
    assert math.isnan(metrics["eval_size_price_accuracy"])
    assert metrics["eval_field_accuracy"] == 0.5 and metrics["eval_parsed"] == 1.0
    exporter = BestExporter(Path("unused"), None, TrainConfig(best_metric="price_mae"))
    assert not exporter.is_better(metrics["eval_price_mae"]) and exporter.is_better(3.0)


def test_a_tied_evaluation_goes_to_the_lower_loss_then_to_the_later_one(tmp_path, monkeypatch):
    """Issue 20.8: field accuracy 0.0 at step 10 and at step 20 while the loss still fell kept step 10."""
    from types import SimpleNamespace

    import inspector.training.trainer as trainer
    from inspector.training.trainer import BestExporter

    exported = []
    monkeypatch.setattr(trainer, "export", lambda model, processor, folder, config, metrics, step: exported.append(step))
    exporter = BestExporter(tmp_path, None, TrainConfig())
    for step, accuracy, loss in [(10, 0.0, 2.0), (20, 0.0, 1.5), (30, 0.0, 1.7), (40, 0.25, 1.9), (50, 0.25, None)]:
        metrics = {"eval_field_accuracy": accuracy} | ({} if loss is None else {"eval_loss": loss})
        exporter.consider(None, metrics, SimpleNamespace(global_step=step))
    # 20: same accuracy, lower loss; not 30 (higher loss); 40: better accuracy; 50: a tie without a loss: later
    assert exported == [10, 20, 40, 50]
    assert (exporter.best_step, exporter.best) == (50, 0.25)


# ------------------------------------------------------------------------------------------------ labels


def _batch_items() -> list[dict]:
    long_answer = format_answer(
        ProductFields(brand="Acme", title="Trail Runner", category="sneakers", price=129.99, currency="USD",
                      size_prices={"8": 129.99, "9.5": 134.99}),
        "json",
    )  # fmt: skip
    return [
        {"image": Image.new("RGB", (120, 80), "red"), "answer": long_answer},
        {
            "image": Image.new("RGB", (60, 90), "blue"),
            "answer": "Product: Cap, Category: cap, Full Price: 9.5",
        },
    ]


@pytest.mark.parametrize("family", ["llava", "idefics3", "phi3v"])
def test_labels_keep_only_the_answer_and_its_end_of_turn(family, request, keep_grad_mode):
    from inspector.backends.hf import HFBackend

    folder = request.getfixturevalue(f"tiny_{family}")
    num_crops = 1 if family == "phi3v" else None
    backend = HFBackend(str(folder), num_crops=num_crops)  # scan's backend: the prompts must be identical
    collator = TrainingCollator(backend.processor, QUESTION, num_crops=num_crops)
    assert collator.prompt_text == backend.build_prompt(QUESTION)

    items = _batch_items()
    batch = collator(items)
    input_ids, labels, attention = batch["input_ids"], batch["labels"], batch["attention_mask"]
    tokenizer = backend.tokenizer
    image_token_id = getattr(backend.processor, "image_token_id", None)
    assert image_token_id is not None
    assert attention[1].sum() < attention[0].sum(), "the short answer's row is padded"
    for row, item in enumerate(items):
        length = int(attention[row].sum())
        assert attention[row, :length].all() and not attention[row, length:].any(), "padding is on the right"
        assert (labels[row, length:] == IGNORE_INDEX).all(), "padding is never trained on"
        assert (labels[row][input_ids[row] == image_token_id] == IGNORE_INDEX).all(), (
            "image tokens are masked"
        )
        trained = (labels[row] != IGNORE_INDEX).nonzero().flatten()
        start = int(trained[0])
        assert trained.tolist() == list(range(start, length)), (
            "one contiguous span, up to the last real token"
        )
        assert torch.equal(labels[row, start:length], input_ids[row, start:length])
        text = tokenizer.decode(labels[row, start:length], skip_special_tokens=False)
        end_of_turn = "<|end|>"
        assert text.startswith(item["answer"] + end_of_turn)
        assert text[len(item["answer"] + end_of_turn) :].strip() == "", text
        # What precedes the answer is exactly what scan sends to generate() for this image.
        prompt = backend.prepare([item["image"]], [QUESTION])
        assert input_ids[row, :start].tolist() == prompt["input_ids"][0].tolist()
    if family == "llava":
        assert tokenizer.decode(labels[1][labels[1] != IGNORE_INDEX]) == items[1]["answer"] + "<|end|>\n"


def test_slow_path_finds_the_same_answer_spans(tiny_idefics3):
    from inspector.backends.hf import load_processor

    processor = load_processor(str(tiny_idefics3))
    fast = TrainingCollator(processor, QUESTION)

    slow = TrainingCollator(processor, QUESTION)
    slow.answer_ids = lambda answer: [-1]  # never matches: every batch takes the prompt-with-images path
    expected, got = fast(_batch_items()), slow(_batch_items())
    assert torch.equal(expected["labels"], got["labels"])
    assert (got["labels"] != IGNORE_INDEX).any()


# ------------------------------------------------------------------------------------------------ methods


def test_merged_lora_weights_give_the_adapted_model_outputs(tiny_llava, tmp_path):
    from transformers import AutoModelForImageTextToText

    from inspector.backends.hf import load_processor
    from inspector.training.methods import apply_lora, save_model

    processor = load_processor(str(tiny_llava))
    batch = TrainingCollator(processor, QUESTION)(_batch_items())
    batch.pop("labels")
    model = apply_lora(AutoModelForImageTextToText.from_pretrained(tiny_llava), 4, 8, 0.0, None)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)  # B starts at zero: make the update real
        model.eval()
        adapted = model(**batch).logits
        base = model.get_base_model()
        with model.disable_adapter():
            original = model(**batch).logits
    assert not torch.allclose(adapted, original, atol=1e-3)
    save_model(model, tmp_path / "merged")
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert set(merged.state_dict()) == {
        k.replace(".base_layer.", ".") for k in base.state_dict() if ".lora_" not in k
    }
    with torch.no_grad():
        merged.eval()
        assert torch.allclose(merged(**batch).logits, adapted, atol=1e-5)


@pytest.mark.parametrize("family", ["llava", "idefics3", "phi3v"])
def test_frozen_vision_freezes_tower_and_projector_only(family, request):
    from transformers import AutoModelForImageTextToText

    from inspector.modelparts import language_linear_names, vision_modules
    from inspector.training.methods import freeze_vision

    model = AutoModelForImageTextToText.from_pretrained(request.getfixturevalue(f"tiny_{family}"))
    frozen = freeze_vision(model)
    expected_modules = {
        "llava": {"model.vision_tower", "model.multi_modal_projector"},
        "idefics3": {"model.vision_model", "model.connector"},
        "phi3v": {"model.vision_embed_tokens"},
    }[family]
    assert set(vision_modules(model)) == expected_modules
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == (not name.startswith(tuple(expected_modules))), name
    assert frozen == sum(p.numel() for p in model.parameters() if not p.requires_grad) > 0
    targets = language_linear_names(model)
    assert targets and not any(t.startswith(tuple(expected_modules)) for t in targets)
    assert "lm_head" not in targets
    suffixes = {t.rsplit(".", 1)[-1] for t in targets}
    if family == "phi3v":
        assert suffixes == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    else:
        assert suffixes == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_training_backend_options_are_the_train_settings_of_the_same_names():
    """A backend setting is declared once (BackendOptions) for scan and train: each is a TrainConfig setting of its
    name or is said not to be one, with why."""
    from dataclasses import fields

    from inspector.backends import BackendOptions
    from inspector.training.config import BACKEND_OPTIONS_NOT_IN_TRAIN

    train_settings = {f.name for f in fields(TrainConfig)}
    for setting in fields(BackendOptions):
        assert (setting.name in train_settings) != (setting.name in BACKEND_OPTIONS_NOT_IN_TRAIN), setting.name
    assert set(BACKEND_OPTIONS_NOT_IN_TRAIN) <= {f.name for f in fields(BackendOptions)}
    config = TrainConfig(model="m", trust_remote_code=True, num_crops=8, fuse="none")
    assert config.backend_options("bfloat16") == BackendOptions(
        dtype="bfloat16", trust_remote_code=True, num_crops=8, fuse="none"
    )
    assert TrainConfig().backend_options() == BackendOptions()


def test_the_training_model_loads_as_its_backend_options_say(tiny_llava):
    from inspector.backends import BackendOptions
    from inspector.training.methods import load_model

    model, processor = load_model(
        str(tiny_llava), BackendOptions(dtype="bfloat16", attn_implementation="eager", fuse="none")
    )
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config._attn_implementation == "eager"
    assert processor.tokenizer.pad_token is not None
    model, _ = load_model(str(tiny_llava), BackendOptions(dtype="fp32"))  # scan's names work too
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.config._attn_implementation != "eager"


def test_the_training_model_is_fused_as_its_backend_options_say(tiny_phi3v):
    from inspector.backends import BackendOptions
    from inspector.speedups import COMPILED_CLASSES
    from inspector.training.methods import load_model

    def compiled(model) -> list[str]:
        return [
            type(module).__name__
            for module in model.modules()
            if getattr(module, "_compiled_call_impl", None) is not None
        ]

    fused, _ = load_model(str(tiny_phi3v), BackendOptions(dtype="float32", fuse="compile"))
    assert compiled(fused) and set(compiled(fused)) <= set(COMPILED_CLASSES)
    plain, _ = load_model(str(tiny_phi3v), BackendOptions(dtype="float32", fuse="none"))
    assert compiled(plain) == []


def test_frozen_vision_freezes_bare_vision_parameters_too():
    """LLaVA-NeXT's image_newline is a bare parameter of the model, not a module: it is part of the vision side."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    from inspector.training.methods import freeze_vision

    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=28, patch_size=14)  # fmt: skip
    text = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       vocab_size=100)  # fmt: skip
    config = LlavaNextConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), image_grid_pinpoints=[[28, 28]]
    )
    with torch.device("meta"):
        model = LlavaNextForConditionalGeneration(config)
    freeze_vision(model)
    parameters = dict(model.named_parameters())
    assert not parameters["model.image_newline"].requires_grad
    assert parameters["lm_head.weight"].requires_grad


def test_wandb_predictions_table_is_not_dropped(tmp_path, monkeypatch):
    """The Trainer logs to wandb without a step (so wandb's step runs ahead of the global step): a table logged
    at step=global_step would be dropped as out of order."""
    wandb = pytest.importorskip("wandb")
    from inspector.training.data import Example
    from inspector.training.evaluation import AnswerRecord, EvaluationOutcome
    from inspector.training.trainer import _log_wandb_table

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "a.png")
    truth = ProductFields(title="Alpha Tee", price=10.0)
    example = Example(str(tmp_path / "a.png"), tmp_path / "a.png", 1, truth, format_answer(truth))
    run = wandb.init(project="inspector-test", dir=str(tmp_path))
    try:
        wandb.define_metric("train/global_step")
        wandb.define_metric("*", step_metric="train/global_step", step_sync=True)
        for _ in range(3):  # as WandbCallback.on_log does: loss, eval loss, generated figures
            wandb.log({"train/loss": 1.0, "train/global_step": 2})
        _log_wandb_table(EvaluationOutcome({}, [AnswerRecord(example, example.answer, [])]), 2)
        assert "eval/predictions" in dict(run.summary)
    finally:
        wandb.finish()
        wandb.teardown()  # the process-wide wandb settings would otherwise carry over to later runs


# ------------------------------------------------------------------------------------------------ training runs


@pytest.fixture(scope="module")
def llava_run(cards, tiny_llava, tmp_path_factory):
    """24 full fine-tuning steps of tiny LLaVA on 6 cards, evaluated at steps 12 and 24."""
    from inspector.training import train

    output = tmp_path_factory.mktemp("llava-run")
    config = _config(cards, tiny_llava, output)
    return config, train(config)


@pytest.mark.slow
def test_loss_falls_and_eval_generates_and_scores(llava_run):
    config, result = llava_run
    output = Path(config.output)
    losses = _losses(output)
    assert sorted(losses) == list(range(1, 25))
    first, last = losses[1], sum(losses[s] for s in (22, 23, 24)) / 3
    assert last < 0.75 * first, losses

    records = _metrics(output)
    for field in ("learning_rate", "grad_norm", "samples_per_second"):
        assert any(field in r for r in records), field
    evals = {r["step"]: r for r in records if "eval_field_accuracy" in r}
    assert sorted(evals) == [12, 24]
    for step, figures in evals.items():
        for field in ("brand", "title", "category", "price", "currency"):
            assert 0.0 <= figures[f"eval_{field}_accuracy"] <= 1.0
        assert figures["eval_generated"] == 2.0
        assert any(r["step"] == step and "eval_loss" in r for r in records)

    predictions = [json.loads(line) for line in (output / "eval_predictions.jsonl").read_text().splitlines()]
    assert [p["step"] for p in predictions] == [12, 12, 24, 24]
    assert all(set(p["outcomes"]) >= {"brand", "title", "category", "price", "currency"} for p in predictions)

    assert (result.first_step, result.steps) == (0, 24)
    assert result.data.train_examples == 6 and result.data.val_examples == 2
    assert result.precision == "fp32"
    assert result.best_step in (12, 24) and result.best_dir == str(output / "best")
    assert result.eval_metrics["eval_generated"] == 2.0
    assert [Path(c).name for c in result.checkpoints] == ["checkpoint-12", "checkpoint-24"]
    for checkpoint in result.checkpoints:
        assert TrainConfig.load(checkpoint) == config
    assert TrainConfig.load(output / "best") == config


@pytest.mark.slow
def test_best_model_loads_in_scan_backend_and_gives_the_evaluated_answers(llava_run, keep_grad_mode):
    """The answers logged at the best step came from generate(): scan's backend, loading OUTPUT/best, gives
    the very same answers for the same images."""
    from inspector.backends.base import GenerationSettings
    from inspector.backends.hf import HFBackend
    from inspector.images import decode_image

    config, result = llava_run
    output = Path(config.output)
    predictions = [json.loads(line) for line in (output / "eval_predictions.jsonl").read_text().splitlines()]
    at_best = [p for p in predictions if p["step"] == result.best_step]
    assert json.loads((output / "best" / "eval_metrics.json").read_text())["step"] == result.best_step
    backend = HFBackend(result.best_dir)
    images = [decode_image(Path(p["image"]).read_bytes()).image for p in at_best]
    answers = backend.generate(images, [QUESTION] * len(images), GenerationSettings(max_new_tokens=24))
    assert [a.text for a in answers] == [p["prediction"] for p in at_best]
    assert any(answer.text for answer in answers)


@pytest.mark.slow
def test_a_scan_of_a_trained_model_asks_the_question_it_learned_without_options(
    cards, tiny_llava, tmp_path, keep_grad_mode, monkeypatch
):
    """Trained with a fields file (colour), a prompt file and sizes, whose files are then gone: a scan with no
    question options asks that question (and one line says so), the same run as the one with those options
    given; options given win. Registered as `demo`, the same folder scans and trains as `--model demo`."""
    from inspector.cli import cli
    from inspector.fields import load_fields
    from inspector.registry import MODELS, RegisteredModel
    from inspector.store import open_store
    from inspector.train_cli import train_command
    from inspector.training import train

    work = tmp_path / "training machine"
    work.mkdir()
    fields_file = shutil.copy(cards.parent / "fields.toml", work / "fields.toml")
    prompt_file = work / "question.txt"
    prompt_file.write_text("Read this listing card. Answer in JSON with its brand, price, currency and colour.")
    output = tmp_path / "run"
    question = dict(fields_file=str(fields_file), prompt_file=str(prompt_file), sizes=["8"])
    train(_config(cards, tiny_llava, output, max_steps=1, eval_every=1, eval_samples=1, max_new_tokens=4, **question))
    trained = get_prompt(None, prompt_file, ["8"], load_fields(fields_file))
    shutil.rmtree(work)  # the checkpoint carries copies of the question's files
    model = output / "final"
    db = tmp_path / "scans.db"
    base = ["scan", str(cards.parent), "--truth", str(cards), "--db", str(db), "--no-report", "--device", "cpu",
            "--max-new-tokens", "4"]  # fmt: skip
    runner = CliRunner()

    result = runner.invoke(cli, [*base, "--model", str(model)])
    assert result.exit_code == 0, result.output
    options = f"--fields {model / 'train_fields.toml'} --prompt-file {model / 'train_prompt.txt'} --sizes 8"
    assert result.stderr.splitlines()[0] == (
        f"Asking {model} the question it was trained on: {options} (fields: brand, title, category, price, "
        "currency, size_prices, colour); options you give win"
    )
    assert "warning" not in result.stderr
    assert result.stdout.startswith("Run 1: 8 images answered, 0 failed")
    store = open_store(db, read_only=True)
    assert store.get_run(1).prompt_text == trained.text
    assert store.get_run(1).fields.names[-1] == "colour"

    given = runner.invoke(cli, [*base, "--model", str(model), *options.split()])
    assert given.exit_code == 0, given.output
    assert "Asking" not in given.stderr and "warning" not in given.stderr
    assert given.stdout.startswith("Run 1: 0 images answered, 0 failed, 8 already done")

    other = runner.invoke(cli, [*base, "--model", str(model), "--sizes", "9"])
    assert other.exit_code == 0, other.output
    assert "--prompt-file" in other.stderr.splitlines()[0] and "--sizes" not in other.stderr.splitlines()[0]
    assert other.stderr.splitlines()[1] == (
        f"warning: {model} was fine-tuned on another question than this scan asks; ask as it was trained: {options}"
    )
    assert other.stdout.startswith("Run 2: 8 images answered")
    assert store.get_run(2).settings["sizes"] == ["9"] and store.get_run(2).fields.names[-1] == "colour"

    monkeypatch.setitem(MODELS, "demo", RegisteredModel("demo", model, "a test checkpoint"))
    demo = runner.invoke(cli, [*base, "--model", "demo"])
    assert demo.exit_code == 0, demo.output
    assert demo.stderr.splitlines()[0].startswith(f"Asking demo the question it was trained on: {options} (")
    assert demo.stdout.startswith("Run 3: 8 images answered")
    assert store.get_run(3).model == "demo" and store.get_run(3).prompt_text == trained.text

    args = ["--truth", str(cards), "--model", "demo", "--output", str(tmp_path / "from-demo"), "--max-steps", "1",
            "--eval-every", "1", "--eval-samples", "0", "--best-metric", "loss", "--workers", "0",
            "--batch-size", "2", "--val-fraction", "0.25"]  # fmt: skip
    tuned = runner.invoke(train_command, args)
    assert tuned.exit_code == 0, tuned.output
    assert TrainConfig.load(tmp_path / "from-demo" / "final").model == "demo"


@pytest.mark.slow
def test_resume_continues_exactly_where_the_run_stopped(llava_run, cards, tiny_llava, tmp_path):
    from inspector.training import train

    _, uninterrupted = llava_run
    output = tmp_path / "resumed"
    config = _config(cards, tiny_llava, output)

    class Interrupt:
        def start(self, total_steps, first_step):
            pass

        def advance(self, step):
            if step == 13:
                raise KeyboardInterrupt  # as if stopped after checkpoint-12 was written

        def log(self, step, figures):
            pass

        def message(self, text):
            pass

    with pytest.raises(KeyboardInterrupt):
        train(config, Interrupt())
    assert (output / "checkpoint-12").is_dir() and not (output / "checkpoint-24").exists()
    with pytest.raises(InputError, match="already holds checkpoints .*pass --resume"):
        train(config)

    config.resume = "latest"
    result = train(config)
    assert (result.first_step, result.steps) == (12, 24)
    resumed, reference = _losses(output), _losses(Path(uninterrupted.output_dir))
    for step in range(14, 25):
        assert resumed[step] == pytest.approx(reference[step], abs=1e-5), step


@pytest.mark.slow
def test_lora_merges_on_save_and_keep_adapter_saves_the_adapter(cards, tiny_llava, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    from inspector.training import train

    base = load_file(tiny_llava / "model.safetensors")
    merged = train(_config(cards, tiny_llava, tmp_path / "merged", method="lora", max_steps=3, eval_every=3,
                           lr=1e-2, lora_r=4, lora_alpha=8, eval_samples=1))  # fmt: skip
    assert merged.trainable_parameters < merged.parameters / 10
    for folder in (merged.best_dir, merged.final_dir):
        assert not (Path(folder) / "adapter_config.json").exists()
        weights = load_file(Path(folder) / "model.safetensors")
        assert not any("lora" in key for key in weights)
        changed = {key for key in weights if not torch.equal(weights[key], base[key])}
        assert changed and all(key.rsplit(".", 2)[-2].endswith("_proj") for key in changed), changed
        assert not any("vision_tower" in key for key in changed)

    adapter = train(_config(cards, tiny_llava, tmp_path / "adapter", method="lora", keep_adapter=True,
                            max_steps=1, eval_every=1, lora_r=4, lora_alpha=8, eval_samples=1))  # fmt: skip
    folder = Path(adapter.best_dir)
    assert (folder / "adapter_model.safetensors").is_file() and not (folder / "model.safetensors").exists()
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_llava.resolve())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (4, 8)
    model = AutoModelForImageTextToText.from_pretrained(folder)  # transformers puts the adapter on its base
    assert any("lora_A" in name for name, _ in model.named_parameters())

    # `inspector scan --model OUTPUT/best` works on an adapter folder too
    from PIL import Image

    from inspector.backends import GenerationSettings, load_backend

    backend = load_backend(str(folder))
    assert any("lora_A" in name for name, _ in backend.model.named_parameters())
    answers = backend.generate([Image.new("RGB", (40, 30), "red")], ["What is shown?"], GenerationSettings(4))
    assert len(answers) == 1 and isinstance(answers[0].text, str)


@pytest.mark.slow
def test_frozen_vision_training_leaves_the_vision_weights_unchanged(cards, tiny_idefics3, tmp_path):
    from safetensors.torch import load_file

    from inspector.training import train

    result = train(_config(cards, tiny_idefics3, tmp_path / "frozen", method="frozen-vision", max_steps=3,
                           val_fraction=0, lr=1e-2, batch_size=2))  # fmt: skip
    assert result.best_dir is None and result.eval_metrics == {}
    before = load_file(tiny_idefics3 / "model.safetensors")
    after = load_file(Path(result.final_dir) / "model.safetensors")
    assert before.keys() == after.keys()
    vision = [k for k in before if k.startswith(("model.vision_model.", "model.connector."))]
    text = [k for k in before if k.startswith("model.text_model.") or k.startswith("lm_head")]
    assert vision and text
    assert all(torch.equal(before[k], after[k]) for k in vision)
    assert sum(not torch.equal(before[k], after[k]) for k in text) > len(text) // 2
    assert result.trainable_parameters == result.parameters - sum(before[k].numel() for k in vision)


@pytest.mark.slow
def test_gradient_accumulation_matches_one_big_batch(cards, tiny_llava, tmp_path):
    """4 images at once, or 2 + 2 accumulated: the same loss and gradient (averaged over all answer tokens of
    the step, not over micro-batches), so the same training."""
    from inspector.training import train

    common = dict(max_steps=3, val_fraction=0, lr=1e-2, gradient_checkpointing=False)
    train(_config(cards, tiny_llava, tmp_path / "one", batch_size=4, grad_accum=1, **common))
    train(_config(cards, tiny_llava, tmp_path / "two", batch_size=2, grad_accum=2, **common))
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    for key in ("loss", "grad_norm"):
        first = [r[key] for r in one if key in r]
        second = [r[key] for r in two if key in r]
        assert len(first) == len(second) == 3
        assert second == pytest.approx(first, rel=1e-4), key


@pytest.mark.slow
def test_time_limit_stops_evaluates_and_saves(cards, tiny_llava, tmp_path):
    from inspector.training import train

    result = train(
        _config(cards, tiny_llava, tmp_path / "timed", max_steps=500, max_minutes=1e-6, eval_samples=1)
    )
    assert result.steps == 1
    assert [Path(c).name for c in result.checkpoints] == ["checkpoint-1"]
    assert result.best_step == 1 and "eval_field_accuracy" in result.eval_metrics


# ------------------------------------------------------------------------------------------------ CLI


def test_train_cli_imports_on_its_own():
    """inspector.cli imports inspector.train_cli; importing train_cli first must not be a circular ImportError."""
    import subprocess
    import sys

    code = "import inspector.train_cli, inspector.cli; assert 'train' in inspector.cli.cli.commands"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_cli_options_map_one_to_one_to_config_fields():
    from dataclasses import fields

    from inspector.train_cli import CLI_ONLY_OPTIONS, train_command

    names = {p.name for p in train_command.params}
    assert names - set(CLI_ONLY_OPTIONS) == {f.name for f in fields(TrainConfig)}
    assert set(CLI_ONLY_OPTIONS) <= names


def test_cli_reports_bad_input_in_one_line(tmp_path):
    from inspector.train_cli import train_command

    runner = CliRunner()
    missing = tmp_path / "nope.csv"
    result = runner.invoke(
        train_command, ["--truth", str(missing), "--model", "m", "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert (
        result.stderr.splitlines()[-1]
        == f"Error: Truth CSV {missing} does not exist; check the --truth path."
    )
    assert "Traceback" not in result.output

    Image.new("RGB", (64, 64)).save(tmp_path / "x.png")
    csv_path = _write_csv(tmp_path / "truth.csv", [{"file": "other.png", "title": "T", "price": "1"}])
    result = runner.invoke(
        train_command, ["--truth", str(csv_path), "--model", "m", "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    error = result.stderr.splitlines()[-1]
    assert error.startswith(f"Error: No training examples: 1 images found under {tmp_path}, 0 matched a row")
    assert "Traceback" not in result.output

    result = runner.invoke(
        train_command, ["--truth", str(csv_path), "--model", "m", "--output", "o", "--method", "lora", "--keep-adapter",
                        "--eval-samples", "0"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert (
        result.output
        == "Error: --best-metric field_accuracy needs generated answers; set --eval-samples above 0 or use --best-metric loss\n"
    )


@pytest.mark.slow
def test_cli_trains_logs_to_offline_wandb_and_prints_the_summary(cards, tiny_llava, tmp_path, monkeypatch):
    from inspector.train_cli import train_command

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no API key, so offline
    for name in ("WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    output = tmp_path / "out [1]"  # brackets: paths are printed as they are, never read as rich markup
    args = ["--truth", str(cards), "--model", str(tiny_llava), "--output", str(output), "--max-steps", "2",
            "--eval-every", "2", "--eval-samples", "1", "--dataloader-workers", "0", "--batch-size", "2", "--lr", "1e-3",
            "--max-new-tokens", "8", "--val-fraction", "0.25", "--wandb"]  # fmt: skip
    import logging

    from transformers.utils import logging as hf_logging

    notices: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: notices.append(record.getMessage())  # transformers' own handler is not captured
    hf_logging.add_handler(handler)
    try:
        result = CliRunner().invoke(train_command, args)
    finally:
        hf_logging.remove_handler(handler)
        hf_logging.set_verbosity(hf_logging.WARNING)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Trained to step 2 (0.67 epochs) on 6 images in ")
    assert lines[1] == (
        "Data: 8 catalogue rows, 8 images found, 6 for training, 2 for validation; skipped 0 without a row, "
        "0 unreadable, 0 duplicates, 0 empty rows"
    )
    assert lines[2].startswith("Validation at step 2: loss ")
    assert lines[3].startswith("Best model (field_accuracy ") and lines[3].endswith(
        f" at step 2): {output}/best"
    )
    runs = glob.glob(glob.escape(str(output / "wandb")) + "/offline-run-*")
    assert len(runs) == 1
    assert lines[4:] == [
        f"Final model: {output}/final",
        f"Metrics: {output}/metrics.jsonl",
        f"wandb run: {runs[0]} (offline runs upload with `wandb sync {runs[0]}`)",
        f"Check it: inspector scan IMAGES --truth CSV --model {output}/best",
    ]
    # Issue 20.8: by default no settings dump and none of transformers' notices; they are for --verbose
    assert "training config:" not in result.stderr and "method = 'full'" not in result.stderr
    assert f"training {tiny_llava} (full) into {output}; every setting is saved" in " ".join(result.stderr.split())
    assert notices == []  # e.g. "The tokenizer has new PAD/BOS/EOS tokens ..." (shown with --verbose)
    run = glob.escape(runs[0])
    assert glob.glob(f"{run}/run-*.wandb")
    assert glob.glob(f"{run}/files/media/table/**/*.table.json", recursive=True), "predictions table logged"


@pytest.mark.parametrize("enabled", [True, False])
def test_activation_checkpointing_reaches_training_arguments_under_the_installed_releases_names(
    tmp_path, enabled
):
    """transformers 5.23 renamed gradient_checkpointing(_kwargs) to activation_checkpointing(_kwargs): the setting
    arrives, and no deprecated alias is used, on every release in the range."""
    import warnings

    from transformers import TrainingArguments

    from inspector.training.arguments import checkpointing_arguments

    chosen = checkpointing_arguments(enabled)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, **chosen)
    assert [str(w.message) for w in caught if "checkpointing" in str(w.message)] == []
    (flag, value), (kwargs_name, kwargs) = chosen.items()
    assert bool(getattr(args, flag)) is enabled and value is enabled
    assert getattr(args, kwargs_name) == ({"use_reentrant": False} if enabled else None) == kwargs
