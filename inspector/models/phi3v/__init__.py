"""Native Phi-3.5-vision for transformers 5: configuration, model, image processor and processor."""

from __future__ import annotations

# Registering here too covers the case where importing this package is what first loaded transformers.
from inspector.models import register as _register  # noqa: E402
from inspector.models.phi3v.configuration_phi3_v import IMAGE_TOKEN_ID, STOP_TOKEN_IDS, Phi3VConfig
from inspector.models.phi3v.image_processing_phi3_v import Phi3VImageProcessor
from inspector.models.phi3v.modeling_phi3_v import (
    Phi3VForCausalLM,
    Phi3VForConditionalGeneration,
    Phi3VModel,
    Phi3VPreTrainedModel,
)
from inspector.models.phi3v.processing_phi3_v import Phi3VProcessor

_register(package_ready=True)

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
