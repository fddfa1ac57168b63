"""The questions a scan asks the model, and the canonical answers that training teaches.

Two built-in prompts:

- ``extract`` (default) asks for one JSON object with one key per declared field (`inspector.fields`);
- ``original`` is the question of the fine-tune this project grew out of, "What is shown in this image?", answered
  "Product: {title}, Category: {category}, Full Price: {price}".

A prompt file holds any question as plain text (its answers are read by `parse_answer` like any other). With
``--sizes`` every prompt also asks for the prices in those sizes; a prompt file may say where with ``{sizes}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from inspector.errors import InputError
from inspector.fields import BUILTIN_FIELDS, FieldSet, FieldSpec, ProductFields
from inspector.kinds import kind_of
from inspector.parsing import normalise_size

__all__ = [
    "ANSWER_STYLES",
    "BUILTIN_PROMPTS",
    "DEFAULT_PROMPT",
    "Prompt",
    "format_answer",
    "get_prompt",
    "parse_sizes_option",
]

#: How an answer is written: one JSON object, the original "Product: …, Category: …, Full Price: …" line, or
#: anything (custom prompts; `format_answer` writes "Key: value" lines for it).
ANSWER_STYLES: tuple[str, ...] = ("json", "original", "free")


@dataclass(frozen=True)
class Prompt:
    """A question for the model and the style its answers are expected in."""

    name: str
    text: str
    #: "json" | "original" | "free"
    answer_style: str


def _describe(spec: FieldSpec) -> str:
    """How the JSON prompt asks for one field: its key, then what it is in brackets."""
    parts = [spec.description] if spec.description else []
    parts += kind_of(spec).hint(spec)
    return f'"{spec.key}"' + (f" ({'; '.join(parts)})" if parts else "")


def extract_text(fieldset: FieldSet = BUILTIN_FIELDS) -> str:
    """The default question: one JSON object with exactly the declared fields."""
    keys = ", ".join(_describe(spec) for spec in fieldset)
    return (
        "Read this product listing image. Answer with one JSON object and nothing else, with these keys: "
        f"{keys}. Use null for anything not shown."
    )


_ORIGINAL_TEXT = "What is shown in this image?"
#: The original fine-tune's answer opens with these labels, in this order ("Product: …, Category: …, Full
#: Price: …"); the other fields follow as "Label: value".
_ORIGINAL_LABELS = {"title": "Product", "category": "Category", "price": "Full Price"}

BUILTIN_PROMPTS: dict[str, Prompt] = {
    "extract": Prompt("extract", extract_text(), "json"),
    "original": Prompt("original", _ORIGINAL_TEXT, "original"),
}
DEFAULT_PROMPT = "extract"

_SIZES_PLACEHOLDER = "{sizes}"


def parse_sizes_option(text: str) -> list[str]:
    """Sizes from the CLI's ``--sizes 6.5,7.5,8`` (commas or semicolons between sizes; "." for decimals).

    Sizes are normalised like catalogue and answer sizes ("6.50" -> "6.5", "xl" -> "XL"); repeats are dropped.
    """
    if text is None or not str(text).strip():
        raise InputError("--sizes needs at least one size, e.g. --sizes 6.5,7.5,8")
    sizes: list[str] = []
    for part in re.split(r"[,;]", str(text)):
        if not part.strip():
            continue
        size = normalise_size(part)
        if not size:
            raise InputError(f"--sizes: {part.strip()!r} is not a size; write sizes like --sizes 6.5,7.5,8")
        if size not in sizes:
            sizes.append(size)
    if not sizes:
        raise InputError("--sizes needs at least one size, e.g. --sizes 6.5,7.5,8")
    return sizes


def _sizes_question(style: str, sizes: list[str]) -> str:
    listed = ", ".join(sizes)
    if style == "json":
        return f'Fill "sizes" with the prices in sizes {listed}.'
    return f"What are the prices in {listed}?"


def get_prompt(
    name: str | None = None,
    prompt_file: str | Path | None = None,
    sizes: list[str] | None = None,
    fieldset: FieldSet = BUILTIN_FIELDS,
) -> Prompt:
    """A built-in prompt by name (default "extract"), or the text of a prompt file (named "file:<stem>").

    The "extract" prompt asks for exactly the fields of `fieldset`. With `sizes`, the question also asks for
    the prices in those sizes.
    """
    if name is not None and prompt_file is not None:
        raise InputError("Pass either a prompt name (--prompt) or a prompt file (--prompt-file), not both.")
    if prompt_file is not None:
        prompt = _read_prompt_file(Path(prompt_file))
    else:
        key = (name or DEFAULT_PROMPT).strip().lower()
        if key not in BUILTIN_PROMPTS:
            available = ", ".join(sorted(BUILTIN_PROMPTS))
            raise InputError(
                f"Unknown prompt {name!r}. Available prompts: {available}; or pass your own with --prompt-file."
            )
        prompt = BUILTIN_PROMPTS[key]
        if key == "extract" and fieldset != BUILTIN_FIELDS:
            prompt = Prompt(prompt.name, extract_text(fieldset), prompt.answer_style)
    if not sizes:
        if _SIZES_PLACEHOLDER in prompt.text:
            raise InputError(
                f"The prompt file asks for {_SIZES_PLACEHOLDER} but no sizes were given: pass --sizes 6.5,7.5,8 "
                f"or remove {_SIZES_PLACEHOLDER} from the file."
            )
        return prompt
    normalised = list(dict.fromkeys(normalise_size(size) for size in sizes if normalise_size(size)))
    if not normalised:
        raise InputError("The sizes given are empty; write sizes like --sizes 6.5,7.5,8")
    if _SIZES_PLACEHOLDER in prompt.text:
        text = prompt.text.replace(_SIZES_PLACEHOLDER, ", ".join(normalised))
    else:
        text = f"{prompt.text} {_sizes_question(prompt.answer_style, normalised)}"
    return Prompt(prompt.name, text, prompt.answer_style)


def _read_prompt_file(path: Path) -> Prompt:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"Prompt file {path} does not exist; check the --prompt-file path.") from None
    except IsADirectoryError:
        raise InputError(
            f"Prompt file {path} is a folder; pass a plain text file to --prompt-file."
        ) from None
    except UnicodeDecodeError:
        raise InputError(f"Prompt file {path} is not UTF-8 text; save it as UTF-8 and try again.") from None
    except OSError as error:
        raise InputError(f"Cannot read prompt file {path}: {error.strerror or error}.") from None
    text = text.strip()
    if not text:
        raise InputError(f"Prompt file {path} is empty; write the question for the model in it.")
    return Prompt(f"file:{path.stem}", text, "free")


def format_answer(fields: ProductFields, style: str = "json", fieldset: FieldSet = BUILTIN_FIELDS) -> str:
    """The canonical answer for `fields`, as training teaches it; `parse_answer` reads it back to the same fields.

    - "json": one line, the declared fields' keys in order, every key present with null for missing values
      so that the model learns to say null rather than guess;
    - "original": "Product: {title}, Category: {category}, Full Price: {price}" as the original fine-tune wrote
      it, followed by ", Label: value" for the other fields present and ", Size 6.5: 115.0" per size;
    - "free": one "Label: value" line per value present.
    """
    if style not in ANSWER_STYLES:
        raise InputError(f"Unknown answer style {style!r}; use one of: {', '.join(ANSWER_STYLES)}.")
    if style == "json":
        data = {spec.key: kind_of(spec).json_value(spec, fields[spec.name]) for spec in fieldset}
        return json.dumps(data, ensure_ascii=False)

    pairs: list[tuple[str, str | None]] = []
    if style == "original":
        pairs += [
            (label, kind_of(fieldset[name]).answer_text(fieldset[name], fields[name]) if name in fieldset else None)
            for name, label in _ORIGINAL_LABELS.items()
        ]
    for spec in sorted(fieldset, key=lambda spec: kind_of(spec).results_last):
        if style != "original" or spec.name not in _ORIGINAL_LABELS:
            pairs += kind_of(spec).answer_lines(spec, fields[spec.name])
    separator = ", " if style == "original" else "\n"
    return separator.join(f"{key}: {value}" for key, value in pairs if value is not None)
