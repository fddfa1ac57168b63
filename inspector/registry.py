"""Model names inspector knows besides Hugging Face ids and folders: one table, read wherever `--model` is.

`demo` is a small Phi-3.5-vision-architecture model trained from scratch on the synthetic sample cards
(`inspector.samples`) only: it ships inside the package (`inspector/demo_model/`, its README.md is the model card)
so that the demo runs offline, on CPU or GPU, and it is replaced in place when retrained. It knows nothing about
real product photos.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from inspector.errors import InputError

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo_model"

#: What a Git LFS pointer file starts with (a clone without `git lfs pull` has these instead of the weights).
_LFS_POINTER = b"version https://git-lfs"


@dataclass(frozen=True)
class RegisteredModel:
    """A model known by name, and the folder that holds it."""

    name: str
    folder: Path
    #: What it is, for --help and error messages.
    description: str

    def resolve(self) -> Path:
        """The model's folder, checked to hold a config and weights: an InputError (one line) otherwise, before
        anything slow starts."""
        if not self.folder.is_dir():
            raise InputError(
                f"--model {self.name}: its folder {self.folder} is missing (it ships inside the inspector package)"
            )
        weights = self.weight_files()
        if not (self.folder / "config.json").is_file() or not weights:
            raise InputError(
                f"--model {self.name}: {self.folder} holds no model weights (config.json and *.safetensors)"
            )
        for path in weights:
            with path.open("rb") as handle:
                if handle.read(len(_LFS_POINTER)) == _LFS_POINTER:
                    raise InputError(
                        f"--model {self.name}: {path} is a Git LFS pointer, not the weights: run `git lfs pull`"
                    )
        return self.folder

    def weight_files(self) -> list[Path]:
        return sorted(path for path in self.folder.glob("*.safetensors") if path.stat().st_size > 0)

    def revision(self) -> str:
        """A digest of the folder's config and weights. The folder is replaced in place when retrained, so the
        name alone does not say which weights answered: a run key includes this, and a scan with new weights
        starts a new run instead of resuming one of the old weights."""
        files = [self.resolve() / "config.json", *self.weight_files()]
        stats = ((str(path), path.stat()) for path in files)
        return _digest(tuple((path, st.st_ino, st.st_size, st.st_mtime_ns) for path, st in stats))


@lru_cache(maxsize=8)
def _digest(files: tuple[tuple[str, int, int, int], ...]) -> str:
    """sha256 over the files' bytes, cached per path, inode, size and mtime (a 40 MB folder costs ~0.1 s)."""
    digest = hashlib.sha256()
    for path, *_ in files:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()[:16]


#: Every registered model, by name.
MODELS: dict[str, RegisteredModel] = {
    model.name: model
    for model in (
        RegisteredModel("demo", DEMO_MODEL_DIR, "a small model trained on the synthetic sample cards only"),
    )
}


def registered(model: str) -> RegisteredModel | None:
    """The registered model of this name, or None (a Hugging Face id, a folder, `fake:FILE`)."""
    return MODELS.get(model)


def resolve_model(model: str) -> str:
    """What to load for `--model`: a registered name's folder (checked), anything else as given."""
    entry = registered(model)
    return str(entry.resolve()) if entry else model


def model_help() -> str:
    """The registered names for --model's help: "demo (a small model ...)"."""
    return ", ".join(f"{model.name} ({model.description})" for model in MODELS.values())
