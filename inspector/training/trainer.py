"""`train(config)`: fine-tune a VLM on catalogue images with transformers' Trainer, evaluated by generation.

Output folder layout:

- ``checkpoint-N/``: Trainer checkpoints (model, processor, optimizer, scheduler, RNG, train_config.json) for
  ``resume``; the best one and the newest ``save_total_limit`` are kept;
- ``best/``: the model with the best ``best_metric`` so far (LoRA merged unless keep_adapter), its processor,
  tokenizer and chat template, train_config.json and eval_metrics.json: ``inspector scan --model OUTPUT/best``;
- ``final/``: the same for the model at the end of training;
- ``metrics.jsonl``: every logged figure; ``eval_predictions.jsonl``: every generated validation answer;
  ``train_config.json``; ``data_summary.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from inspector.errors import InputError
from inspector.registry import resolve_model
from inspector.scoring import PriceTolerance
from inspector.training.arguments import training_arguments
from inspector.training.callbacks import (
    METRICS_FILE,
    MetricsFileCallback,
    ProgressCallback,
    SaveConfigCallback,
    TrainProgress,
    WandbConfigCallback,
)
from inspector.training.collator import TrainingCollator
from inspector.training.config import TrainConfig
from inspector.training.data import DataSummary, ExampleDataset, TrainingData, load_training_data
from inspector.training.evaluation import EvaluationOutcome, GenerationEvaluator
from inspector.training.methods import (
    apply_lora,
    count_parameters,
    estimate_parameters,
    freeze_vision,
    is_peft_model,
    load_model,
    resolve_precision,
    save_model,
)

#: Every generated validation answer, one JSON line each, with its step.
PREDICTIONS_FILE = "eval_predictions.jsonl"
#: Validation images shown in the wandb table at each evaluation.
WANDB_TABLE_ROWS = 16


@dataclass
class TrainResult:
    """What a run produced."""

    output_dir: str
    #: Model with the best `best_metric` (None when there was no evaluation).
    best_dir: str | None
    #: Model at the end of training.
    final_dir: str
    best_metric: str
    best_value: float | None
    best_step: int | None
    steps: int
    #: Step this session started at (0, or the checkpoint's step when resumed).
    first_step: int
    epochs: float
    #: Mean training loss over the run (this session when resumed).
    train_loss: float | None
    train_seconds: float
    #: Training samples per second of training time (evaluation time left out).
    samples_per_second: float | None
    #: The last evaluation's figures ("eval_" keys), empty when there was none.
    eval_metrics: dict[str, float]
    data: DataSummary
    precision: str
    parameters: int
    trainable_parameters: int
    metrics_file: str
    checkpoints: list[str] = field(default_factory=list)
    #: The wandb run's local folder (sync an offline run with `wandb sync FOLDER`).
    wandb_run: str | None = None


def _find_resume_checkpoint(config: TrainConfig, output: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    existing = get_last_checkpoint(str(output)) if output.is_dir() else None
    if config.resume is None:
        if existing:
            raise InputError(
                f"{output} already holds checkpoints ({Path(existing).name}); pass --resume to continue that run "
                "or choose another --output"
            )
        return None
    if config.resume == "latest":
        if not existing:
            raise InputError(f"--resume: no checkpoint-N folder in {output} to resume from")
        return existing
    path = Path(config.resume)
    if not (path / "trainer_state.json").is_file():
        raise InputError(f"--resume {path}: not a checkpoint folder (it has no trainer_state.json)")
    return str(path)


def _wandb_setup(config: TrainConfig, output: Path) -> None:
    """wandb through the Trainer's integration; offline when no API key is configured."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise InputError(
            "--wandb needs the wandb package: pip install 'inspector[train]' (or pip install wandb)"
        ) from None
    # Imported before WANDB_MODE is set: on import it prints "Running in WANDB offline mode" to stdout.
    import transformers.integrations.integration_utils  # noqa: F401

    os.environ.setdefault("WANDB_PROJECT", config.wandb_project)
    os.environ.setdefault("WANDB_DIR", str(output))
    os.environ.setdefault("WANDB_SILENT", "true")  # the library does not print; the CLI says where the run is
    if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ and not _netrc_has_wandb():
        os.environ["WANDB_MODE"] = "offline"


