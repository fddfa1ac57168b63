"""Vision-language models implemented natively in inspector, and their registration with transformers' Auto classes.

After `register()` (run by `import inspector`), `AutoConfig`, `AutoModel`, `AutoModelForCausalLM`,
`AutoModelForImageTextToText`, `AutoImageProcessor` and `AutoProcessor` `.from_pretrained(folder)` load an official
Phi-3.5-vision checkpoint folder with these classes, without `trust_remote_code` (its `auto_map` is ignored because
the model type is known locally).
"""

from __future__ import annotations

_registered = False


def register() -> None:
    """Register the native model families with transformers' Auto classes. Safe to call any number of times."""
    global _registered
    if _registered:
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
