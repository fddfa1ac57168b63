"""Configuration of Phi-3.5-vision (and Phi-3-vision): a Phi-3 language model plus a CLIP image encoder.

Loads the official checkpoint's ``config.json`` unmodified: its ``"su"`` rope scaling becomes transformers'
long-rope, its ``auto_map`` (remote code) and forced ``_attn_implementation`` are dropped, and the CLIP tower
defaults to ViT-L/14-336, which the checkpoint only names (``img_processor.model_name``).
"""

# No `from __future__ import annotations` here on purpose: transformers configs are strict dataclasses whose
# field types are checked at runtime, and that check is skipped when annotations are strings.

import copy
import math
from dataclasses import field
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import CLIPVisionConfig
from transformers.models.phi3.configuration_phi3 import Phi3Config

#: The CLIP ViT-L/14 at 336 px that Phi-3(.5)-vision uses; `vision_config` entries override these.
CLIP_VIT_L14_336: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "num_channels": 3,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "initializer_factor": 1.0,
}

#: The checkpoint's image-embedding settings (the only ones its code implements).
DEFAULT_EMBD_LAYER: dict[str, Any] = {
    "embedding_cls": "image",
    "hd_transform_order": "sub_glb",
    "projection_cls": "mlp",
    "use_hd_transform": True,
    "with_learnable_separator": True,
}
DEFAULT_IMG_PROCESSOR: dict[str, Any] = {
    "image_dim_out": 1024,
    "model_name": "openai/clip-vit-large-patch14-336",
    "name": "clip_vision_model",
    "num_img_tokens": 144,
}

#: `<|image|>`: the processor fills every image position of `input_ids` with it.
IMAGE_TOKEN_ID = 32044
#: Ends of a turn: `<|end|>` and `<|endoftext|>` (the checkpoint's own generation config says 2, which it never emits).
STOP_TOKEN_IDS = (32007, 32000)


def _clip_config(overrides: "dict[str, Any] | None") -> CLIPVisionConfig:
    return CLIPVisionConfig(**{**CLIP_VIT_L14_336, **(overrides or {})})


