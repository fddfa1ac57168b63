"""What a model folder written by `inspector train` records about the question it was taught to answer.

Training saves its settings as train_config.json in every model folder (checkpoints, best/, final/) and, beside
it, copies of the question's files (the fields file and the prompt file), because the paths the config records
are those of the training machine. A scan of such a folder reads the question back (`TrainedQuestion`) to ask
it as it was trained. Used by training (writing) and scanning (reading), so it lives below both.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from inspector.errors import InputError
from inspector.fields import load_fields
from inspector.prompts import Prompt, get_prompt

CONFIG_FILE = "train_config.json"

#: Copies of the question's files saved beside train_config.json: setting -> file name.
QUESTION_FILES: dict[str, str] = {"fields_file": "train_fields.toml", "prompt_file": "train_prompt.txt"}

#: The command-line option of each question setting, for messages that say how to ask.
OPTIONS: dict[str, str] = {
    "fields_file": "--fields",
    "prompt": "--prompt",
    "prompt_file": "--prompt-file",
    "sizes": "--sizes",
    "num_crops": "--num-crops",
}


def save_question_files(settings: dict, folder: str | Path) -> None:
    """Copy the question's files named in `settings` (a train config's) into `folder`, beside its config."""
    for setting, name in QUESTION_FILES.items():
        source = settings.get(setting)
        if not source or not Path(source).is_file():
            continue
        copy = Path(folder) / name
        if not (copy.exists() and copy.samefile(source)):
            shutil.copyfile(source, copy)


@dataclass(frozen=True)
class TrainedQuestion:
    """The question a model folder of `inspector train` learned: the scan settings that ask it, with its files
    where they can be read here (the copy beside the config, a relative path beside it, else the recorded path)."""

    prompt: str | None = None
    prompt_file: str | None = None
    sizes: list[str] = field(default_factory=list)
    fields_file: str | None = None
    num_crops: int | None = None
    #: Files of the question found neither beside the config nor at their recorded path: setting -> that path.
    missing: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, folder: str | Path) -> TrainedQuestion | None:
        """The question of `folder`, or None when it holds no train_config.json (a model inspector did not
        train). Only the question's settings are read, so a config of another inspector version still gives it."""
        folder = Path(folder)
        path = folder / CONFIG_FILE
        if not path.is_file():
            return None
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(f"{path} cannot be read: {error}") from None
        if not isinstance(settings, dict):
            raise InputError(f"{path} is not a JSON object")
        files, missing = {}, {}
        for setting, name in QUESTION_FILES.items():
            recorded = settings.get(setting)
            if not recorded:
                files[setting] = None
                continue
            # The copy training saved; a relative path beside the config (a folder assembled by hand, e.g. the
            # demo's "fields.toml"); the recorded path itself (this is the machine that trained).
            candidates = [folder / name, folder / recorded, Path(recorded)]
            found = next((path for path in candidates if path.is_file()), None)
            files[setting] = None if found is None else str(found)
            if found is None:
                missing[setting] = str(recorded)
        return cls(
            prompt=settings.get("prompt"),
            sizes=[str(size) for size in settings.get("sizes") or []],
            num_crops=settings.get("num_crops"),
            missing=missing,
            **files,
        )

    def check_readable(self, settings: tuple[str, ...] | list[str], model: str) -> None:
        """InputError when one of these settings' files is missing."""
        for setting in settings:
            if setting in self.missing:
                raise InputError(
                    f"{model} was trained with {OPTIONS[setting]} {self.missing[setting]}, which is neither "
                    f"beside it ({QUESTION_FILES[setting]}) nor at that path: pass {OPTIONS[setting]} to ask it"
                )

    def as_prompt(self) -> Prompt:
        """The question's text, as training asked it."""
        return get_prompt(self.prompt, self.prompt_file, self.sizes or None, load_fields(self.fields_file))

    def options(self) -> str:
        """The scan options that ask this question ("--fields F --num-crops 1"; empty for the defaults)."""
        values = {
            "fields_file": self.fields_file,
            "prompt": self.prompt,
            "prompt_file": self.prompt_file,
            "sizes": ",".join(self.sizes),
            "num_crops": self.num_crops,
        }
        return " ".join(f"{OPTIONS[name]} {value}" for name, value in values.items() if value not in (None, ""))
