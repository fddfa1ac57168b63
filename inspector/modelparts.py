"""Where the parts of a vision-language model are: its vision tower and projector, and its language model's linears.

Shared by inference (`inspector.speedups` quantizes the language linears) and training (`inspector.training.methods`
freezes the vision part and adapts the language linears with LoRA). The vision part is found by the module names the
transformers families (and inspector's native Phi-3.5-vision) use for it.
"""

from __future__ import annotations

#: Module names of vision towers and the projectors that feed their features to the language model.
VISION_MODULE_NAMES: tuple[str, ...] = (
    "vision_tower",  # LLaVA family, Gemma 3, PaliGemma
    "vision_model",  # Idefics 2/3, SmolVLM, Mllama
    "vision_embed_tokens",  # Phi-3.5-vision (CLIP tower + img_projection)
    "visual",  # Qwen2-VL / Qwen2.5-VL
    "multi_modal_projector",  # LLaVA family
    "connector",  # Idefics3 / SmolVLM
    "image_newline",  # LLaVA-NeXT
)


def vision_modules(model) -> dict[str, object]:
    """Outermost modules named like a vision tower or projector, by qualified name."""
    found: dict[str, object] = {}
    for name, module in model.named_modules():
        if not name or name.rsplit(".", 1)[-1] not in VISION_MODULE_NAMES:
            continue
        if any(name.startswith(outer + ".") for outer in found):
            continue
        found[name] = module
    return found


def language_linear_names(model) -> list[str]:
    """Qualified names of the linear layers of the language model: outside the vision part, not the output head."""
    import torch

    vision = tuple(name + "." for name in vision_modules(model))
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head and not name.startswith(vision)
    ]
