"""`--config FILE` (issue 19.2): a job's settings in a TOML or JSON file fill the options' defaults; the command
line wins; an unknown key is one error line; train_config.json and a scan run's settings read back as configs."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from inspector.cli import cli
from inspector.discovery import discover


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture()
def fake_model(tmp_path, sample_dir) -> str:
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(['{"brand": "Acme", "price": 10}'] * len(discover([sample_dir]))))
    return f"fake:{path}"


def _run_settings(db: Path) -> dict:
    with sqlite3.connect(db) as connection:
        return json.loads(connection.execute("select settings from runs order by id desc").fetchone()[0])


@pytest.fixture()
def stopped_training(monkeypatch) -> list:
    """The TrainConfig each `inspector train` call built; training itself stops with one error line."""
    import inspector.training
    from inspector.errors import TrainingError

    seen = []

    def train(config, progress):
        seen.append(config)
        raise TrainingError("stopped here")

    monkeypatch.setattr(inspector.training, "train", train)
    return seen


def test_scan_config_fills_the_defaults_and_the_command_line_wins(runner, tmp_path, sample_dir, fake_model):
    db = tmp_path / "r.db"
    job = tmp_path / "job.toml"
    job.write_text(
        f'[scan]\nmodel = "{fake_model}"\ndb = "{db}"\nno-report = true\nbatch-size = 3\nmax_new_tokens = 100\n'
        'sizes = ["6.5", "7.5"]\n'
        "[train]\nlr = 1e-4\n"  # another command's table is not scan's business
    )
    result = runner.invoke(cli, ["scan", str(sample_dir), "--config", str(job), "--max-new-tokens", "50"])
    assert result.exit_code == 0, result.output
    settings = _run_settings(db)
    assert (settings["batch_size"], settings["max_new_tokens"], settings["sizes"]) == (3, 50, ["6.5", "7.5"])
    assert not (tmp_path / "report.html").exists() and "Report:" not in result.stdout
    assert result.stdout.splitlines()[-1] == f"Database: {db}"


def test_an_unknown_or_misplaced_key_is_one_error_line_naming_it(runner, tmp_path, sample_dir):
    job = tmp_path / "job.toml"
    job.write_text("[scan]\nbatchsize = 3\n")
    result = runner.invoke(cli, ["scan", str(sample_dir), "--config", str(job)])
    assert result.exit_code == 1
    assert (
        result.output
        == f"Error: --config {job}: unknown setting 'batchsize' for scan; did you mean batch-size?\n"
    )

    job.write_text("epochs = 2\n")  # flat: every key is the command's; a train setting is no scan setting
    result = runner.invoke(cli, ["scan", str(sample_dir), "--config", str(job)])
    assert result.output == (
        f"Error: --config {job}: unknown setting 'epochs' for scan; scan's settings: attn, batch-size, db, device, "
        "dtype, fields, fuse, gpus, limit, max-new-tokens, min-new-tokens, model, no-report, num-crops, "
        "price-tolerance, prompt, prompt-file, quantize, ray, report, run-name, sizes, title-threshold, "
        "trust-remote-code, truth, truth-columns, truth-key, workers\n"
    )

    job.write_text("lr = 1e-4\n[scan]\nbatch-size = 3\n")
    result = runner.invoke(cli, ["train", "--config", str(job)])
    assert result.output == f"Error: --config {job}: settings outside a table: lr; put them under [train]\n"

    job.write_text("[scan]\nbatch-size = 3\n")
    result = runner.invoke(cli, ["train", "--config", str(job)])
    assert result.output == f"Error: --config {job}: no [train] table (it has: [scan])\n"

    job.write_text(
        "[scan]\nmax-new-tokens = 'lots'\n"
    )  # a value the option refuses: the file and key say where
    result = runner.invoke(cli, ["scan", str(sample_dir), "--config", str(job)])
    assert result.output == f"Error: --config {job}: max-new-tokens: 'lots' is not a valid integer range.\n"

    job.write_text("[train]\nbatch-size = 3\nbatch_size = 4\n")
    result = runner.invoke(cli, ["train", "--config", str(job)])
    assert result.output == f"Error: --config {job}: batch-size is set twice ('batch_size')\n"

    job.write_text("[scan\n")
    result = runner.invoke(cli, ["scan", str(sample_dir), "--config", str(job)])
    assert result.exit_code == 1 and re.fullmatch(
        rf"Error: --config {re.escape(str(job))}: not valid TOML: .*\n", result.output
    )


def test_train_config_json_is_a_config_and_the_command_line_wins(
    runner, tmp_path, sample_dir, stopped_training
):
    from inspector.training.config import TrainConfig

    saved = TrainConfig(
        truth=str(sample_dir / "truth.csv"),
        model="fake:x",
        output=str(tmp_path / "out"),
        method="lora",
        lr=1e-4,
        epochs=1.5,
        sizes=["6.5", "7.5"],
        truth_columns={"brand": "Brand", "title": "Product, Name"},
        lora_targets=["q_proj", "v_proj"],
        workers=0,
        run_name="trial",
        gradient_checkpointing=False,
    )
    folder = tmp_path / "out" / "final"
    folder.mkdir(parents=True)
    path = saved.save(folder)
    again = runner.invoke(cli, ["train", "--config", str(path)])
    assert again.output.endswith("Error: stopped here\n"), again.output
    changed = runner.invoke(
        cli, ["train", "--config", str(path), "--lr", "0.001", "--gradient-checkpointing"]
    )
    assert changed.output.endswith("Error: stopped here\n"), changed.output
    assert stopped_training[0] == saved
    assert stopped_training[1].lr == 0.001 and stopped_training[1].gradient_checkpointing is True
    assert stopped_training[1].to_dict() | {"lr": 1e-4, "gradient_checkpointing": False} == saved.to_dict()


def test_a_flat_train_toml_with_underscores_or_hyphens(runner, tmp_path, sample_dir, stopped_training):
    job = tmp_path / "job.toml"
    job.write_text(
        f'truth = "{sample_dir / "truth.csv"}"\nmodel = "fake:x"\noutput = "{tmp_path / "o"}"\n'
        'dataloader-workers = 1\nmax_steps = 7\nwandb-name = "n"\nreviews = []\n'
    )
    result = runner.invoke(cli, ["train", "--config", str(job), "--max-steps", "9"])
    assert result.output.endswith("Error: stopped here\n"), result.output
    (config,) = stopped_training
    assert (config.workers, config.max_steps, config.run_name, config.reviews) == (1, 9, "n", [])


def test_a_scan_run_written_as_a_config_reruns_the_same_run(runner, tmp_path, sample_dir, fake_model):
    db = tmp_path / "r.db"
    truth = str(sample_dir / "truth.csv")
    first = runner.invoke(
        cli,
        ["scan", str(sample_dir), "--model", fake_model, "--db", str(db), "--no-report", "--truth", truth,
         "--batch-size", "2", "--max-new-tokens", "64", "--sizes", "6.5", "--truth-columns", "brand=Brand",
         "--price-tolerance", "2%", "--run-name", "weekly"],
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    job = tmp_path / "jobs" / "weekly.toml"
    written = runner.invoke(cli, ["runs", "weekly", "--db", str(db), "--config-out", str(job)])
    assert written.exit_code == 0, written.output
    assert written.output == (
        f"Wrote the scan settings of run 1 (weekly) to {job}: inspector scan --config {job} --db DB PATHS\n"
    )
    assert job.read_text() == (  # the run's settings as it stored them: in ScanConfig's order, scan's --help order
        "[scan]\n"
        f'model = "{fake_model}"\n'
        f'truth = "{truth}"\n'
        'run-name = "weekly"\n'
        'truth-columns = { "brand" = "Brand" }\n'
        "batch-size = 2\n"
        'sizes = ["6.5"]\n'
        "max-new-tokens = 64\n"
        "min-new-tokens = 0\n"
        'device = "auto"\n'
        'dtype = "auto"\n'
        'fuse = "auto"\n'
        'quantize = "none"\n'
        'price-tolerance = "2%"\n'
        "title-threshold = 0.6\n"
        "workers = 4\n"
        "trust-remote-code = false\n"
    )
    again = runner.invoke(
        cli, ["scan", str(sample_dir), "--config", str(job), "--db", str(db), "--no-report"]
    )
    assert again.exit_code == 0, again.output
    n_images = len(discover([sample_dir]))
    assert re.fullmatch(
        rf"Run 1: 0 images answered, 0 failed, {n_images} already done \([0-9.]+ images/s\)",
        again.stdout.splitlines()[0],
    )


def test_runs_lists_one_run_when_named(runner, tmp_path, sample_dir, fake_model):
    db = tmp_path / "r.db"
    for name in ("a", "b"):
        scanned = runner.invoke(
            cli,
            [
                "scan",
                str(sample_dir),
                "--model",
                fake_model,
                "--db",
                str(db),
                "--no-report",
                "--run-name",
                name,
            ],
        )
        assert scanned.exit_code == 0, scanned.output
    listed = runner.invoke(cli, ["runs", "b", "--db", str(db)], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    rows = [line for line in listed.stdout.splitlines() if "completed" in line]
    assert len(rows) == 1 and [cell.strip() for cell in rows[0].split("│")[1:3]] == ["2", "b"]


def test_shared_options_are_one_definition_with_the_config_defaults():
    """Issue 19.1: --db was declared five times; the scan options' defaults were typed a second time."""
    import click

    from inspector.scan import ScanConfig

    dbs = [p for _, p in _options(cli) if p.name == "db"]
    assert len(dbs) == 5 and {(p.default, p.help) for p in dbs} == {
        (ScanConfig.db, "SQLite file or SQLAlchemy URL.")
    }
    scan = cli.commands["scan"]
    defaults = ScanConfig(inputs=[])
    no_default = click.Option(["--x"]).default  # None in older click, a sentinel in newer ones
    checked = []
    context = click.Context(scan)
    for param in scan.params:
        default = param.default
        if (
            isinstance(param, click.Option)
            and hasattr(defaults, param.name)
            and default not in (None, no_default)
        ):
            checked.append(param.name)
            # read as the option reads it: --batch-size's "auto" is 0, --sizes' () is no sizes, []
            assert param.type_cast_value(context, default) == getattr(defaults, param.name), param.name
    assert len(checked) == 13, checked
    # the catalogue and question options of scan and train are the same options (the help says what each does)
    train = cli.commands["train"]
    shared = (
        "truth",
        "truth_columns",
        "truth_key",
        "prompt",
        "prompt_file",
        "sizes",
        "fields_file",
        "num_crops",
    )
    for name in shared:
        (in_scan,) = [p for p in scan.params if p.name == name]
        (in_train,) = [p for p in train.params if p.name == name]
        assert (in_scan.opts, type(in_scan.type)) == (in_train.opts, type(in_train.type)), name


