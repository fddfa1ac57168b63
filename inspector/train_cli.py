"""`inspector train`: the command line over `inspector.training`. Options map one to one to TrainConfig fields,
in their order: a train-only option is built from its field's declaration, the others are shared with scan.

The lead attaches it with ``cli.add_command(train_command)``.
"""

from __future__ import annotations

import math

import click
from rich.console import Console

from inspector.console import friendly_errors, progress_bar
from inspector.options import (
    catalogue_options,
    config_option,
    model_option,
    num_crops_option,
    options_from,
    question_options,
    scoring_options,
    trust_remote_code_option,
)
from inspector.registry import model_help
from inspector.training.config import TrainConfig

#: TrainConfig's defaults, the defaults of the options train shares with scan (a train-only option's default is
#: its field's, declared with its help in TrainConfig).
_DEFAULTS = vars(TrainConfig())
#: TrainConfig settings that no option sets, and why. Every other field is an option: declared on the field
#: (`settings.setting`) or one of the options shared with scan (`options.options_from` refuses anything else).
SETTINGS_WITHOUT_OPTION: dict[str, str] = {}
#: The options train shares with scan (`inspector.options`), each filling the TrainConfig fields of its options'
#: names; the command passes the help where the two commands differ.
SHARED_OPTIONS = (
    catalogue_options(
        truth_help="Catalogue CSV with the right answers.",
        truth_columns_help='Map fields to CSV columns, as for scan: brand=Brand,title="Product Name".',
    ),
    model_option(help=f"Hugging Face model id, local folder, or {model_help()}, to fine-tune."),
    trust_remote_code_option,
    question_options(
        prompt_help="Built-in prompt: extract (default, JSON answers) or original.",
        sizes_help="Also ask for (and teach) the prices in these sizes, e.g. 6.5,7.5,8",
        fields_help="TOML file declaring more fields to teach and evaluate (colour, material, ...), see "
        "docs/fields.md.",
    ),
    num_crops_option,
    scoring_options(_DEFAULTS, title_help="Token F1 from which a title counts as correct, as in scan."),
)
#: Options that are not TrainConfig fields: a file of option defaults, how much to print, and old spellings kept
#: for one release.
CLI_ONLY_OPTIONS = ("config", "verbose", "deprecated_workers", "deprecated_run_name")
_FIELD_LABELS = {"size_price": "size prices"}


