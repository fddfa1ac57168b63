"""The `inspector` command line: a thin layer over the library. Each command's docstring is its help."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from inspector import __version__
from inspector.console import RichScanProgress, friendly_errors, stderr_console, stdout_console, stoppable
from inspector.options import (
    SCAN_DEFAULTS,
    catalogue_options,
    config_option,
    db_option,
    model_option,
    num_crops_option,
    options_from,
    question_options,
    scoring_options,
    trust_remote_code_option,
)
from inspector.registry import model_help
from inspector.scan_config import ScanConfig
from inspector.train_cli import train_command

#: ScanConfig settings that no option sets, and why. Every other field is an option: declared on the field
#: (`settings.setting`) or one of the shared options (`options.options_from` refuses anything else).
SCAN_SETTINGS_WITHOUT_OPTION: dict[str, str] = {
    "inputs": "the PATHS argument",
    "shard": "set for each process of a multi-GPU or Ray scan (--gpus, --ray)",
}
#: The options scan shares with train (and --db with every command that reads the results), each filling the
#: ScanConfig fields of its options' names; the command passes the help where the commands differ.
SCAN_SHARED_OPTIONS = (
    catalogue_options(
        truth_help="Ground-truth catalogue CSV to score answers against.",
        truth_columns_help='Map fields to CSV columns: brand=Brand,title="Product Name",price=Cost (others '
        "auto-detected).",
    ),
    model_option(
        default=None,
        help=f"Hugging Face model id, local folder, or {model_help()}.  [default: Phi-3.5-vision]",
    ),
    db_option,
    question_options(
        prompt_help="Built-in prompt: extract (default, JSON) or original.",
        sizes_help="Also ask for the prices in these sizes, e.g. 6.5,7.5,8",
        fields_help="TOML file declaring more fields to read (colour, material, volume, ...), see "
        "docs/fields.md.",
    ),
    num_crops_option,
    scoring_options(
        SCAN_DEFAULTS,
        title_help="Token F1 between answer and catalogue title from which the title counts as correct.",
    ),
    trust_remote_code_option,
)
#: scan's own options, which are no ScanConfig field, each listed in `--help` after the setting named.
SCAN_OPTIONS_AFTER = {
    "report": click.option("--no-report", is_flag=True, help="Do not write an HTML report."),
    "workers": click.option(
        "--gpus", help="Use several GPUs: 'all' or a number (one process per GPU, one run)."
    ),
    "trust_remote_code": click.option(
        "--ray",
        "ray_address",
        is_flag=False,
        flag_value="local",
        metavar="[ADDRESS]",
        help="Scan on a Ray cluster: alone, start or join one on this machine; 'auto' (RAY_ADDRESS) or "
        "HOST:PORT to join one. A path typed after it is scanned, not taken for an address. Needs pip "
        "install 'inspector[ray]'.",
    ),
}


def _quiet_transformers() -> None:
    """Our progress bar is the one that counts: hide transformers' per-file loading and saving bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="inspector")
def cli() -> None:
    """Check product images with a vision-language model and compare the answers with your catalogue."""


@cli.command()
@click.argument("paths", nargs=-1)
@config_option
@options_from(
    ScanConfig, shared=SCAN_SHARED_OPTIONS, not_options=SCAN_SETTINGS_WITHOUT_OPTION, after=SCAN_OPTIONS_AFTER
)
def scan(paths, model, report, no_report, truth_columns, gpus, ray_address, **options):
    """Scan product images (folders, files or URLs) with a vision-language model.

    Answers are parsed into brand, title, category, price, currency and per-size prices, plus any field
    declared in a --fields file (e.g. colour, material, volume), stored in the database, scored against --truth
    when given, and summarised in an HTML report. Rerunning the same command resumes the same run and skips
    images already stored.
    """
    paths, ray_address = _ray_value_or_path(paths, ray_address)
    with stoppable(), friendly_errors():
        from inspector.scan import DEFAULT_MODEL, ask_as_trained
        from inspector.truth import parse_column_mapping

        # every other option is the ScanConfig setting of its name; these are typed otherwise on the command line
        config = ScanConfig(
            inputs=list(paths),
            model=model or DEFAULT_MODEL,
            report=None if no_report else report,
            **options,
        )
        config, adopted = ask_as_trained(config)  # a model inspector trained is asked its own question
        if adopted is not None:
            click.echo(
                f"Asking {config.model} the question it was trained on: {adopted.options()} (fields: "
                f"{', '.join(config.fieldset().names)}); options you give win",
                err=True,
            )
        if truth_columns is not None:  # after the fields are known: a custom field's column may be mapped
            config = config.derive(truth_columns=parse_column_mapping(truth_columns, config.fieldset()))
        if ray_address:
            summary = _run_ray_scan(config, ray_address, gpus)
        elif gpus:
            summary = _run_gpu_scan(config, gpus)
        else:
            summary = _run_scan(config)
        _print_scan_summary(config, summary)


