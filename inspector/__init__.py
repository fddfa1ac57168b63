"""inspector: check product images with a vision-language model and compare the answers with the catalogue.

Importing inspector registers its native model types (Phi-3.5-vision, `phi3_v`) with transformers' Auto classes,
so that `AutoConfig`, `AutoProcessor` and `AutoModelForImageTextToText` `.from_pretrained(folder)` load such
checkpoints without remote code. The registration happens as soon as transformers is imported (at once if it
already is), so that the parts of inspector that need no model (parsing, store, report) import in milliseconds.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"


def _register_native_models() -> None:
    try:
        from inspector.models import register
    except ImportError:  # torch or transformers missing: the pure-Python parts still work
        return
    register()


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Runs `_register_native_models` right after the `transformers` package finishes importing."""

    def find_spec(self, name, path, target=None):
        if name != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _register_native_models()

    def __getattr__(self, name):  # resource readers and friends
        return getattr(self._loader, name)


if "transformers" in sys.modules:
    _register_native_models()
elif not any(isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterImport())
