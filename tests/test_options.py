"""A setting declared once on its config field (`inspector.settings.setting`) is an option of the command line
(`inspector.options.options_from`): its default, help, range, choices, flag, path kind and spelling."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, fields, make_dataclass

import click
import pytest
from click.testing import CliRunner

from inspector.options import options_from
from inspector.settings import OptionSpec, option_spec, setting


@dataclass
class Job:
    """Every kind of setting an option can be made from, and one (`shared`) that a shared decorator fills."""

    shared: str = ""
    share: float = setting(0.1, "Share held out.", minimum=0, maximum=1, max_open=True)
    steps: int = setting(0, "Steps; 0 = none.", minimum=0)
    rate: float = setting(2e-5, "Peak rate.", minimum=0, min_open=True)
    seed: int = setting(0, "Seed.")
    name: str = setting("job", "Name.")
    style: str | None = setting(None, "How answers are written.", choices=("json", "free"))
    folder: str = setting("", "Folder for models.", path="folder", opts=("--folder", "-f"))
    table: str | None = setting(None, "Write here.", path="file", metavar="FILE.jsonl")
    sources: list[str] = setting([], "A source (repeatable).", metavar="DB", opts=("--source",))
    strict: bool = setting(False, "Only the decided ones.")
    checkpointing: bool = setting(True, "Recompute.", negatable=True)
    resume: str | None = setting(None, "Go on.", flag_value="latest", metavar="[CHECKPOINT]")
    targets: list[str] | None = setting(None, "Comma-separated names.", comma_separated=True)
    per_call: int = setting(0, "Images per call, or 'auto'.", reader="batch size")
    length: int = setting(0, "Force answers this long.", minimum=0, show_default=False)


def _command(config=Job, **kwargs) -> click.Command:
    @click.command()
    @options_from(config, shared=[click.option("--shared", help="Shared.")], **kwargs)
    def job(**options):
        click.echo(json.dumps(options))

    return job


JOB_HELP = """\
Usage: job [OPTIONS]

Options:
  --shared TEXT                   Shared.
  --share FLOAT RANGE             Share held out.  [default: 0.1; 0<=x<1]
  --steps INTEGER RANGE           Steps; 0 = none.  [default: 0; x>=0]
  --rate FLOAT RANGE              Peak rate.  [default: 2e-05; x>0]
  --seed INTEGER                  Seed.  [default: 0]
  --name TEXT                     Name.  [default: job]
  --style [json|free]             How answers are written.
  -f, --folder DIRECTORY          Folder for models.
  --table FILE.jsonl              Write here.
  --source DB                     A source (repeatable).
  --strict                        Only the decided ones.
  --checkpointing / --no-checkpointing
                                  Recompute.  [default: checkpointing]
  --resume [CHECKPOINT]           Go on.
  --targets TEXT                  Comma-separated names.
  --per-call TEXT                 Images per call, or 'auto'.  [default: auto]
  --length INTEGER RANGE          Force answers this long.  [x>=0]
  --help                          Show this message and exit.