def _options(command, path="inspector"):
    import click

    for param in command.params:
        if isinstance(param, click.Option):
            yield path, param
    for name, sub in getattr(command, "commands", {}).items():
        yield from _options(sub, f"{path} {name}")


def test_train_options_take_their_defaults_from_train_config():
    """Issue 19.2: each train option with a default has its TrainConfig field's, typed once in the dataclass
    (shown in --help, but for a flag that is off and an empty list); the options both commands have (the model's
    trust and the scoring) are one definition."""
    import click

    from inspector.scan import ScanConfig
    from inspector.training.config import TrainConfig

    train, scan = cli.commands["train"], cli.commands["scan"]
    defaults = TrainConfig()
    no_default = click.Option(["--x"]).default
    shown = {
        p.name: p.default
        for p in train.params
        if isinstance(p, click.Option) and p.show_default and p.default not in (None, no_default)
    }
    assert len(shown) == 36, sorted(shown)  # 34 train-only settings and the 2 scoring options
    assert shown == {name: getattr(defaults, name) for name in shown}
    assert {"reviews", "reviewed_only", "keep_adapter"} <= set(shown) and "output" not in shown  # "": not given
    for name in ("model", "trust_remote_code", "price_tolerance", "title_threshold"):
        (in_scan,) = [p for p in scan.params if p.name == name]
        (in_train,) = [p for p in train.params if p.name == name]
        assert (in_scan.opts, type(in_scan.type)) == (in_train.opts, type(in_train.type)), name
        if name in ("trust_remote_code", "price_tolerance"):  # the others' help says what each command does
            assert in_scan.help == in_train.help, name
        if name in ("price_tolerance", "title_threshold"):
            assert in_scan.default == in_train.default == getattr(ScanConfig, name) == getattr(defaults, name)


