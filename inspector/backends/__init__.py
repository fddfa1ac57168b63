"""Model backends: anything that turns (image, prompt) pairs into answers."""

from __future__ import annotations

import difflib
from pathlib import Path

from inspector.backends.base import Backend, BackendError, BackendOptions, GenerationSettings
from inspector.backends.registry import BACKENDS, BackendChoice, choose_backend, register_backend
from inspector.errors import InputError

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendChoice",
    "BackendError",
    "BackendOptions",
    "GenerationSettings",
    "backend_name",
    "check_model_reference",
    "choose_backend",
    "load_backend",
    "register_backend",
]


def backend_name(model: str) -> str:
    """Which backend `load_backend(model)` builds, without building it (what a run records before any loads)."""
    return choose_backend(model).name


def check_model_reference(model: str, option: str = "--model") -> None:
    """Refuse at once a model that names a local folder that does not exist (`models/tiny-dem`), instead of
    asking the Hugging Face hub for it (on a machine without network, half a minute of retries), and name the
    nearest folder there is. A reference reads as a folder when it starts with /, ./, ../ or ~, has more than one
    /, ends with one, or its first part is a folder here; a hub id is ORG/NAME."""
    if not model or not choose_backend(model).runs_model:
        return
    path = Path(model).expanduser()
    if path.exists():
        return
    parts = model.replace("\\", "/").split("/")
    looks_local = (
        model.startswith(("/", "./", "../", "~", ".\\"))
        or "\\" in model
        or len(parts) > 2
        or model.endswith("/")
        or (len(parts) == 2 and Path(parts[0]).expanduser().is_dir())
    )
    if not looks_local:
        return
    parent = path.parent
    hint = ""
    if parent.is_dir():
        siblings = sorted(entry.name for entry in parent.iterdir() if entry.is_dir())
        close = difflib.get_close_matches(path.name, siblings, n=1, cutoff=0.6)
        if close:
            hint = f"; did you mean {parent / close[0]}?"
    raise InputError(f"{option} {model}: no such folder{hint} (a Hugging Face model id is written ORG/NAME)")


def load_backend(model: str, options: BackendOptions | None = None) -> Backend:
    """The backend `model` names (see `inspector.backends.registry`), loaded with `options`: `fake:FILE` replays
    answers from FILE (for tests and demos); a registered name (`demo`) loads its folder; anything else is a
    Hugging Face id or folder."""
    return choose_backend(model).load(options)