def _netrc_has_wandb() -> bool:
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _make_trainer_class():
    from transformers import Trainer

    class InspectorTrainer(Trainer):
        """Trainer whose evaluation adds generated-answer metrics and exports the best model."""

        def __init__(
            self,
            *args,
            generation_eval=None,
            exporter=None,
            wandb_table=False,
            predictions_file=None,
            **kwargs,
        ):
            super().__init__(*args, **kwargs)
            self.predictions_file = predictions_file
            self.generation_eval = generation_eval
            self.exporter = exporter
            self.wandb_table = wandb_table
            self.last_eval: dict[str, float] = {}
            self._log_time: float | None = None
            self._log_step = 0
            self._eval_seconds = 0.0  # evaluation time since the last loss log, left out of samples/s
            self.eval_seconds_total = 0.0
            self.first_step = 0  # global step when training (re)started

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            eval_started = time.perf_counter()
            try:
                return self._evaluate_all(eval_dataset, ignore_keys, metric_key_prefix)
            finally:
                self._eval_seconds += time.perf_counter() - eval_started
                self.eval_seconds_total += time.perf_counter() - eval_started

        def _evaluate_all(self, eval_dataset, ignore_keys, metric_key_prefix):
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            if self.generation_eval is not None and metric_key_prefix == "eval":
                started = time.perf_counter()
                with self.accelerator.autocast():
                    outcome = self.generation_eval.run(self.model)
                generated = dict(outcome.metrics)
                generated["eval_generation_seconds"] = round(time.perf_counter() - started, 3)
                self.log(dict(generated))
                metrics.update(generated)
                if self.predictions_file is not None and self.is_world_process_zero():
                    _append_predictions(self.predictions_file, outcome, self.state.global_step)
                if self.wandb_table:
                    _log_wandb_table(outcome, self.state.global_step)
            self.last_eval = {k: v for k, v in metrics.items() if k.startswith("eval_")}
            if self.exporter is not None and metric_key_prefix == "eval":
                self.exporter.consider(self.model, metrics, self.state)
            return metrics

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            """Resume full-weight checkpoints through `from_pretrained`, which renames saved keys to the model's
            (transformers 5.17's Trainer loads them raw, so models with a checkpoint conversion mapping, e.g.
            LLaVA, silently kept their initial weights: huggingface/transformers#43701)."""
            model = model if model is not None else self.model
            folder = Path(resume_from_checkpoint)
            weights = ("model.safetensors", "model.safetensors.index.json")
            full = (folder / "config.json").is_file() and any((folder / name).is_file() for name in weights)
            if is_peft_model(model) or not full:
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            module = getattr(model, "module", model)
            parameter = next(module.parameters())
            loaded = type(module).from_pretrained(folder, dtype=parameter.dtype)
            module.load_state_dict(loaded.state_dict(), strict=True)
            return None

        def log(self, logs, start_time=None):
            if "loss" in logs:
                now = time.perf_counter()
                if self._log_time is not None and self.state.global_step > self._log_step:
                    steps = self.state.global_step - self._log_step
                    samples = steps * self.args.train_batch_size * self.args.gradient_accumulation_steps
                    seconds = now - self._log_time - self._eval_seconds
                    logs["samples_per_second"] = round(samples / max(seconds, 1e-9), 3)
                self._log_time, self._log_step, self._eval_seconds = now, self.state.global_step, 0.0
            super().log(logs, start_time)

    return InspectorTrainer


def _append_predictions(path: Path, outcome: EvaluationOutcome, step: int) -> None:
    """One line per generated validation answer: step, image, target answer, model answer, field outcomes."""
    with path.open("a", encoding="utf-8") as handle:
        for record in outcome.records:
            line = {
                "step": step,
                "image": record.example.location,
                "target": record.example.answer,
                "prediction": record.answer,
                "outcomes": {result.field: result.outcome for result in record.results},
            }
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")


def _log_wandb_table(outcome: EvaluationOutcome, step: int) -> None:
    import wandb

    if wandb.run is None:
        return
    from inspector.discovery import ImageSource, read_source
    from inspector.images import decode_image

    table = wandb.Table(columns=["image", "truth", "prediction"])
    for record in outcome.records[:WANDB_TABLE_ROWS]:
        example = record.example
        image = decode_image(read_source(ImageSource(example.location, path=example.path))).image
        image.thumbnail((336, 336))
        table.add_data(wandb.Image(image), example.answer, record.answer)
    # No `step=`: the Trainer's WandbCallback logs without one (its x axis is train/global_step), so wandb's own
    # step is past the global step and wandb would drop a row logged at step=global_step.
    wandb.log({"eval/predictions": table, "train/global_step": step})