class RichTrainProgress:
    """Progress bar (steps, loss, learning rate, ETA) on stderr when it is a terminal; evaluation lines always."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = progress_bar(console, "training", "loss {task.fields[loss]}", "lr {task.fields[lr]}")
        self.task = None

    def __enter__(self) -> RichTrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start(self, total_steps: int, first_step: int) -> None:
        self.task = self.progress.add_task("train", total=total_steps, completed=first_step, loss="-", lr="-")
        if first_step:
            self.message(f"resuming at step {first_step} of {total_steps}")

    def advance(self, step: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=step)

    def log(self, step: int, figures: dict) -> None:
        if self.task is not None and "loss" in figures:
            self.progress.update(
                self.task, loss=f"{figures['loss']:.4f}", lr=f"{figures.get('learning_rate', 0.0):.2e}"
            )
        if "eval_field_accuracy" in figures:
            self.message(f"step {step}: {_accuracy_line(figures)}")
        elif "eval_loss" in figures:
            self.message(f"step {step}: validation loss {figures['eval_loss']:.4f}")

    def message(self, text: str) -> None:
        self.console.print(text, style="dim", markup=False, highlight=False)


def _measured(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _pct(value: float | None) -> str:
    return f"{100 * value:.1f}%" if _measured(value) else "-"


def _accuracy_line(figures: dict) -> str:
    """Field accuracies that were measured (a NaN means there was nothing to compare, e.g. no size prices)."""
    parts = [f"field accuracy {_pct(figures.get('eval_field_accuracy'))}"]
    for key, value in figures.items():  # every scored field, in the order the evaluation logged them
        name = key.removeprefix("eval_").removesuffix("_accuracy")
        if key.startswith("eval_") and key.endswith("_accuracy") and name != "field" and _measured(value):
            parts.append(f"{_FIELD_LABELS.get(name, name)} {_pct(value)}")
    if _measured(figures.get("eval_price_mae")):
        parts.append(f"price MAE {figures['eval_price_mae']:.2f}")
    return ", ".join(parts)


def _float_or_none(value: float | None) -> str:
    return f"{value:.4f}" if _measured(value) else "-"


def print_summary(result, console: Console) -> None:
    """The end-of-run summary: what was trained, how it scored, where the models are."""
    data = result.data
    rate = f"{result.samples_per_second:.2f} samples/s" if result.samples_per_second else "- samples/s"
    resumed = f" (resumed at step {result.first_step})" if result.first_step else ""
    console.print(
        f"Trained to step {result.steps}{resumed} ({result.epochs:.2f} epochs) on {data.train_examples} images in "
        f"{result.train_seconds:.1f} s ({rate}); mean training loss {_float_or_none(result.train_loss)}"
    )
    print_data(data, console)
    figures = result.eval_metrics
    if figures:
        line = f"Validation at step {result.steps}: loss {_float_or_none(figures.get('eval_loss'))}"
        if "eval_field_accuracy" in figures:
            line += f"; {_accuracy_line(figures)}"
        console.print(line)
    if result.best_dir:
        console.print(
            f"Best model ({result.best_metric} {_float_or_none(result.best_value)} at step {result.best_step}): "
            f"{result.best_dir}"
        )
    console.print(f"Final model: {result.final_dir}")
    console.print(f"Metrics: {result.metrics_file}")
    if result.wandb_run:
        console.print(
            f"wandb run: {result.wandb_run} (offline runs upload with `wandb sync {result.wandb_run}`)"
        )
    console.print(
        f"Check it: inspector scan IMAGES --truth CSV --model {result.best_dir or result.final_dir}"
    )


def _renamed(value, old: str, new: str, why: str):
    """An option's old spelling, kept for one release: it still works, with a warning."""
    if value is not None:
        click.echo(
            f"Warning: train's {old} is now {new} ({why}); {old} goes away in the next release.", err=True
        )
    return value


