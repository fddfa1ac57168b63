"""Model backends: anything that turns (image, prompt) pairs into answers."""

from __future__ import annotations

import difflib
from pathlib import Path

from inspector.backends.base import Backend, BackendError, GenerationSettings
from inspector.errors import InputError

__all__ = [
    "Backend",
    "BackendError",
    "GenerationSettings",
    "backend_name",
    "check_model_reference",
    "load_backend",
]


def backend_name(model: str) -> str:
    """Which backend `load_backend(model)` builds, without building it (what a run records before any loads)."""
    return "fake" if model.startswith("fake:") else "hf"


def check_model_reference(model: str, option: str = "--model") -> None:
    """Refuse at once a model that names a local folder that does not exist (`models/tiny-dem`), instead of
    asking the Hugging Face hub for it (on a machine without network, half a minute of retries), and name the
    nearest folder there is. A reference reads as a folder when it starts with /, ./, ../ or ~, has more than one
    /, ends with one, or its first part is a folder here; a hub id is ORG/NAME."""
    if backend_name(model) == "fake" or not model:
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


def load_backend(
    model: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    num_crops: int | None = None,
    fuse: str = "auto",
    quantize: str = "none",
) -> Backend:
    """`fake:FILE` replays answers from FILE (for tests and demos); a registered name (`demo`) loads its folder;
    anything else is a Hugging Face id or folder."""
    if backend_name(model) == "fake":
        from inspector.backends.fake import FakeBackend

        return FakeBackend.from_file(model.removeprefix("fake:"))
    from inspector.backends.hf import HFBackend
    from inspector.registry import resolve_model

    return HFBackend(
        resolve_model(model),
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        attn_implementation=attn_implementation,
        num_crops=num_crops,
        fuse=fuse,
        quantize=quantize,
    )