class BestExporter:
    """Saves the model to OUTPUT/best whenever an evaluation beats the best so far."""

    def __init__(self, folder: Path, processor, config: TrainConfig, resume: bool = False) -> None:
        self.folder = folder
        self.processor = processor
        self.config = config
        self.metric = config.best_metric_key
        self.best: float | None = None
        self.best_step: int | None = None
        #: The validation loss of the best evaluation: it breaks ties of the metric.
        self.best_loss: float | None = None
        saved = folder / "eval_metrics.json"
        if resume and saved.is_file():  # continue to compare with the best model on disk
            figures = json.loads(saved.read_text())
            if figures.get(self.metric) is not None:
                self.best, self.best_step = float(figures[self.metric]), figures.get("step")
                loss = figures.get("eval_loss")
                self.best_loss = float(loss) if loss is not None else None

    def is_better(self, value: float, loss: float | None = None) -> bool:
        """Whether an evaluation with this metric `value` (and validation `loss`) beats the best so far. A tie
        (field accuracy 0.0 at two evaluations while the loss still falls) goes to the lower loss, and with no
        loss to compare, to the later evaluation: the first one is not better for coming first."""
        if math.isnan(value):  # nothing measured (e.g. no price given yet): never the best
            return False
        if self.best is None:
            return True
        if value == self.best:
            measured = loss is not None and math.isfinite(loss) and self.best_loss is not None
            return loss <= self.best_loss if measured else True
        return value > self.best if self.config.greater_is_better else value < self.best

    def consider(self, model, metrics: dict, state) -> None:
        value = metrics.get(self.metric)
        if value is None:
            raise InputError(
                f"--best-metric {self.config.best_metric}: no such evaluation figure; available: "
                + ", ".join(sorted(k.removeprefix("eval_") for k in metrics if k.startswith("eval_")))
            )
        loss = metrics.get("eval_loss")
        loss = float(loss) if isinstance(loss, (int, float)) else None
        if not self.is_better(float(value), loss):
            return
        self.best, self.best_step, self.best_loss = float(value), state.global_step, loss
        export(model, self.processor, self.folder, self.config, metrics, state.global_step)


def export(model, processor, folder: Path, config: TrainConfig, metrics: dict, step: int) -> None:
    """A self-contained model folder: weights, config, processor, tokenizer, chat template, train_config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, folder, keep_adapter=config.keep_adapter)
    processor.save_pretrained(folder)
    config.save(folder)
    figures = {
        key: value if math.isfinite(value) else None
        for key, value in metrics.items()
        if isinstance(value, (int, float))
    }
    (folder / "eval_metrics.json").write_text(json.dumps({"step": step, **figures}, indent=2) + "\n")


def resolve_run_precision(config: TrainConfig) -> tuple[str, str, bool]:
    """(precision name, weights dtype name, bf16 autocast) for this run on this machine."""
    import torch

    if config.precision == "auto" and torch.cuda.is_available() and config.method != "lora":
        total, trainable = estimate_parameters(resolve_model(config.model), config.method, config.backend_options())
        dtype, bf16 = resolve_precision("auto", config.method, total, trainable)
    else:
        dtype, bf16 = resolve_precision(config.precision, config.method, 0, 0)
    name = {("bfloat16", True): "bf16", ("float32", True): "mixed"}.get((dtype, bf16), "fp32")
    return name, dtype, bf16


def apply_method(model, config: TrainConfig):
    """Freeze the vision part or wrap in LoRA adapters as `config.method` says; returns the model to train."""
    if config.method == "frozen-vision":
        freeze_vision(model)
    elif config.method == "lora":
        model = apply_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_targets)
    return model


class _FirstStepCallback(TrainerCallback):
    """Notes the step training (re)starts at, on the trainer, for a samples/s of this session only."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.first_step = state.global_step


