"""Vision-language models implemented natively in inspector, and their registration with transformers' Auto classes.

After `register()` (run by `import inspector`), `AutoConfig`, `AutoModel`, `AutoModelForCausalLM`,
`AutoModelForImageTextToText`, `AutoImageProcessor` and `AutoProcessor` `.from_pretrained(folder)` load an official
Phi-3.5-vision checkpoint folder with these classes, without `trust_remote_code` (its `auto_map` is ignored because
the model type is known locally).
"""

from __future__ import annotations

import sys


def _importing(module_name: str) -> bool:
    module = sys.modules.get(module_name)
    return module is not None and bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def register() -> None:
    """Register the native model families with transformers' Auto classes. Safe to call any number of times.

    Each family registers its own classes (`inspector.models.phi3v.register_auto_classes`), so that no family
    imports this package back."""
    if _importing("inspector.models.phi3v"):
        # transformers was first imported from inside our own model package (whose import triggered this
        # registration): that package registers itself once its classes exist.
        return
    from inspector.models.phi3v import register_auto_classes

    register_auto_classes()


__all__ = ["register"]
