"""Vision-language models implemented natively in inspector, and their registration with transformers' Auto classes.

After `register()` (run by `import inspector`), `AutoConfig`, `AutoModel`, `AutoModelForCausalLM`,
`AutoModelForImageTextToText`, `AutoImageProcessor` and `AutoProcessor` `.from_pretrained(folder)` load an official
Phi-3.5-vision checkpoint folder with these classes, without `trust_remote_code` (its `auto_map` is ignored because
the model type is known locally).
"""

from __future__ import annotations

import sys

_registered = False


def _importing(module_name: str) -> bool:
    module = sys.modules.get(module_name)
    return module is not None and bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def register(*, package_ready: bool = False) -> None:
    """Register the native model families with transformers' Auto classes. Safe to call any number of times.

    `package_ready`: called from the end of `inspector.models.phi3v`'s own import, whose classes now exist."""
    global _registered
    if _registered:
        return
    if not package_ready and _importing("inspector.models.phi3v"):
        # transformers was first imported from inside our own model package (whose import triggered this
        # registration): that package calls register() again once its classes exist.
        return
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
    )

    # Without torchvision, `transformers.AutoImageProcessor` is a placeholder that raises on use; the class in its
    # module works, and its mapping is the one processors and pipelines consult.
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    from inspector.models.phi3v import (
        Phi3VConfig,
        Phi3VForConditionalGeneration,
        Phi3VImageProcessor,
        Phi3VModel,
        Phi3VProcessor,
    )

    AutoConfig.register(Phi3VConfig.model_type, Phi3VConfig, exist_ok=True)
    AutoModel.register(Phi3VConfig, Phi3VModel, exist_ok=True)
    AutoModelForCausalLM.register(Phi3VConfig, Phi3VForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(Phi3VConfig, Phi3VForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(
        Phi3VConfig, image_processor_classes={"pil": Phi3VImageProcessor}, exist_ok=True
    )
    AutoProcessor.register(Phi3VConfig, Phi3VProcessor, exist_ok=True)
    _registered = True


__all__ = ["register"]