def _ray_value_or_path(paths: tuple[str, ...], ray_address: str | None) -> tuple[tuple[str, ...], str | None]:
    """`--ray ./images`: click reads the path as --ray's value. A value that is no Ray address is a path to scan
    (and --ray stands alone); PATHS are required once that is settled."""
    if ray_address not in (None, "local"):
        from inspector.ray_scan import is_address

        if not is_address(ray_address):
            paths, ray_address = (*paths, ray_address), "local"
    if not paths:
        raise click.UsageError("Missing argument 'PATHS...': the folders, files or URLs to scan.")
    return paths, ray_address


def _run_scan(config):
    from inspector.backends import choose_backend
    from inspector.scan import Scanner, with_report_and_metrics
    from inspector.store import open_store

    console = stderr_console()
    # Everything about the inputs is checked before the (slow) model load.
    inputs = _check_scan_inputs(config)
    store = open_store(config.db)
    console.print(f"[dim]inspector {__version__} · scan config: {_config_line(config)}")
    console.print(f"[dim]loading {config.model} …")
    if choose_backend(config.model).runs_model:
        _quiet_transformers()
    backend = config.load_backend()
    with RichScanProgress(console) as progress:
        summary = Scanner(config, backend, store, progress, inputs=inputs).run()
    return with_report_and_metrics(config, store, summary)


def _run_gpu_scan(config, gpus: str):
    from inspector.multigpu import scan_on_gpus
    from inspector.scan import with_report_and_metrics
    from inspector.store import open_store

    _check_scan_inputs(config)  # in this process: a bad input is one error, not one traceback per shard
    store = open_store(config.db)
    with RichScanProgress(stderr_console()) as progress:
        summary = scan_on_gpus(config, gpus, progress, store)
    return with_report_and_metrics(config, store, summary)


def _run_ray_scan(config, address: str, gpus: str | None):
    from inspector.ray_scan import import_ray, parse_address, scan_on_ray
    from inspector.scan import with_report_and_metrics
    from inspector.store import open_store

    address = parse_address(address)
    import_ray()  # a missing extra is one line before anything is read
    console = stderr_console()
    inputs = _check_scan_inputs(config)
    store = open_store(config.db)
    console.print(f"[dim]inspector {__version__} · scan config: {_config_line(config)}")
    from inspector.ray_scan import ray_log_file

    console.print(f"[dim]on Ray ({address or 'local'}) … (Ray's log lines: {ray_log_file()})", markup=True)
    with RichScanProgress(console) as progress:
        summary = scan_on_ray(config, address, gpus=gpus, inputs=inputs, progress=progress, store=store)
    return with_report_and_metrics(config, store, summary)


def _check_scan_inputs(config):
    """The scan's inputs and output paths, read and checked (see `read_scan_inputs`)."""
    from inspector.scan import read_scan_inputs
    from inspector.speedups import check_extras

    check_extras(config.fuse, config.quantize)
    inputs = read_scan_inputs(config)
    for warning in inputs.warnings:  # one line each, paths as they are (not wrapped, not read as markup)
        stderr_console().print(f"[yellow]warning: {escape(warning)}", soft_wrap=True)
    return inputs


def _config_line(config) -> str:
    from inspector.store import shown_database

    keys = ("model", "db", "truth", "batch_size", "max_new_tokens", "device", "dtype", "prompt", "sizes")
    values = asdict(config) | {"db": shown_database(config.db)}
    values["batch_size"] = values["batch_size"] or "auto"  # 0 stands for --batch-size auto
    return ", ".join(f"{k}={values[k]}" for k in keys if values[k] not in (None, [], ""))