class TimeLimitCallback(TrainerCallback):
    """Stops training after `minutes` of wall time, evaluating and saving at the step where it stops."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60
        self.started: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.started is not None and time.perf_counter() - self.started >= self.seconds:
            control.should_training_stop = True
            control.should_evaluate = args.eval_strategy != "no"
            control.should_save = args.save_strategy != "no"
        return control


def build_trainer(
    config: TrainConfig,
    data: TrainingData,
    model,
    processor,
    *,
    bf16: bool,
    progress: TrainProgress | None = None,
    resume: bool = False,
    save: bool = True,
):
    """The Trainer for `model` (already prepared by `apply_method`) on `data`, with inspector's evaluation,
    callbacks and files. `save=False` writes no checkpoints (benchmarks)."""
    import torch
    from transformers import PrinterCallback, TrainingArguments
    from transformers.trainer_callback import ProgressCallback as TqdmCallback

    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    has_val = bool(data.val)
    generation_eval = None
    if has_val and config.eval_samples > 0:
        generation_eval = GenerationEvaluator(
            processor,
            data.prompt.text,
            data.val[: config.eval_samples],
            data.scored_fields,
            max_new_tokens=config.max_new_tokens,
            batch_size=config.batch_size,
            num_crops=config.num_crops,
            tolerance=PriceTolerance.parse(config.price_tolerance),
            title_threshold=config.title_threshold,
            fieldset=data.fields,
        )
    if config.wandb:
        _wandb_setup(config, output)

    args = TrainingArguments(
        **training_arguments(config, cuda=torch.cuda.is_available(), bf16=bf16, has_val=has_val, save=save)
    )
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    collator = TrainingCollator(processor, data.prompt.text, num_crops=config.num_crops, dtype=dtype)
    exporter = BestExporter(output / "best", processor, config, resume=resume) if has_val and save else None
    callbacks: list = [MetricsFileCallback(output / METRICS_FILE)]
    if save:
        callbacks.append(SaveConfigCallback(config))
    if config.max_minutes > 0:
        callbacks.append(TimeLimitCallback(config.max_minutes))
    if progress is not None:
        callbacks.append(ProgressCallback(progress))
    if config.wandb:
        callbacks.append(WandbConfigCallback(config, data.summary.to_dict()))
    trainer = _make_trainer_class()(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=ExampleDataset(data.train),
        eval_dataset=ExampleDataset(data.val) if has_val else None,
        processing_class=processor,
        callbacks=callbacks,
        generation_eval=generation_eval,
        exporter=exporter,
        wandb_table=config.wandb,
        predictions_file=output / PREDICTIONS_FILE,
    )
    for callback in (PrinterCallback, TqdmCallback):
        trainer.remove_callback(callback)
    trainer.add_callback(_FirstStepCallback(trainer))
    return trainer


def train(config: TrainConfig, progress: TrainProgress | None = None) -> TrainResult:
    """Fine-tune `config.model` on `config.truth` + images; see the module docstring for what is written."""
    import torch

    config.validate()
    output = Path(config.output)
    resume_from = _find_resume_checkpoint(config, output)
    output.mkdir(parents=True, exist_ok=True)

    data: TrainingData = load_training_data(config, workers=max(1, config.workers) * 2)
    if progress is not None:
        for warning in data.summary.column_warnings:
            progress.message(f"warning: {warning}")
        progress.message(
            f"{data.summary.train_examples} training and {data.summary.val_examples} validation images "
            f"({data.summary.unmatched_images} without a catalogue row, {data.summary.unreadable_images} "
            f"unreadable, {data.summary.duplicate_images} duplicates, {data.summary.bad_rows} with unreadable catalogue "
            "cells skipped)"
        )
    precision, dtype, bf16 = resolve_run_precision(config)

    torch.manual_seed(config.seed)
    # An absolute path, so that a LoRA adapter saved with keep_adapter finds its base model from any folder.
    source = resolve_model(config.model)
    local = Path(source).expanduser()
    model, processor = load_model(str(local.resolve()) if local.exists() else source, config.backend_options(dtype))
    model = apply_method(model, config)
    total_params, trainable_params = count_parameters(model)

    config.save(output)
    (output / "data_summary.json").write_text(json.dumps(data.summary.to_dict(), indent=2) + "\n")
    trainer = build_trainer(
        config, data, model, processor, bf16=bf16, progress=progress, resume=resume_from is not None
    )
    started = time.perf_counter()
    with torch.enable_grad():  # a backend loaded earlier in this process may have switched grad off globally
        output_info = trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - started
    # The Trainer's own train_samples_per_second assumes max_steps were all run; count the steps done instead.
    samples = (trainer.state.global_step - trainer.first_step) * config.batch_size * config.grad_accum
    step_seconds = train_seconds - trainer.eval_seconds_total

    final_dir = output / "final"
    export(trainer.model, processor, final_dir, config, trainer.last_eval, trainer.state.global_step)
    wandb_run = None
    if config.wandb:
        import wandb

        if wandb.run is not None:
            wandb_run = str(Path(wandb.run.dir).parent)
            wandb.finish()

    checkpoints = sorted(
        (str(p) for p in output.glob("checkpoint-*") if p.is_dir()), key=lambda p: int(p.rsplit("-", 1)[-1])
    )
    exporter = trainer.exporter
    best_dir = output / "best"
    return TrainResult(
        output_dir=str(output),
        best_dir=str(best_dir) if exporter is not None and best_dir.is_dir() else None,
        final_dir=str(final_dir),
        best_metric=config.best_metric,
        best_value=exporter.best if exporter else None,
        best_step=exporter.best_step if exporter else None,
        steps=trainer.state.global_step,
        first_step=trainer.first_step,
        epochs=float(trainer.state.epoch or 0.0),
        train_loss=output_info.training_loss,
        train_seconds=train_seconds,
        samples_per_second=samples / step_seconds if samples and step_seconds > 0 else None,
        eval_metrics=dict(trainer.last_eval),
        data=data.summary,
        precision=precision,
        parameters=total_params,
        trainable_parameters=trainable_params,
        metrics_file=str(output / METRICS_FILE),
        checkpoints=checkpoints,
        wandb_run=wandb_run,
    )
