"""Options shared by several commands, defined once, and `--config FILE`: a job's settings in a file.

CLI layer (click): the library never imports this module. A shared option is one decorator here (like
sqlite-utils' ``output_options``), its default taken from the config dataclass; where two commands do different
things with the same setting (scan reads the sizes' prices, train also teaches them) the command passes its help.

A config file fills the options' defaults (click's ``default_map``); an option typed on the command line wins,
as in trl's ``TrlParser`` and lmms-eval's ``--config``. Keys are option names, ``batch-size`` (or
``batch_size``, and the setting's own name, e.g. ``fields_file`` for ``--fields``), so a ``train_config.json``
saved with a model, or a scan run's settings written by ``inspector runs RUN --config-out``, is a config.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, fields
from pathlib import Path

import click

from inspector.console import friendly_errors
from inspector.prompts import parse_sizes_option
from inspector.scan_config import ScanConfig
from inspector.settings import OptionSpec, default_of, option_name, option_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: ScanConfig's defaults, the scan options' defaults.
SCAN_DEFAULTS = {f.name: f.default for f in fields(ScanConfig)}


def _destination(param_decls: tuple[str, ...]) -> str:
    """The setting an option fills, as click names it: the name given, else the first long name
    (``--lora-r`` -> ``lora_r``, ``--wandb/--no-wandb`` -> ``wandb``)."""
    for decl in param_decls:
        if decl.isidentifier():
            return decl
    long = next(decl for decl in param_decls if decl.startswith("--"))
    return long.split("/")[0][2:].replace("-", "_")


class SizesType(click.ParamType):
    """``--sizes 6.5,7.5,8`` -> ["6.5", "7.5", "8"] (`prompts.parse_sizes_option`: its error is the one-line
    ``Error:``, before any work). Empty (as `--config` writes ``sizes = []``) is no sizes."""

    name = "text"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):  # already read: the default (), or a list
            return list(value)
        if value == "":
            return []
        with friendly_errors():
            return parse_sizes_option(value)


class CommaSeparatedType(click.ParamType):
    """``--lora-targets q_proj,v_proj`` -> ["q_proj", "v_proj"]; empty is None (the setting's default)."""

    name = "text"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        return [part.strip() for part in value.split(",") if part.strip()] if value else None


class SettingReader(click.ParamType):
    """The command line's reader of a setting that no plain type reads, named by the setting's declaration
    (``setting(0, ..., reader="batch size")``, one of `READERS`)."""

    def written(self, value: object) -> object:
        """`value` as it is typed on the command line: the option's default, shown in `--help`."""
        return value


class BatchSizeType(SettingReader):
    """``--batch-size 8``, or ``auto`` -> 0 (ScanConfig's "pick one from free GPU memory")."""

    name = "text"

    def written(self, value: object) -> object:
        return "auto" if value == 0 else value

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        if value == "auto":
            return 0
        try:
            size = int(value)
        except ValueError:
            size = 0
        if size < 1:
            self.fail("a positive number or 'auto'", param, ctx)
        return size


#: The option types that read a setting's command-line form; `--config` values go through them too.
SIZES = SizesType()
COMMA_SEPARATED = CommaSeparatedType()
BATCH_SIZE = BatchSizeType()
#: The readers a setting may name (`settings.OptionSpec.reader`).
READERS: dict[str, SettingReader] = {"batch size": BATCH_SIZE}


def setting_option(defaults: dict, *param_decls: str, **attrs):
    """``click.option`` for a config dataclass field of the option's name: its default is the field's (typed
    once, in the dataclass) and shown in `--help`."""
    return click.option(*param_decls, default=defaults[_destination(param_decls)], show_default=True, **attrs)


def options_from(
    config: type,
    *,
    shared: Sequence[Callable] = (),
    not_options: Mapping[str, str] | None = None,
    after: Mapping[str, Callable] | None = None,
) -> Callable:
    """One option per field of the dataclass `config`, in the fields' order (`--help` lists them as the dataclass
    declares them). A field declared with `settings.setting` becomes the option its metadata describes; the
    fields that a `shared` decorator fills (``catalogue_options(...)``, found by the options it adds) get that
    decorator, where its first field is; `not_options` names the fields no option sets, each with why. Any other
    field is an error here, so a new setting cannot miss its option. `after` places a command's own options,
    which are no field (scan's ``--no-report``), right after the option of the field named."""
    not_options = dict(not_options or {})
    for name, why in not_options.items():
        if not why.strip():
            raise ValueError(f"not_options needs a reason for {name}")
    names = [f.name for f in fields(config)]
    after = dict(after or {})
    for name, decorator in after.items():
        if name not in names or name in not_options:
            raise TypeError(f"after names {config.__name__}.{name}, which is no option")
        for param in _options_added_by(decorator):
            if param.name in names:
                raise TypeError(
                    f"{_long_name(param)}, added after {name}, is a field of {config.__name__}: declare its option there"
                )
    filled_by: dict[str, Callable] = {}
    for decorator in shared:
        for param in _options_added_by(decorator):
            if param.name not in names:
                raise TypeError(f"the shared option {_long_name(param)} is no field of {config.__name__}")
            filled_by[param.name] = decorator
    decorators: list[Callable] = []
    for setting_field in fields(config):
        spec, decorator = option_spec(setting_field), filled_by.get(setting_field.name)
        where = f"{config.__name__}.{setting_field.name}"
        if (spec is not None) + (decorator is not None) + (setting_field.name in not_options) > 1:
            raise TypeError(f"{where} is declared twice: a setting's option, a shared option or not_options")
        if spec is not None:
            if spec.reader is not None and spec.reader not in READERS:
                raise TypeError(f"{where}: no reader {spec.reader!r}; the readers: {', '.join(READERS)}")
            decorators.append(_option(setting_field, spec))
        elif decorator is not None:
            if decorator not in decorators:
                decorators.append(decorator)
        elif setting_field.name not in not_options:
            raise TypeError(
                f"{where} has no option: declare it with settings.setting(default, help, ...), fill it with a "
                "shared option, or list it in not_options with why"
            )
        if setting_field.name in after:
            decorators.append(after[setting_field.name])
    return _bundle(*decorators)


def _options_added_by(decorator: Callable) -> list[click.Parameter]:
    """The options a decorator adds to a command (applied to a stand-in function)."""

    def probe() -> None:  # pragma: no cover - never called
        pass

    decorator(probe)
    return list(probe.__click_params__)  # type: ignore[attr-defined]


def _long_name(param: click.Parameter) -> str:
    return next((opt for opt in param.opts if opt.startswith("--")), param.opts[0])


def _option(setting_field: Field, spec: OptionSpec) -> Callable:
    """``click.option`` for one setting: the kind of value follows its default (a bool is a flag, a list a
    repeatable option), the type its reader, range, choices or path kind; its default is the field's, shown in
    `--help` (except an empty text: "not given", as for --output; or where the setting says not to)."""
    default = default_of(setting_field)
    opts = spec.opts or (option_name(setting_field),)
    attrs: dict = {"default": default, "show_default": spec.show_default and default != "", "help": spec.help}
    if isinstance(default, bool):
        if spec.negatable:
            opts = (f"{opts[0]}/--no-{opts[0].removeprefix('--')}", *opts[1:])
        else:
            attrs["is_flag"] = True
    elif spec.comma_separated:
        attrs["type"] = COMMA_SEPARATED
    elif isinstance(default, list):
        attrs["multiple"] = True
    if spec.reader is not None:
        reader = READERS[spec.reader]
        attrs.update(type=reader, default=reader.written(default))
    elif spec.choices is not None:
        attrs["type"] = click.Choice(spec.choices)
    elif spec.minimum is not None or spec.maximum is not None:
        number = click.FloatRange if isinstance(default, float) else click.IntRange
        attrs["type"] = number(spec.minimum, spec.maximum, min_open=spec.min_open, max_open=spec.max_open)
    elif spec.path is not None:
        attrs["type"] = click.Path(dir_okay=False) if spec.path == "file" else click.Path(file_okay=False)
    if spec.metavar is not None:
        attrs["metavar"] = spec.metavar
    if spec.flag_value is not None:
        attrs.update(is_flag=False, flag_value=spec.flag_value)
    return click.option(*opts, setting_field.name, **attrs)


def model_option(*, help: str, **attrs):  # noqa: A002 - click's own name for it
    """``--model``/``-m``: the model a command loads (its default is the command's: scan's Phi-3.5-vision, none
    for train), so each command says it in its help."""
    return click.option("--model", "-m", help=help, **attrs)


def trust_remote_code_option(f):
    """``--trust-remote-code``: off unless asked (scan and train load the same models)."""
    return click.option(
        "--trust-remote-code", is_flag=True, help="Allow the model folder's own Python code to run."
    )(f)


def scoring_options(defaults: dict, *, title_help: str):
    """``--price-tolerance``, ``--title-threshold``: when an answer counts as the catalogue's (scan scores its
    answers, train its evaluations, the same way); defaults from the command's config dataclass."""
    return _bundle(
        setting_option(defaults, "--price-tolerance", help="Absolute (0.01) or relative (2%)."),
        setting_option(defaults, "--title-threshold", type=click.FloatRange(0, 1), help=title_help),
    )


def _bundle(*decorators):
    """Several option decorators as one, listed in `--help` in the order given."""

    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


def db_option(f):
    """``--db``: where the results live (every command that reads or writes them)."""
    return click.option(
        "--db", default=SCAN_DEFAULTS["db"], show_default=True, help="SQLite file or SQLAlchemy URL."
    )(f)


def catalogue_options(*, truth_help: str, truth_columns_help: str):
    """``--truth``, ``--truth-columns``, ``--truth-key``: the catalogue CSV and how its rows meet the images."""
    return _bundle(
        click.option("--truth", type=click.Path(dir_okay=False), help=truth_help),
        click.option("--truth-columns", help=truth_columns_help),
        click.option(
            "--truth-key", help="CSV column whose value appears in the image file names (e.g. product_code)."
        ),
    )


def fields_option(*, help: str):  # noqa: A002 - click's own name for it
    """``--fields``: the fields file (docs/fields.md), into ``fields_file`` as in ScanConfig and TrainConfig."""
    return click.option("--fields", "fields_file", type=click.Path(dir_okay=False), help=help)


def question_options(*, prompt_help: str, sizes_help: str, fields_help: str):
    """``--prompt``, ``--prompt-file``, ``--sizes``, ``--fields``: the question asked of every image."""
    return _bundle(
        click.option("--prompt", help=prompt_help),
        click.option("--prompt-file", type=click.Path(dir_okay=False), help="File holding a custom prompt."),
        click.option("--sizes", type=SIZES, default=(), help=sizes_help),
        fields_option(help=fields_help),
    )


def num_crops_option(f):
    """``--num-crops``: Phi-3.5-vision's crops per image, a setting of the question's images."""
    return click.option(
        "--num-crops", type=click.IntRange(1), help="Phi-3.5-vision crops per image (checkpoint default: 4)."
    )(f)


#: The commands a config file may hold a table for; a file with one of these tables is read per command.
CONFIG_SECTIONS = ("scan", "train")


def _spelling(param: click.Parameter) -> str:
    """The name a config file's documentation uses: the option's long name (``batch-size``)."""
    longs = [opt for opt in param.opts if opt.startswith("--")]
    return (longs[0] if longs else param.opts[0]).lstrip("-")


def _key(name: str) -> str:
    return name.strip().replace("-", "_")


def config_keys(command: click.Command) -> dict[str, click.Parameter]:
    """Every key a config file may use for `command`, normalised (``batch_size``), and its option.

    An option answers to its destination (``fields_file``, ``workers``) and to its long names (``fields``,
    ``dataloader_workers``); hidden options (old spellings) and arguments are not settings of a job."""
    keys: dict[str, click.Parameter] = {}
    options = [
        p for p in command.params if isinstance(p, click.Option) and not p.hidden and p.name != "config"
    ]
    for param in options:  # destinations first: they win over another option's long name
        keys[param.name] = param
    for param in options:
        for opt in param.opts:
            if opt.startswith("--"):
                keys.setdefault(_key(opt[2:]), param)
    return keys


def read_config_file(path: str, command_name: str) -> dict:
    """The settings a TOML or JSON file holds for `command_name`: its ``[command_name]`` table when the file
    has per-command tables, else the whole file."""
    text = Path(path).read_text(encoding="utf-8")
    is_json = Path(path).suffix.lower() == ".json"
    try:
        data = json.loads(text) if is_json else tomllib.loads(text)
    except ValueError as error:  # json.JSONDecodeError and tomllib.TOMLDecodeError
        raise click.ClickException(
            f"--config {path}: not valid {'JSON' if is_json else 'TOML'}: {error}"
        ) from None
    if not isinstance(data, dict):
        raise click.ClickException(f"--config {path}: expected a table of settings")
    sections = [name for name in CONFIG_SECTIONS if isinstance(data.get(name), dict)]
    if not sections:
        return data
    others = sorted(set(data) - set(sections))
    if others:
        raise click.ClickException(
            f"--config {path}: settings outside a table: {', '.join(others)}; put them under [{command_name}]"
        )
    if command_name not in sections:
        raise click.ClickException(
            f"--config {path}: no [{command_name}] table (it has: {', '.join(f'[{s}]' for s in sections)})"
        )
    return data[command_name]


def _as_option_value(param: click.Parameter, value):
    """A config value as the option would read it from the command line (lists and mappings as typed there)."""
    if param.multiple:
        return list(value) if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, dict):  # --truth-columns brand=Brand,title="Product Name"
        return ",".join(f'{k}="{_quoted(str(v))}"' for k, v in value.items())
    if isinstance(value, (list, tuple)):  # --sizes 6.5,7.5 and --lora-targets q_proj,v_proj
        return ",".join(str(v) for v in value)
    return value


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def config_defaults(command: click.Command, path: str, ctx: click.Context | None = None) -> dict:
    """The ``default_map`` of `command` from the config file at `path`; an unknown key, or (given the command's
    context) a value its option refuses, is one error line naming the file and the setting."""
    settings = read_config_file(path, command.name)
    keys = config_keys(command)
    defaults: dict = {}
    for name, value in settings.items():
        param = keys.get(_key(str(name)))
        if param is None:
            spellings = sorted({_spelling(p) for p in keys.values()})
            close = difflib.get_close_matches(str(name).replace("_", "-"), spellings, n=3)
            hint = (
                f"; did you mean {' or '.join(close)}?"
                if close
                else f"; {command.name}'s settings: {', '.join(spellings)}"
            )
            raise click.ClickException(f"--config {path}: unknown setting {name!r} for {command.name}{hint}")
        if param.name in defaults:
            raise click.ClickException(f"--config {path}: {_spelling(param)} is set twice ({name!r})")
        if value is None:  # null in JSON: the option's own default
            continue
        defaults[param.name] = _as_option_value(param, value)
        if ctx is not None:
            try:
                param.type_cast_value(ctx, defaults[param.name])
            except click.ClickException as error:  # click's BadParameter, or a setting's own reader's error
                named = error.message.startswith(f"--{_spelling(param)}")  # the reader's error names the option
                message = error.message if named else f"{_spelling(param)}: {error.message}"
                raise click.ClickException(f"--config {path}: {message}") from None
    return defaults


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        ctx.default_map = {**(ctx.default_map or {}), **config_defaults(ctx.command, value, ctx)}
    return value