def _print_scan_summary(config, summary) -> None:
    from inspector.store import shown_database

    console = stdout_console()
    new = summary.processed - summary.failed
    line = f"Run {summary.run_id}: {new} images answered, {summary.failed} failed"
    if summary.internal_errors:
        line += f" ({summary.internal_errors} by an internal error while reading the answer: please report it)"
    if summary.unrepresentable_values:
        line += f", {summary.unrepresentable_values} values too large to be a number left empty"
    if summary.already_done:
        line += f", {summary.already_done} already done"
    if summary.duplicates:
        line += f", {summary.duplicates} duplicates skipped"
    console.print(line + f" ({summary.images_per_s:.2f} images/s)")
    if summary.truth:
        t = summary.truth
        line = (
            f"Truth: {t['matched_images']} of {t['images']} images matched a row, "
            f"{t['unmatched_rows']} of {t['rows']} rows matched no image"
        )
        problems = [f"{t[k]} {k.replace('_', ' ')}" for k in ("duplicate_keys", "unparseable_cells") if t.get(k)]
        if t.get("malformed_rows"):
            lines = ", ".join(t["malformed_at_lines"]) + (", …" if t["malformed_rows"] > len(t["malformed_at_lines"]) else "")
            problems.append(f"{t['malformed_rows']} malformed rows skipped: line {lines}")
        console.print(line + (f" ({', '.join(problems)})" if problems else ""))
    if summary.answered_images == 0 and new + summary.already_done > 0:
        console.print(
            "The model answered no field in any image: every answer was empty or could not be read "
            "(the raw answers are in the report and in predictions.raw_output; check --model and --prompt)."
        )
    unreadable = [f"{name} {m['unreadable']}" for name, m in summary.metrics.items() if m.get("unreadable")]
    if unreadable:
        where = " (listed in the report)" if summary.report_path else ""
        console.print(f"Unreadable catalogue cells, left out of the metrics: {', '.join(unreadable)}{where}")
    outside = [
        f"{name} {m['outside_values']} answers, {m['catalogue_outside_values']} catalogue values"
        for name, m in summary.metrics.items()
        if m.get("outside_values") or m.get("catalogue_outside_values")
    ]
    if outside:
        console.print(f"Outside the declared values: {'; '.join(outside)}")
    if summary.metrics:
        from inspector.scoring import format_errors

        table = Table(title="Per-field results")
        for column in ("field", "n", "accuracy", "precision", "recall", "F1", "MAE"):
            table.add_column(column, justify="left" if column == "field" else "right")
        for name, m in summary.metrics.items():
            table.add_row(
                name,
                str(m["n"]),
                _pct(m["accuracy"]),
                _pct(m["precision"]),
                _pct(m["recall"]),
                _pct(m["f1"]),
                format_errors(m),
            )
        console.print(table)
    console.print(f"Database: {shown_database(config.db)}")
    if summary.report_path:
        console.print(f"Report: {summary.report_path}")


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


@cli.command()
@click.argument("run", required=False)
@db_option
@click.option("--out", "-o", default="report.html", show_default=True, help="HTML file to write.")
@click.option("--compare", help="Another run (id or name) to show side by side, e.g. base vs fine-tuned.")
@click.option("--fields", "fields_file", type=click.Path(dir_okay=False),
              help="Show the fields of this TOML file (labels, kinds) instead of those stored with the run.")
@click.option("--model", "-m", help="The latest run of this model, as scan's --model named it (e.g. demo).")
def report(run, db, out, compare, fields_file, model):
    """Write the HTML report of RUN (id or name; default: the latest run, or the latest of --model)."""
    with friendly_errors():
        from inspector.fields import load_fields
        from inspector.outputs import check_output_file
        from inspector.report import render_report
        from inspector.store import open_store

        _require_existing_db(db)
        check_output_file(out, "--out")
        store = open_store(db, read_only=True)
        run_info = store.get_run(run, model=model)
        compare_info = store.get_run(compare) if compare else None
        fieldset = load_fields(fields_file) if fields_file else None
        path = render_report(store, run_info.id, Path(out), compare_run_id=compare_info.id if compare_info else None,
                             fieldset=fieldset)
        click.echo(f"Report: {path}")