# ------------------------------------------------- settings typed as text: read in one place, by scan and train


@pytest.fixture()
def colour_fields(tmp_path) -> Path:
    path = tmp_path / "fields.toml"
    path.write_text('[fields.colour]\nkind = "category"\n')
    return path


def test_train_reads_the_text_forms_of_its_settings_from_the_command_line_and_a_config(
    runner, tmp_path, sample_dir, colour_fields, stopped_training
):
    """--truth-columns is read against the run's fields (a --fields field may be mapped), --sizes and
    --lora-targets as scan reads them; the same from a --config file."""
    base = ["train", "--truth", str(sample_dir / "truth.csv"), "--model", "fake:x", "--output", str(tmp_path / "o")]
    typed = runner.invoke(
        cli,
        [*base, "--fields", str(colour_fields), "--truth-columns", 'colour="Colour, shade",brand=Brand',
         "--sizes", "6.50;xl", "--lora-targets", " q_proj, v_proj ,", "--reviews", "a.db", "--reviews", "b.db"],
    )  # fmt: skip
    assert typed.output.endswith("Error: stopped here\n"), typed.output
    job = tmp_path / "job.toml"
    job.write_text(
        f'[train]\nfields = "{colour_fields}"\ntruth-columns = {{ colour = "Colour, shade", brand = "Brand" }}\n'
        'sizes = ["6.50", "xl"]\nlora-targets = ["q_proj", "v_proj"]\nreviews = ["a.db", "b.db"]\n'
    )
    from_file = runner.invoke(cli, [*base, "--config", str(job)])
    assert from_file.output.endswith("Error: stopped here\n"), from_file.output
    for config in stopped_training:
        assert config.truth_columns == {"colour": "Colour, shade", "brand": "Brand"}
        assert (config.sizes, config.lora_targets, config.reviews) == (["6.5", "XL"], ["q_proj", "v_proj"],
                                                                       ["a.db", "b.db"])  # fmt: skip
    assert stopped_training[0] == stopped_training[1]
    plain = runner.invoke(cli, base)
    assert plain.output.endswith("Error: stopped here\n"), plain.output
    assert (stopped_training[2].truth_columns, stopped_training[2].sizes, stopped_training[2].lora_targets) == (
        None, [], None,
    )  # fmt: skip