@strict
class Phi3VConfig(Phi3Config):
    """Phi-3-vision configuration: every `Phi3Config` field plus the image embedding's.

    Extra fields:
        embd_layer: image-embedding layout, as in the checkpoint (HD transform, learnable separators, `sub_glb`).
        img_processor: CLIP settings as in the checkpoint (`image_dim_out`, `num_img_tokens`, optional `layer_idx`
            of the hidden state used, default -2).
        image_token_id: the placeholder token id at image positions of `input_ids`.
        vision_config: `CLIPVisionConfig` arguments that override CLIP ViT-L/14-336 (tests build tiny towers);
            held as a `CLIPVisionConfig` after loading.
    """

    model_type = "phi3_v"
    sub_configs = {"vision_config": CLIPVisionConfig}

    embd_layer: dict | None = field(default_factory=lambda: copy.deepcopy(DEFAULT_EMBD_LAYER))
    img_processor: dict | None = field(default_factory=lambda: copy.deepcopy(DEFAULT_IMG_PROCESSOR))
    image_token_id: int = IMAGE_TOKEN_ID
    vision_config: dict | CLIPVisionConfig | None = None

    def __post_init__(self, **kwargs):
        # The checkpoint's `auto_map` names remote code we replace; saving it back would point other tools at code
        # that is not there. Its `_attn_implementation` forces flash-attention 2, which is chosen at load time instead.
        kwargs.pop("auto_map", None)
        kwargs.pop("_attn_implementation", None)
        if not isinstance(self.vision_config, CLIPVisionConfig):
            self.vision_config = _clip_config(self.vision_config)
        super().__post_init__(**kwargs)
        # Also run by the strict-dataclass validation, which wraps the error; run here first for a plain ValueError.
        self.validate_rope()
        self.validate_vision_embedding()

    def convert_rope_params_to_dict(self, default_theta=10_000.0, ignore_keys=None, **kwargs):
        """Turn the checkpoint's `rope_scaling` ("su"/"longrope", or Phi-3's "yarn") into transformers' long-rope."""
        rope_scaling = kwargs.pop("rope_scaling", None)
        if rope_scaling:
            kwargs["rope_scaling"] = self._long_rope_parameters(rope_scaling)
        return super().convert_rope_params_to_dict(
            default_theta=default_theta, ignore_keys=ignore_keys, **kwargs
        )

    def _long_rope_parameters(self, rope_scaling: dict) -> dict:
        params = dict(rope_scaling)
        kind = params.pop("type", None) or params.pop("rope_type", None)
        if kind not in ("su", "longrope", "yarn"):
            raise ValueError(
                f"rope_scaling type {kind!r} is not supported by Phi-3-vision; use 'su' (or 'longrope') with "
                "`short_factor` and `long_factor` lists, as in the official config.json."
            )
        original = self.original_max_position_embeddings
        scale = self.max_position_embeddings / original
        params["rope_type"] = "longrope"
        params["original_max_position_embeddings"] = original
        params.setdefault("factor", scale)
        if kind == "yarn" and "attention_factor" not in params:
            # Phi-3's "yarn" variant is long-rope with another attention scaling.
            params["attention_factor"] = 0.1 * math.log(scale) + 1.0 if scale > 1.0 else 1.0
        return params

    def validate_vision_embedding(self):
        """Check that the image embedding is one this implementation computes exactly."""
        embd = {**DEFAULT_EMBD_LAYER, **(self.embd_layer or {})}
        expected = {key: DEFAULT_EMBD_LAYER[key] for key in DEFAULT_EMBD_LAYER}
        unsupported = {key: embd[key] for key in expected if embd[key] != expected[key]}
        if unsupported:
            raise ValueError(
                f"embd_layer settings {unsupported} are not supported; only the Phi-3-vision layout {expected} is. "
                "Remove them from config.json."
            )
        img = {**DEFAULT_IMG_PROCESSOR, **(self.img_processor or {})}
        if img["name"] != "clip_vision_model":
            raise ValueError(f"img_processor.name must be 'clip_vision_model', got {img['name']!r}.")
        vision = self.vision_config
        if img["image_dim_out"] != vision.hidden_size:
            raise ValueError(
                f"img_processor.image_dim_out ({img['image_dim_out']}) must equal the vision tower's hidden size "
                f"({vision.hidden_size}); set both to the same value."
            )
        grid = vision.image_size // vision.patch_size
        if vision.image_size % vision.patch_size or grid % 2:
            raise ValueError(
                f"vision image_size ({vision.image_size}) must be an even multiple of patch_size "
                f"({vision.patch_size}) so patches merge 2x2."
            )
        if img["num_img_tokens"] != (grid // 2) ** 2:
            raise ValueError(
                f"img_processor.num_img_tokens ({img['num_img_tokens']}) must be ({grid}/2)^2 = {(grid // 2) ** 2} "
                f"for image_size {vision.image_size} and patch_size {vision.patch_size}."
            )
        layer_idx = img.get("layer_idx", -2)
        if not -vision.num_hidden_layers - 1 <= layer_idx <= vision.num_hidden_layers:
            raise ValueError(
                f"img_processor.layer_idx ({layer_idx}) must select one of the {vision.num_hidden_layers + 1} "
                "CLIP hidden states (-2, the second-to-last, in the checkpoint)."
            )

    @property
    def vision_feature_layer(self) -> int:
        """Index into CLIP's hidden states (embeddings first, then each layer) of the features used."""
        return (self.img_processor or {}).get("layer_idx", -2)

    @property
    def crop_size(self) -> int:
        """Side in pixels of one crop fed to CLIP (336)."""
        return self.vision_config.image_size

    @property
    def tokens_per_crop_side(self) -> int:
        """Feature rows (and columns) per crop after the 2x2 merge (12)."""
        return self.vision_config.image_size // self.vision_config.patch_size // 2

    def num_image_tokens(self, height: int, width: int) -> int:
        """Placeholder tokens for one image padded to `height` x `width` pixels: (h*w+1)*144 + 1 + (h+1)*12."""
        h, w, side = height // self.crop_size, width // self.crop_size, self.tokens_per_crop_side
        return (h * w + 1) * side * side + 1 + (h + 1) * side

    def to_diff_dict(self) -> dict[str, Any]:
        """Save only the vision settings that differ from CLIP ViT-L/14-336 (none for the official model)."""
        output = super().to_diff_dict()
        reference = _clip_config(None).to_dict()
        overrides = {
            key: value
            for key, value in self.vision_config.to_dict().items()
            if key in CLIP_VIT_L14_336 and value != reference[key]
        }
        if overrides:
            output["vision_config"] = overrides
        else:
            output.pop("vision_config", None)
        output.pop("auto_map", None)
        return output


__all__ = ["Phi3VConfig", "CLIP_VIT_L14_336", "IMAGE_TOKEN_ID", "STOP_TOKEN_IDS"]