def config_option(f):
    """``--config FILE``: read first (eager), so that every other option finds its default there."""
    return click.option(
        "--config",
        type=click.Path(exists=True, dir_okay=False),
        is_eager=True,
        expose_value=False,
        callback=_load_config,
        metavar="FILE",
        help="Read option defaults from this TOML file (its [scan]/[train] table, or flat keys like "
        "batch-size = 8) or JSON file (e.g. a model's train_config.json); options given here win.",
    )(f)


def toml_text(table: str, settings: dict) -> str:
    """`settings` (strings, numbers, booleans, lists and string mappings) as one TOML ``[table]``; checked by
    reading it back, so a value TOML cannot hold is an error here rather than a different job later."""
    lines = [f"[{table}]"]
    for key, value in settings.items():
        lines.append(f"{key} = {_toml_value(value)}")
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != {table: settings}:  # pragma: no cover - a value _toml_value cannot write
        raise ValueError(f"cannot write these settings as TOML: {settings!r}")
    return text


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value!r} as TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise ValueError(f"cannot write {value!r} as TOML")


#: A scan run's stored settings that are no option: the fields' declarations (the fields file names them) and
#: the shard of one process of a multi-GPU scan.
_RUN_SETTINGS_WITHOUT_OPTION = ("fields", "shard")


def run_as_config(run, scan: click.Command) -> tuple[dict, list[str]]:
    """A scan run's settings as `scan`'s config (option name -> value), and the stored settings that no option
    takes any more (left out). The database is not written: its URL may hold a password."""
    keys = config_keys(scan)
    settings = {"model": run.model, "truth": run.truth_path, "run_name": run.name, **run.settings}
    config, left_out = {}, []
    for name, value in settings.items():
        param = keys.get(name)
        if name in _RUN_SETTINGS_WITHOUT_OPTION:
            continue
        if param is None:
            left_out.append(name)
        elif value is not None:  # not given: TOML has no null, and the option's default is None
            config[_spelling(param)] = value
    return config, left_out
