"""Native Phi-3.5-vision for transformers 5: configuration, model, image processor and processor."""

from __future__ import annotations

from inspector.models.phi3v.configuration_phi3_v import IMAGE_TOKEN_ID, STOP_TOKEN_IDS, Phi3VConfig
from inspector.models.phi3v.image_processing_phi3_v import Phi3VImageProcessor
from inspector.models.phi3v.modeling_phi3_v import (
    Phi3VForCausalLM,
    Phi3VForConditionalGeneration,
    Phi3VModel,
    Phi3VPreTrainedModel,
)
from inspector.models.phi3v.processing_phi3_v import Phi3VProcessor

_registered = False


def register_auto_classes() -> None:
    """Register Phi-3.5-vision with transformers' Auto classes (`inspector.models.register` calls this). Safe to
    call any number of times."""
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

    AutoConfig.register(Phi3VConfig.model_type, Phi3VConfig, exist_ok=True)
    AutoModel.register(Phi3VConfig, Phi3VModel, exist_ok=True)
    AutoModelForCausalLM.register(Phi3VConfig, Phi3VForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(Phi3VConfig, Phi3VForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(
        Phi3VConfig, image_processor_classes={"pil": Phi3VImageProcessor}, exist_ok=True
    )
    AutoProcessor.register(Phi3VConfig, Phi3VProcessor, exist_ok=True)
    _registered = True


# Registering here too covers the case where importing this package is what first loaded transformers (then the
# import hook's `inspector.models.register()` found this package half-imported and left it to us).
register_auto_classes()

__all__ = [
    "IMAGE_TOKEN_ID",
    "STOP_TOKEN_IDS",
    "Phi3VConfig",
    "Phi3VForCausalLM",
    "Phi3VForConditionalGeneration",
    "Phi3VImageProcessor",
    "Phi3VModel",
    "Phi3VPreTrainedModel",
    "Phi3VProcessor",
]