"""


def test_each_setting_is_an_option_with_its_default_help_and_constraints_in_field_order():
    runner = CliRunner()
    assert runner.invoke(_command(), ["--help"], terminal_width=120).output == JOB_HELP
    defaults = json.loads(runner.invoke(_command(), []).output)
    assert defaults == {
        "shared": None, "share": 0.1, "steps": 0, "rate": 2e-05, "seed": 0, "name": "job", "style": None,
        "folder": "", "table": None, "sources": [], "strict": False, "checkpointing": True, "resume": None,
        "targets": None, "per_call": 0, "length": 0,
    }  # fmt: skip
    given = runner.invoke(
        _command(),
        ["--share", "0.5", "--steps", "3", "--seed", "7", "--style", "free", "-f", "out", "--source", "a.db",
         "--source", "b.db", "--strict", "--no-checkpointing", "--resume", "--targets", "q_proj, v_proj",
         "--per-call", "8", "--length", "5"],
    )  # fmt: skip
    assert json.loads(given.output) == {
        **defaults, "share": 0.5, "steps": 3, "seed": 7, "style": "free", "folder": "out",
        "sources": ["a.db", "b.db"], "strict": True, "checkpointing": False, "resume": "latest",
        "targets": ["q_proj", "v_proj"], "per_call": 8, "length": 5,
    }  # fmt: skip
    assert json.loads(runner.invoke(_command(), ["--resume", "ckpt-7"]).output)["resume"] == "ckpt-7"
    assert json.loads(runner.invoke(_command(), ["--per-call", "auto"]).output)["per_call"] == 0


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--share", "1"], "Invalid value for '--share': 1.0 is not in the range 0<=x<1."),
        (["--rate", "0"], "Invalid value for '--rate': 0.0 is not in the range x>0."),
        (["--steps", "-1"], "Invalid value for '--steps': -1 is not in the range x>=0."),
        (["--style", "xml"], "Invalid value for '--style': 'xml' is not one of 'json', 'free'."),
        (["--per-call", "0"], "Invalid value for '--per-call': a positive number or 'auto'"),
    ],
)
def test_an_option_refuses_what_its_setting_declares_out_of_range(args, error):
    result = CliRunner().invoke(_command(), args)
    assert result.exit_code == 2 and result.output.splitlines()[-1] == f"Error: {error}"


def test_a_list_setting_is_a_fresh_list_per_config():
    first, second = Job(), Job()
    first.sources.append("a.db")
    assert second.sources == [] and option_spec(fields(Job)[9]).metavar == "DB"


def test_a_setting_that_is_on_by_default_must_be_negatable():
    with pytest.raises(ValueError, match="negatable=True"):
        setting(True, "Recompute.")


def test_every_field_is_an_option_or_listed_with_why():
    """A field with neither a setting's option nor a shared decorator is a mistake, named at import time."""
    bare = make_dataclass("Bare", [("shared", str, ""), ("secret", str, "")])
    with pytest.raises(TypeError, match=r"Bare\.secret has no option: declare it with settings\.setting"):
        _command(bare)
    listed = _command(bare, not_options={"secret": "read from the environment"})
    assert [param.name for param in listed.params if param.name != "help"] == ["shared"]
    with pytest.raises(ValueError, match="not_options needs a reason for secret"):
        _command(bare, not_options={"secret": ""})
    twice = make_dataclass("Twice", [("shared", str, setting("", "Shared, again."))])
    with pytest.raises(TypeError, match=r"Twice\.shared is declared twice"):
        _command(twice)
    with pytest.raises(TypeError, match=r"the shared option --other is no field of Job"):
        options_from(Job, shared=[click.option("--shared"), click.option("--other")])


def test_a_setting_names_a_reader_the_command_line_knows():
    unknown = make_dataclass("Unknown", [("per_call", int, setting(0, "Per call.", reader="batch"))])
    with pytest.raises(TypeError, match=r"Unknown\.per_call: no reader 'batch'; the readers: batch size"):
        options_from(unknown)


SHORT = make_dataclass("Short", [("name", str, setting("job", "Name.")), ("seed", int, setting(0, "Seed."))])


def test_options_that_are_no_field_are_listed_after_the_field_they_go_with():
    @click.command()
    @options_from(SHORT, after={"name": click.option("--no-name", is_flag=True, help="Leave it unnamed.")})
    def job(**options):
        click.echo(json.dumps(options))

    assert CliRunner().invoke(job, ["--help"], terminal_width=120).output == (
        "Usage: job [OPTIONS]\n\n"
        "Options:\n"
        "  --name TEXT     Name.  [default: job]\n"
        "  --no-name       Leave it unnamed.\n"
        "  --seed INTEGER  Seed.  [default: 0]\n"
        "  --help          Show this message and exit.\n"
    )
    assert json.loads(CliRunner().invoke(job, ["--no-name"]).output) == {"name": "job", "no_name": True, "seed": 0}


def test_an_option_after_a_field_is_no_field_and_follows_an_option():
    with pytest.raises(TypeError, match=r"after names Short\.colour, which is no option"):
        options_from(SHORT, after={"colour": click.option("--no-colour", is_flag=True)})
    with pytest.raises(TypeError, match=r"after names Short\.seed, which is no option"):
        options_from(SHORT, not_options={"seed": "fixed"}, after={"seed": click.option("--random", is_flag=True)})
    with pytest.raises(TypeError, match=r"--seed, added after name, is a field of Short: declare its option there"):
        options_from(SHORT, after={"name": click.option("--seed", type=int)})


def test_settings_are_library_code_without_click():
    code = "import sys, inspector.settings, inspector.scan_config, inspector.training.config; print('click' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ------------------------------------------------------------------------- inspector train, from TrainConfig