@cli.command()
@click.argument("run", required=False)
@db_option
@click.option("--config-out", type=click.Path(dir_okay=False), metavar="FILE.toml",
              help="Write RUN's (default: the latest run's) scan settings as a --config file and stop.")
def runs(run, db, config_out):
    """List the runs stored in the database (only RUN, an id or name, when given)."""
    with friendly_errors():
        from inspector.store import open_store

        _require_existing_db(db)
        store = open_store(db, read_only=True)
        if config_out is not None:
            _write_run_config(store.get_run(run), config_out)
            return
        table = Table()
        for column in ("id", "name", "model", "prompt", "status", "images", "failed", "img/s", "started"):
            table.add_column(column)
        for r in [store.get_run(run)] if run is not None else store.list_runs():
            table.add_row(
                str(r.id),
                r.name or "",
                r.model,
                r.prompt_name,
                r.status,
                str(r.n_images or 0),
                str(r.n_failed or 0),
                "" if r.images_per_s is None else f"{r.images_per_s:.2f}",
                str(r.started_at)[:19],
            )
        stdout_console().print(table)


def _write_run_config(run, path: str) -> None:
    from inspector.options import run_as_config, toml_text
    from inspector.outputs import check_output_file

    check_output_file(path, "--config-out")
    settings, left_out = run_as_config(run, scan)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(toml_text("scan", settings), encoding="utf-8")
    if left_out:
        click.echo(f"Not written (no scan option takes them now): {', '.join(left_out)}", err=True)
    click.echo(f"Wrote the scan settings of {run.label} to {path}: inspector scan --config {path} --db DB PATHS")


@cli.group()
def review():
    """Inspectors' decisions from the report's review view."""


@review.command("import")
@click.argument("csv_path", metavar="DECISIONS.csv", type=click.Path(dir_okay=False))
@db_option
@click.option("--reviewer", help="Who decided, for rows without a reviewer column.  [default: your user name]")
def review_import(csv_path, db, reviewer):
    """Store the decisions CSV downloaded from the report (run_id, sha256, field, decision, corrected_value).

    Importing the same file again changes nothing. Malformed rows, and rows for an unknown run, image or field,
    or with an unknown decision, are skipped and listed with their lines; the lines after them are still read.
    Rows deciding the same field again are listed with the line that wins: the later decided_at, else the later
    line."""
    with friendly_errors():
        from inspector.review import import_decisions
        from inspector.store import open_store

        _require_existing_db(db)
        summary = import_decisions(open_store(db), csv_path, reviewer or _user_name())
        for label, lines in (
            ("Skipped", summary.skipped), ("Overridden", summary.overridden), ("Duplicate", summary.duplicates)
        ):
            for line in lines:
                click.echo(f"{label} {line}", err=True)
        click.echo(
            f"Decisions: {summary.rows} rows read: {summary.added} added, {summary.updated} updated, "
            f"{summary.unchanged} unchanged, {len(summary.skipped)} skipped, {len(summary.duplicates)} duplicates, "
            f"{len(summary.overridden)} overridden"
        )


def _user_name() -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


@cli.command()
@click.argument("run", required=False)
@db_option
@click.option("--out", "-o", required=True, help="File to write: .csv, or .parquet (needs pyarrow).")
@click.option(
    "--what",
    type=click.Choice(["results", "corrections"]),
    default="results",
    show_default=True,
    help="results: every field of every image with model value, catalogue value, confidence and decision. "
    "corrections: the catalogue rows the review marked wrong, with the corrected values.",
)
@click.option("--mismatches", "mismatches_only", is_flag=True, help="Only fields where model and catalogue disagree.")
@click.option("--field", help="Only this field (size_prices: every size's price).")
@click.option("--category", help="Only images whose catalogue category is this ('(none)': no category).")
def export(run, db, out, what, mismatches_only, field, category):
    """Write RUN's (id or name; default: the latest run) results or catalogue corrections as CSV or Parquet, with
    the report's filters."""
    with friendly_errors():
        from inspector.export import export_run
        from inspector.outputs import check_output_file
        from inspector.store import open_store

        _require_existing_db(db)
        check_output_file(out, "--out")
        store = open_store(db, read_only=True)
        info = store.get_run(run)
        count = export_run(
            store, info.id, out, what=what, mismatches_only=mismatches_only, field=field, category=category
        )
        click.echo(f"Wrote {count} {what} rows of {info.label} to {out}")


