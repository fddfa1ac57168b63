"""Backends by name: the one table that turns `--model` into the backend that runs it.

Like lmms-eval's `@register_model` or simonw/llm's `register_models`: a backend is a loader function registered
under a name, optionally with a scheme (`--model fake:FILE` picks the backend whose scheme is `fake`). A reference
without a scheme (a Hugging Face id, a folder, a registered model name such as `demo` from `inspector.registry`)
goes to the default backend, `hf`. Nothing outside this module looks at a model reference's prefix: it asks
`choose_backend(model)`. A new backend is one more `@register_backend` function here (see
docs/architecture.md, "Backends").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inspector.backends.base import Backend, BackendOptions
from inspector.errors import InputError
from inspector.registry import RegisteredModel, registered, resolve_model

#: A backend's loader: (the reference without its scheme, the backend settings) -> a loaded backend.
Loader = Callable[[str, BackendOptions], Backend]

#: `SCHEME:REST`: a scheme is a word of two or more characters (a one-letter one is a Windows drive, `C:\`),
#: not followed by `//` (a URL is not a backend choice).
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9_.+-]+):(?!//)")


@dataclass(frozen=True)
class BackendEntry:
    """One registered backend."""

    name: str
    load: Loader
    #: `--model SCHEME:REST` picks this backend; None for the default backend (references without a scheme).
    scheme: str | None
    #: How `--model` names it, for help and errors: "fake:FILE (answers replayed from FILE)".
    description: str
    #: Whether it loads a real model (weights on a device); the fake backend only replays answers, so there is no
    #: device to check, no folder to look for and no training question to read.
    runs_model: bool = True


@dataclass(frozen=True)
class BackendChoice:
    """What `--model` picked: the backend, the reference it loads, and the registered model it names, if any."""

    entry: BackendEntry
    #: The reference without the scheme: the fake answers file, or a Hugging Face id, folder or registered name.
    target: str
    registered: RegisteredModel | None = None

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def runs_model(self) -> bool:
        return self.entry.runs_model

    def load(self, options: BackendOptions | None = None) -> Backend:
        return self.entry.load(self.target, options or BackendOptions())


#: Every backend, by name.
BACKENDS: dict[str, BackendEntry] = {}

#: The backend of references without a scheme.
DEFAULT_BACKEND = "hf"


def register_backend(
    name: str, *, scheme: str | None = None, description: str, runs_model: bool = True
) -> Callable[[Loader], Loader]:
    """Register `load` as backend `name`; `scheme` makes `--model SCHEME:REST` pick it."""

    def decorate(load: Loader) -> Loader:
        if name in BACKENDS:
            raise ValueError(f"backend {name!r} is registered twice")
        if scheme is not None and any(entry.scheme == scheme for entry in BACKENDS.values()):
            raise ValueError(f"backend scheme {scheme!r} is registered twice")
        BACKENDS[name] = BackendEntry(name, load, scheme, description, runs_model)
        return load

    return decorate


def choose_backend(model: str) -> BackendChoice:
    """The backend `model` names, without loading anything. An unknown scheme (`vllm:x` before that backend
    exists) is an InputError naming the known ones, unless `model` is an existing path (a folder `a:b`)."""
    match = _SCHEME.match(model)
    if match:
        by_scheme = {entry.scheme: entry for entry in BACKENDS.values() if entry.scheme}
        entry = by_scheme.get(match.group(1))
        if entry is not None:
            return BackendChoice(entry, model[match.end() :])
        if not _exists(model):
            raise InputError(f"--model {model}: unknown backend {match.group(1)!r}; use {backends_help()}")
    return BackendChoice(BACKENDS[DEFAULT_BACKEND], model, registered(model))


def _exists(path: str) -> bool:
    try:
        return Path(path).expanduser().exists()
    except OSError:  # a name too long to look up is no folder
        return False


def backends_help() -> str:
    """How `--model` names each backend: "fake:FILE (...), or a Hugging Face id or folder (...)"."""
    with_scheme = [entry.description for entry in BACKENDS.values() if entry.scheme]
    return ", ".join(with_scheme + [f"or {BACKENDS[DEFAULT_BACKEND].description}"])


@register_backend("hf", description="a Hugging Face id or model folder (transformers)")
def _load_hf(target: str, options: BackendOptions) -> Backend:
    from inspector.backends.hf import HFBackend

    return HFBackend(resolve_model(target), **options.as_kwargs())


@register_backend(
    "fake", scheme="fake", description="fake:FILE (answers replayed from FILE, for tests and demos)", runs_model=False
)
def _load_fake(target: str, options: BackendOptions) -> Backend:
    from inspector.backends.fake import FakeBackend

    return FakeBackend.from_file(target)