def test_every_train_config_field_is_a_train_option_of_its_name_or_listed_with_why():
    """A train-only option is its field's declaration (help and all); the rest are the options shared with scan."""
    from inspector.train_cli import SETTINGS_WITHOUT_OPTION, train_command
    from inspector.training.config import TrainConfig

    options = {param.name: param for param in train_command.params if isinstance(param, click.Option)}
    for setting_field in fields(TrainConfig):
        if setting_field.name in SETTINGS_WITHOUT_OPTION:
            assert SETTINGS_WITHOUT_OPTION[setting_field.name].strip() and setting_field.name not in options
            continue
        option, spec = options[setting_field.name], option_spec(setting_field)
        if spec is not None:
            assert (option.help, option.hidden) == (spec.help, False), setting_field.name
    shared = {f.name for f in fields(TrainConfig) if option_spec(f) is None}
    assert shared == {
        "truth", "truth_columns", "truth_key", "model", "trust_remote_code", "prompt", "prompt_file", "sizes",
        "fields_file", "num_crops", "price_tolerance", "title_threshold",
    }  # fmt: skip


def test_a_new_train_config_field_is_a_train_option_without_touching_the_command():
    from inspector.train_cli import SETTINGS_WITHOUT_OPTION, SHARED_OPTIONS, train_command
    from inspector.training.config import TrainConfig

    smoothing = setting(0.0, "Label smoothing of the answers' tokens.", minimum=0, maximum=1)
    extended = make_dataclass("Extended", [("label_smoothing", float, smoothing)], bases=(TrainConfig,))

    @click.command("train")
    @options_from(extended, shared=SHARED_OPTIONS, not_options=SETTINGS_WITHOUT_OPTION)
    def train(**options):
        click.echo(options["label_smoothing"])

    names = [param.name for param in train.params if param.name != "help"]
    assert names == [
        *(p.name for p in train_command.params if p.name in {f.name for f in fields(TrainConfig)}), "label_smoothing"
    ]
    help_text = CliRunner().invoke(train, ["--help"], terminal_width=120).output
    assert help_text.endswith(
        "  --label-smoothing FLOAT RANGE   Label smoothing of the answers' tokens.  [default: 0.0; 0<=x<=1]\n"
        "  --help                          Show this message and exit.\n"
    )
    assert CliRunner().invoke(train, ["--label-smoothing", "0.1"]).output == "0.1\n"
    unexplained = make_dataclass("Unexplained", [("label_smoothing", float, 0.0)], bases=(TrainConfig,))
    with pytest.raises(TypeError, match=r"Unexplained\.label_smoothing has no option"):
        options_from(unexplained, shared=SHARED_OPTIONS, not_options=SETTINGS_WITHOUT_OPTION)


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"lora_dropout": 1.5}, "--lora-dropout must be in [0, 1], got 1.5"),
        ({"val_fraction": 1.0}, "--val-fraction must be in [0, 1), got 1.0"),
        ({"adam_epsilon": 0.0}, "--adam-epsilon must be positive, got 0.0"),
        ({"lr": -1e-5}, "--lr must be positive, got -1e-05"),
        ({"weight_decay": -0.1}, "--weight-decay must not be negative, got -0.1"),
        ({"workers": -1}, "--dataloader-workers must not be negative, got -1"),
        ({"lora_alpha": 0}, "--lora-alpha must be at least 1, got 0"),
        ({"batch_size": "8"}, "--batch-size must be a number, got '8'"),
        ({"method": "qlora"}, "Unknown method 'qlora'; use one of: full, lora, frozen-vision"),
        ({"answer_style": "xml"}, "Unknown answer style 'xml'; use one of: json, original, free"),
    ],
)
def test_a_train_config_refuses_what_its_options_refuse(settings, error):
    """The library checks a setting against the same declaration its option is built from (a config built in
    Python or read from a train_config.json meets the command line's rules)."""
    from inspector.errors import InputError
    from inspector.training.config import TrainConfig

    with pytest.raises(InputError) as raised:
        TrainConfig(truth="t.csv", model="m", output="o", **settings).validate()
    assert str(raised.value) == error


@pytest.mark.parametrize(
    ("spec", "value", "why"),
    [
        (OptionSpec("", minimum=1), 0, "be at least 1"),
        (OptionSpec("", minimum=0.5, min_open=True), 0.5, "be above 0.5"),
        (OptionSpec("", maximum=10), 11, "be at most 10"),
        (OptionSpec("", maximum=10, max_open=True), 10, "be below 10"),
        (OptionSpec("", minimum=0, maximum=1, min_open=True), 0, "be in (0, 1]"),
        (OptionSpec("", minimum=0, maximum=1), 1, None),
        (OptionSpec("", minimum=0), True, "be a number"),
        (OptionSpec(""), "anything", None),
    ],
)
def test_a_range_says_why_it_refuses_a_value_as_click_checks_it(spec, value, why):
    assert spec.refusal(value) == why