def test_train_config_takes_the_truth_columns_text_once_its_fields_are_known(tmp_path, colour_fields):
    from inspector.errors import TruthError
    from inspector.training.config import TrainConfig

    config = TrainConfig(truth_columns='colour="Colour name",title=Name', fields_file=str(colour_fields))
    assert config.truth_columns == {"colour": "Colour name", "title": "Name"}
    assert TrainConfig.load(config.save(tmp_path)) == config
    (tmp_path / "train_config.json").write_text(json.dumps({"truth_columns": "title=Name"}))
    assert TrainConfig.load(tmp_path).truth_columns == {"title": "Name"}
    with pytest.raises(TruthError, match="unknown field 'colour'"):
        TrainConfig(truth_columns="colour=Colour")  # the built-in fields have no colour


@pytest.mark.parametrize("command", ["scan", "train"])
def test_a_bad_text_setting_is_one_line_before_any_work(runner, tmp_path, sample_dir, command, stopped_training):
    """The same reader and the same error for scan and train, from the command line or a --config file, before
    anything is read or loaded."""
    base = ["scan", str(sample_dir), "--model", "fake:x"] if command == "scan" else ["train"]
    typed = runner.invoke(cli, [*base, "--sizes", "6.5,size"])
    assert (typed.exit_code, typed.output) == (
        1, "Error: --sizes: 'size' is not a size; write sizes like --sizes 6.5,7.5,8\n",
    )  # fmt: skip
    empty = runner.invoke(cli, [*base, "--sizes", " "])
    assert empty.output == "Error: --sizes needs at least one size, e.g. --sizes 6.5,7.5,8\n"
    job = tmp_path / "job.toml"
    job.write_text('sizes = ["6.5", "size"]\n')
    from_file = runner.invoke(cli, [*base, "--config", str(job)])
    assert (from_file.exit_code, from_file.output) == (
        1, f"Error: --config {job}: --sizes: 'size' is not a size; write sizes like --sizes 6.5,7.5,8\n",
    )  # fmt: skip
    columns = runner.invoke(cli, [*base, "--truth-columns", "brand"])
    assert columns.output.endswith(
        "Error: --truth-columns: 'brand' is not FIELD=COLUMN; write it like brand=Brand,price=Cost\n"
    )
    assert stopped_training == []


def test_scan_batch_size_is_a_number_or_auto_named_in_its_error(runner, tmp_path, sample_dir):
    result = runner.invoke(cli, ["scan", str(sample_dir), "--model", "fake:x", "--batch-size", "0"])
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == "Error: Invalid value for '--batch-size': a positive number or 'auto'"
    job = tmp_path / "job.toml"
    job.write_text('[scan]\nbatch-size = "lots"\n')
    from_file = runner.invoke(cli, ["scan", str(sample_dir), "--config", str(job)])
    assert (from_file.exit_code, from_file.output) == (
        1, f"Error: --config {job}: batch-size: a positive number or 'auto'\n",
    )  # fmt: skip
