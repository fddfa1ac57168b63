"""A setting declared once: a config dataclass field that carries its option's help and constraints as plain data.

``lr: float = setting(2e-5, "Peak learning rate.", minimum=0, min_open=True)`` is the field's default, the
`--lr` option's help and its range; the command line builds the option from it (`inspector.options.options_from`,
as trl's ``HfArgumentParser`` reads ``field(metadata={"help": ...})``). Library code: no click here.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Literal

from inspector.errors import InputError

#: The key of a field's `OptionSpec` in its ``dataclasses.field`` metadata.
OPTION = "inspector.option"


@dataclass(frozen=True)
class OptionSpec:
    """How a setting reads from the command line. The value's kind follows the field's default: a bool is a flag,
    a list a repeatable option, an int or a float a number (a range when `minimum` or `maximum` is set)."""

    help: str
    minimum: float | None = None
    maximum: float | None = None
    min_open: bool = False  # minimum < x rather than minimum <= x
    max_open: bool = False
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    #: The option's spellings when they are not ``--<name with dashes>`` (``("--output", "-o")``).
    opts: tuple[str, ...] = ()
    #: A bool as a ``--x/--no-x`` pair with its default shown, rather than a flag that only turns it on.
    negatable: bool = False
    #: The value of the option given without one (``--resume`` alone is "latest").
    flag_value: str | None = None
    path: Literal["file", "folder"] | None = None
    #: A list typed as one comma-separated value (``q_proj,v_proj``) rather than a repeated option.
    comma_separated: bool = False
    #: The command line's own reader of a value no plain type reads, by name (``"batch size"``: a number or
    #: ``auto`` for 0; `inspector.options.READERS`); it also writes the default that `--help` shows.
    reader: str | None = None
    #: False: `--help` does not show the default (it would say nothing useful, as --min-new-tokens' 0).
    show_default: bool = True

    def refusal(self, value: Any) -> str | None:
        """Why the option would refuse `value` ("be at least 1", as in "--x must be at least 1"), or None."""
        if self.minimum is None and self.maximum is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "be a number"
        low, high = self.minimum, self.maximum
        below = low is not None and (value <= low if self.min_open else value < low)
        above = high is not None and (value >= high if self.max_open else value > high)
        if not (below or above):
            return None
        if low is not None and high is not None:
            return f"be in {'(' if self.min_open else '['}{low}, {high}{')' if self.max_open else ']'}"
        if low is not None:
            if low == 0:
                return "be positive" if self.min_open else "not be negative"
            return f"be above {low}" if self.min_open else f"be at least {low}"
        return f"be below {high}" if self.max_open else f"be at most {high}"


def setting(
    default: Any,
    help: str,  # noqa: A002 - the option's help, as dataclass metadata names it in trl and click
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    opts: tuple[str, ...] = (),
    negatable: bool = False,
    flag_value: str | None = None,
    path: Literal["file", "folder"] | None = None,
    comma_separated: bool = False,
    reader: str | None = None,
    show_default: bool = True,
) -> Any:
    """A dataclass field with its default and its option (`OptionSpec`); a list default is copied per instance."""
    spec = OptionSpec(
        help=help,
        minimum=minimum,
        maximum=maximum,
        min_open=min_open,
        max_open=max_open,
        choices=tuple(choices) if choices is not None else None,
        metavar=metavar,
        opts=tuple(opts),
        negatable=negatable,
        flag_value=flag_value,
        path=path,
        comma_separated=comma_separated,
        reader=reader,
        show_default=show_default,
    )
    if isinstance(default, bool) and default and not negatable:
        raise ValueError("a setting that is on by default needs negatable=True, or it could not be turned off")
    if isinstance(default, list):
        items = list(default)
        return field(default_factory=lambda: list(items), metadata={OPTION: spec})
    return field(default=default, metadata={OPTION: spec})


def option_spec(setting_field: Field) -> OptionSpec | None:
    """The option declared on a dataclass field with `setting`, or None (a field without one)."""
    return setting_field.metadata.get(OPTION)


def option_name(setting_field: Field) -> str:
    """The option's long spelling: ``--lora-r``, or the first one the setting declares (``--dataloader-workers``)."""
    spec = option_spec(setting_field)
    return spec.opts[0] if spec is not None and spec.opts else "--" + setting_field.name.replace("_", "-")


def check_settings(config: Any) -> None:
    """Raise InputError for the first setting of the dataclass instance `config` that its option would refuse
    (out of its range, not one of its choices): a config built in Python or read from a file meets the command
    line's rules. None is "not given"."""
    for setting_field in fields(config):
        spec, value = option_spec(setting_field), getattr(config, setting_field.name)
        if spec is None or value is None:
            continue
        option = option_name(setting_field)
        if spec.choices is not None and value not in spec.choices:
            name = option.removeprefix("--").replace("-", " ")
            raise InputError(f"Unknown {name} {value!r}; use one of: {', '.join(spec.choices)}")
        refusal = spec.refusal(value)
        if refusal is not None:
            raise InputError(f"{option} must {refusal}, got {value!r}")


def default_of(setting_field: Field) -> Any:
    """A field's default value (a fresh one from its factory)."""
    if setting_field.default is not MISSING:
        return setting_field.default
    if setting_field.default_factory is not MISSING:
        return setting_field.default_factory()
    raise ValueError(f"setting {setting_field.name} has no default")