# ------------------------------------------------------------------------- inspector scan, from ScanConfig

#: scan's options in its --help's order: ScanConfig's fields in order, each of scan's own options (no field) after
#: the setting it goes with.
SCAN_OPTIONS = [
    "config", "truth", "truth_columns", "truth_key", "model", "db", "report", "no_report", "batch_size", "prompt",
    "prompt_file", "sizes", "fields_file", "max_new_tokens", "min_new_tokens", "device", "dtype", "num_crops",
    "attn_implementation", "fuse", "quantize", "limit", "run_name", "price_tolerance", "title_threshold", "workers",
    "gpus", "trust_remote_code", "ray_address",
]  # fmt: skip


def test_every_scan_config_field_is_a_scan_option_of_its_name_or_listed_with_why():
    """A scan-only option is its field's declaration (help and all); the rest are the options shared with train
    (and --db, shared with every command that reads the results)."""
    from inspector.cli import SCAN_SETTINGS_WITHOUT_OPTION, scan
    from inspector.scan_config import ScanConfig
    from inspector.training.config import TrainConfig

    assert [param.name for param in scan.params] == ["paths", *SCAN_OPTIONS]
    options = {param.name: param for param in scan.params if isinstance(param, click.Option)}
    for setting_field in fields(ScanConfig):
        if setting_field.name in SCAN_SETTINGS_WITHOUT_OPTION:
            assert SCAN_SETTINGS_WITHOUT_OPTION[setting_field.name].strip() and setting_field.name not in options
            continue
        option, spec = options[setting_field.name], option_spec(setting_field)
        if spec is not None:
            assert (option.help, option.hidden) == (spec.help, False), setting_field.name
    assert set(SCAN_SETTINGS_WITHOUT_OPTION) == {"inputs", "shard"}
    shared = {f.name for f in fields(ScanConfig) if option_spec(f) is None} - set(SCAN_SETTINGS_WITHOUT_OPTION)
    assert shared == {f.name for f in fields(TrainConfig) if option_spec(f) is None} | {"db"}


def test_a_new_scan_config_field_is_a_scan_option_without_touching_the_command():
    from inspector.cli import SCAN_OPTIONS_AFTER, SCAN_SETTINGS_WITHOUT_OPTION, SCAN_SHARED_OPTIONS
    from inspector.scan_config import ScanConfig

    beams = setting(1, "Beams of the search.", minimum=1)
    extended = make_dataclass("Extended", [("num_beams", int, beams)], bases=(ScanConfig,))

    @click.command("scan")
    @options_from(
        extended, shared=SCAN_SHARED_OPTIONS, not_options=SCAN_SETTINGS_WITHOUT_OPTION, after=SCAN_OPTIONS_AFTER
    )
    def scan(**options):
        click.echo(options["num_beams"])

    assert [param.name for param in scan.params] == [*SCAN_OPTIONS[1:], "num_beams"]
    help_text = CliRunner().invoke(scan, ["--help"], terminal_width=120).output
    assert help_text.endswith(
        "  --num-beams INTEGER RANGE       Beams of the search.  [default: 1; x>=1]\n"
        "  --help                          Show this message and exit.\n"
    )
    assert CliRunner().invoke(scan, ["--num-beams", "4"]).output == "4\n"
    unexplained = make_dataclass("Unexplained", [("num_beams", int, 1)], bases=(ScanConfig,))
    with pytest.raises(TypeError, match=r"Unexplained\.num_beams has no option"):
        options_from(unexplained, shared=SCAN_SHARED_OPTIONS, not_options=SCAN_SETTINGS_WITHOUT_OPTION)


@pytest.mark.parametrize(
    ("args", "value"),
    [([], 0), (["--batch-size", "auto"], 0), (["--batch-size", "8"], 8)],
)
def test_scan_batch_size_reads_a_number_or_auto(args, value, tmp_path, monkeypatch):
    """--batch-size auto is ScanConfig's 0: pick one from free GPU memory."""
    import inspector.scan
    from inspector.cli import cli

    seen = []

    def stop(config):
        seen.append(config)
        raise click.ClickException("stopped here")

    monkeypatch.setattr(inspector.scan, "ask_as_trained", stop)
    result = CliRunner().invoke(cli, ["scan", str(tmp_path), *args])
    assert result.output == "Error: stopped here\n" and seen[0].batch_size == value
