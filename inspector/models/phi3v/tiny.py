"""A tiny random Phi-3.5-vision: the real architecture at toy size, for tests, CI and plumbing benchmarks.

Two text layers of width 64 and a two-layer CLIP of width 32 at the real 336 px crop size, so image token counts,
the HD transform and the Phi-3.5 tokenizer (vocabulary 32064) are those of the official model. Answers are noise.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from inspector.models.phi3v.configuration_phi3_v import Phi3VConfig

#: Files of the official checkpoint folder that AutoProcessor reads (copied verbatim, `auto_map` included).
PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.jinja",
    "chat_template.json",
)

TINY_TEXT: dict[str, Any] = {
    "vocab_size": 32064,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 131072,
    "original_max_position_embeddings": 4096,
    "sliding_window": 262144,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 32000,
    "tie_word_embeddings": False,
}
TINY_VISION: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 336,
    "patch_size": 14,
}


def _rope_scaling(head_dim: int) -> dict[str, Any]:
    """Long-rope ("su") factors in the checkpoint's format, one per rotary frequency (head_dim / 2)."""
    count = head_dim // 2
    return {
        "type": "su",
        "short_factor": [1.0 + 0.25 * i for i in range(count)],
        "long_factor": [1.0 + 4.0 * i for i in range(count)],
    }


def tiny_phi3v_config_dict(**overrides: Any) -> dict[str, Any]:
    """The tiny model's configuration as the official config.json would write it (`rope_scaling` "su").

    Keys override the tiny defaults; `vision_config` and `img_processor` dicts merge into theirs, and
    `img_processor.image_dim_out` follows the vision width unless given.
    """
    overrides = copy.deepcopy(overrides)
    vision = {**TINY_VISION, **(overrides.pop("vision_config", None) or {})}
    img_processor = {
        "image_dim_out": vision["hidden_size"],
        "model_name": "openai/clip-vit-large-patch14-336",
        "name": "clip_vision_model",
        "num_img_tokens": (vision["image_size"] // vision["patch_size"] // 2) ** 2,
        **(overrides.pop("img_processor", None) or {}),
    }
    text = {**TINY_TEXT, **overrides}
    text.setdefault("rope_scaling", _rope_scaling(text["hidden_size"] // text["num_attention_heads"]))
    return {**text, "vision_config": vision, "img_processor": img_processor}


def tiny_phi3v_config(**overrides: Any) -> Phi3VConfig:
    """A tiny Phi-3.5-vision config (see `tiny_phi3v_config_dict` for the overrides)."""
    return Phi3VConfig(**tiny_phi3v_config_dict(**overrides))


def save_tiny_phi3v(
    folder: str | Path,
    tokenizer_dir: str | Path | None = None,
    seed: int = 0,
    original_format: bool = False,
    **overrides: Any,
) -> Path:
    """Write a loadable tiny model folder: config, seeded random float32 weights, generation config.

    With `tokenizer_dir` (the official checkpoint's files, e.g. ../shared/phi35v) its tokenizer and processor files
    are copied too, so `AutoProcessor.from_pretrained(folder)` works. With `original_format` the config.json and
    generation_config.json are written the way the official checkpoint has them (`rope_scaling` "su", `auto_map` to
    remote code, forced flash-attention, eos 2), to test loading unmodified checkpoint folders.
    """
    from inspector.models.phi3v.modeling_phi3_v import Phi3VForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_dict = tiny_phi3v_config_dict(**overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Phi3VForConditionalGeneration(Phi3VConfig(**config_dict))
    model.save_pretrained(folder)
    if original_format:
        _write_original_format(folder, config_dict)
    if tokenizer_dir is not None:
        for name in PROCESSOR_FILES:
            source = Path(tokenizer_dir) / name
            if source.is_file():
                shutil.copyfile(source, folder / name)
    return folder


def _write_original_format(folder: Path, config_dict: dict[str, Any]) -> None:
    # `vision_config` is our extension (the official tower is fixed); the tiny tower needs it.
    original = dict(config_dict)
    original.update(
        {
            "_name_or_path": "Phi-3.5-vision-instruct",
            "architectures": ["Phi3VForCausalLM"],
            "auto_map": {
                "AutoConfig": "configuration_phi3_v.Phi3VConfig",
                "AutoModelForCausalLM": "modeling_phi3_v.Phi3VForCausalLM",
            },
            "embd_layer": {
                "embedding_cls": "image",
                "hd_transform_order": "sub_glb",
                "projection_cls": "mlp",
                "use_hd_transform": True,
                "with_learnable_separator": True,
            },
            "model_type": "phi3_v",
            "rope_theta": 10000.0,
            "torch_dtype": "float32",
            "transformers_version": "4.38.1",
            "_attn_implementation": "flash_attention_2",
        }
    )
    (folder / "config.json").write_text(json.dumps(original, indent=2))
    generation = {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 32000}
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2))