def _quiet_transformers(verbose: bool) -> None:
    """transformers' notices (the tokenizer's PAD/BOS/EOS aligned with the model config, `use_cache` turned off
    for gradient checkpointing, ...) are for --verbose: by default only its errors are shown. Its per-file
    loading and saving bars never are (ours counts the steps), as in scan."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity(hf_logging.WARNING if verbose else hf_logging.ERROR)
    hf_logging.disable_progress_bar()


def print_data(data, console: Console) -> None:
    """What the examples came from and what was skipped (every skipped image counted, missing ones listed)."""
    bad_rows = f", {data.bad_rows} with unreadable catalogue cells" if data.bad_rows else ""
    if data.malformed_rows:
        bad_rows += f", {data.malformed_rows} malformed catalogue rows"
    console.print(
        f"Data: {data.rows} catalogue rows, {data.images_found} images found, {data.train_examples} for training, "
        f"{data.val_examples} for validation; skipped {data.unmatched_images} without a row, "
        f"{data.unreadable_images} unreadable, {data.duplicate_images} duplicates, {data.empty_rows} empty rows"
        f"{bad_rows}"
    )
    reviews = data.reviews
    if reviews is None:
        return
    decisions = ", ".join(f"{count} {name}" for name, count in reviews.decisions.items())
    untaught = f", {reviews.untaught_decisions} on fields not taught" if reviews.untaught_decisions else ""
    runs = f"{len(reviews.runs)} run{'' if len(reviews.runs) == 1 else 's'}"
    console.print(
        f"Reviews: {runs} ({'; '.join(reviews.runs)}), {reviews.images} images; decisions applied: "
        f"{decisions}{untaught}; {reviews.corrections} corrected values taught, {reviews.unconfirmed_fields} "
        f"unconfirmed fields left out ({reviews.unreadable_corrections} with an unreadable correction)"
        + (f", {reviews.unreviewed_fields} unreviewed fields left out" if reviews.unreviewed_fields else "")
        + (f", {reviews.unreadable_cells} unreadable catalogue cells left out" if reviews.unreadable_cells else "")
    )
    console.print(
        f"Review images: {reviews.moved_images} moved (found by sha256); skipped {reviews.missing_images} not found, "
        f"{reviews.without_catalogue_row} without a catalogue row, {reviews.nothing_to_teach} with nothing to teach"
    )
    for location, why in reviews.missing.items():
        console.print(f"  skipped {location}: {why}")
    hidden = reviews.missing_images - len(reviews.missing)
    if hidden > 0:
        console.print(f"  ... and {hidden} more (data_summary.json lists the first ones)")


@click.command("train")
@config_option
@options_from(TrainConfig, shared=SHARED_OPTIONS, not_options=SETTINGS_WITHOUT_OPTION)
@click.option(
    "--workers",
    "deprecated_workers",
    type=click.IntRange(0),
    hidden=True,
    callback=lambda ctx, param, value: _renamed(
        value, "--workers", "--dataloader-workers", "scan's --workers counts threads"
    ),
    help="Renamed --dataloader-workers.",
)
@click.option(
    "--run-name",
    "deprecated_run_name",
    hidden=True,
    callback=lambda ctx, param, value: _renamed(
        value, "--run-name", "--wandb-name", "scan's --run-name names a database run"
    ),
    help="Renamed --wandb-name.",
)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Also print every setting and transformers' own warnings (the settings are saved with each model).",
)
def train_command(verbose=False, **options):
    """Fine-tune a vision-language model on your product images and catalogue CSV.

    Images are matched to catalogue rows exactly as `inspector scan --truth` does. The model learns to give
    the answer that scan's prompt asks for; every --eval-every steps it answers validation images with
    generate() and is scored like a scan. The best model is saved to OUTPUT/best, ready for
    `inspector scan --model OUTPUT/best`.
    """
    with friendly_errors():
        for old, new in (("deprecated_workers", "workers"), ("deprecated_run_name", "run_name")):
            value = options.pop(old)
            if value is not None:  # the old spelling, kept for one release (`_renamed` warned)
                options[new] = value
        options = {key: value for key, value in options.items() if value is not None}  # None: the default
        config = TrainConfig(**options)  # it reads --truth-columns once its fields are known
        config.validate()
        if config.write_dataset is not None:
            from inspector.training.data import load_training_data, write_dataset

            data = load_training_data(config, workers=max(1, config.workers) * 2)
            count = write_dataset(data, config.write_dataset)
            console = Console(highlight=False, soft_wrap=True, markup=False)
            print_data(data.summary, console)
            console.print(
                f"Wrote {count} examples ({len(data.train)} for training, {len(data.val)} for validation) to "
                f"{config.write_dataset}; nothing trained"
            )
            return data
        from inspector.backends import check_model_reference

        check_model_reference(config.model)

        from inspector.training import train

        console = Console(stderr=True, highlight=False, soft_wrap=True)
        _quiet_transformers(verbose)
        if verbose:
            console.print(f"training config:\n{config.describe()}", style="dim", markup=False)
        else:
            console.print(
                f"training {config.model} ({config.method}) into {config.output}; every setting is saved in "
                "train_config.json with each model (--verbose prints them here)",
                style="dim",
                markup=False,
            )
        with RichTrainProgress(console) as progress:
            result = train(config, progress)
        print_summary(result, Console(highlight=False, soft_wrap=True, markup=False))
        return result


__all__ = ["RichTrainProgress", "print_summary", "train_command"]