def _require_existing_db(db: str) -> None:
    from inspector.outputs import check_path_names

    if "://" not in db and not check_path_names(db, "--db").exists():
        raise click.ClickException(f"no database at {db}; run `inspector scan` first or pass --db")


@cli.command("tiny-model")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option(
    "--family", type=click.Choice(["llava", "idefics3", "phi3v"]), default="llava", show_default=True,
    help="Architecture of the tiny model.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights.")
@click.option("--tokenizer-dir", type=click.Path(file_okay=False), help="phi3v: real Phi-3.5-vision tokenizer files.")
def tiny_model(folder, family, seed, tokenizer_dir):
    """Build a tiny VLM with RANDOM weights into FOLDER, to try the pipeline offline.

    Its answers are noise; it exists for tests, CI and demos where real weights cannot be downloaded.
    """
    with friendly_errors():
        from inspector.tiny import build_tiny_model

        if family == "phi3v" and not all(
            tokenizer_dir and (Path(tokenizer_dir) / name).is_file()
            for name in ("tokenizer.json", "preprocessor_config.json")
        ):  # without them the folder has no processor, and `scan --model FOLDER` cannot load it
            raise click.ClickException(
                "--family phi3v needs --tokenizer-dir: a folder with Phi-3.5-vision's tokenizer and processor files "
                "(tokenizer.json, preprocessor_config.json, ...), e.g. the official checkpoint's folder"
            )
        _quiet_transformers()
        kwargs = {"tokenizer_dir": Path(tokenizer_dir)} if tokenizer_dir and family == "phi3v" else {}
        path = build_tiny_model(family, Path(folder), seed=seed, **kwargs)
        click.echo(f"Tiny {family} model (random weights) written to {path}")


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("-n", "count", metavar="N", default=36, show_default=True, type=click.IntRange(1),
              help="How many images to draw.")
@click.option("--seed", default=0, show_default=True, help="Seed of the drawn products.")
@click.option("--no-planted-errors", is_flag=True, help="Write the catalogue exactly as the cards show it.")
@click.option("--dataset", is_flag=True,
              help="Training data: FOLDER/images/ (JPEG) and truth.csv, always what the cards show.")
@click.option("--world", type=click.Choice(["default", "shifted"]),
              help="--dataset: the brands and colours to draw (shifted: ones the sample world never draws).")
@click.option("--processes", type=click.IntRange(1), help="--dataset: processes drawing the cards (default 1).")
def samples(folder, count, seed, no_planted_errors, dataset, world, processes):
    """Draw N (-n) synthetic product listing images and their truth CSV into FOLDER.

    The catalogue of the sample folder's cards (seed 0) carries a few deliberate errors for the demo to find
    (inspector.samples.PLANTED_ERRORS, listed in sample_images/README.md)."""
    for option, value in (("--world", world), ("--processes", processes)):
        if value is not None and not dataset:
            raise click.UsageError(f"{option} is for training data: add --dataset")
    with friendly_errors():
        from inspector.samples import (
            WORLDS,
            generate_dataset,
            generate_samples,
            make_products,
            planted_errors,
        )

        if dataset:
            world_of = WORLDS[world or "default"]()
            csv_path = generate_dataset(Path(folder), count, seed, workers=processes or 1, world=world_of)
            click.echo(f"{count} training cards and {csv_path} written")
            return
        csv_path = generate_samples(Path(folder), n=count, seed=seed, with_planted_errors=not no_planted_errors)
        planted = () if no_planted_errors else planted_errors(make_products(count, seed))
        errors = ", ".join(f"{e.field} of {e.file_name}" for e in planted)
        note = f"; planted catalogue errors: {errors}" if errors else ""
        click.echo(f"{count} sample images and {csv_path} written{note}")


cli.add_command(train_command)


def main() -> None:
    cli(prog_name="inspector")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
