"""Tiny random vision-language models of real architectures, built offline in well under a second.

They exercise the real Hugging Face code path (processor, chat template, `generate`, Trainer) in tests, in CI and
for `inspector tiny-model`, where no real weights can be downloaded. Their answers are noise: they prove plumbing,
not accuracy. The tokenizer is a small byte-level BPE trained on the fly, so any text (JSON answers, prices, odd
characters) round-trips through it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from inspector.errors import InputError

FAMILIES = ("llava", "idefics3", "phi3v")

#: A chat template in the style of most instruction-tuned VLMs; images become the processor's image token.
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]


def _default_corpus() -> list[str]:
    """Text like what the tokenizer will see: prompts, JSON answers, prices, sizes."""
    from inspector.fields import ProductFields
    from inspector.prompts import BUILTIN_PROMPTS, format_answer

    texts = [p.text for p in BUILTIN_PROMPTS.values()]
    brands = ["Burberry", "Nike", "Acme", "Northwind", "Maison Lune", "Kiyo"]
    categories = ["sneakers", "handbag", "t-shirt", "dress", "cap", "watch", "scarf", "coat"]
    for i, (brand, category) in enumerate(zip(brands * 4, categories * 3, strict=False)):
        fields = ProductFields(
            brand=brand,
            title=f"{brand} {category.title()} DD{1500 + i}-10{i % 10}",
            category=category,
            price=round(19.99 + 37.5 * i, 2),
            currency=["USD", "EUR", "GBP", "JPY"][i % 4],
            size_prices={"6.5": 115.0 + i, "7.5": 120.0, "8": 125.5} if category == "sneakers" else {},
        )
        texts.append(format_answer(fields, "json"))
        texts.append(format_answer(fields, "original"))
    texts.append("0123456789 $ € £ ¥ , . : ; { } [ ] \" ' - / ( ) null true false")
    return texts


def train_tokenizer(
    extra_special_tokens: Iterable[str] = (), vocab_size: int = 600, corpus: Iterable[str] | None = None
):
    """A byte-level BPE `PreTrainedTokenizerFast` with Phi-style chat tokens, trained in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = _SPECIAL_TOKENS + [t for t in extra_special_tokens if t not in _SPECIAL_TOKENS]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus) if corpus is not None else _default_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={},
    )
    fast.add_special_tokens({"additional_special_tokens": special[4:]})
    fast.chat_template = _CHAT_TEMPLATE
    return fast


def _llama_text_config(tokenizer, max_positions: int, **overrides) -> dict:
    """A 2-layer Llama decoder config for `tokenizer` (the text half of the tiny LLaVA and Idefics3)."""
    return {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": max_positions,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **overrides,
    }


def build_tiny_llava(
    folder: Path,
    seed: int = 0,
    *,
    tokenizer=None,
    image_size: int = 28,
    patch: int = 7,
    text: dict | None = None,
    vision: dict | None = None,
    max_positions: int = 512,
) -> Path:
    """A LLaVA (CLIP tower + Llama decoder) with its processor, saved to `folder`: 2 layers each by default;
    `text`/`vision` override the decoder's and the tower's sizes (benchmarks build bigger ones)."""
    import torch
    from transformers import (
        AutoModelForImageTextToText,
        LlavaConfig,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = tokenizer or train_tokenizer(["<image>"])
    config = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch,
            "projection_dim": 32,
            **(vision or {}),
        },
        text_config=_llama_text_config(tokenizer, max_positions, **(text or {})),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        num_additional_image_tokens=1,  # CLIP's CLS position, dropped again by the "default" strategy
        vision_feature_select_strategy="default",
        chat_template=_CHAT_TEMPLATE,
    )
    return _save(folder, model, processor)


def build_tiny_idefics3(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Idefics3 (SigLIP-style tower + Llama decoder) with its processor, saved to `folder`."""
    import torch
    from transformers import (
        AutoModelForImageTextToText,
        Idefics3Config,
        Idefics3Processor,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tokenizer = train_tokenizer(["<image>", "<fake_token_around_image>", "<global-img>"])
    image_size, patch, scale = 32, 8, 2
    image_seq_len = (image_size // patch) ** 2 // (scale**2)
    config = Idefics3Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch,
        },
        text_config=_llama_text_config(tokenizer, 1024),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 2 * image_size},
        max_image_size={"longest_edge": image_size},
        do_image_splitting=True,
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=_CHAT_TEMPLATE,
    )
    return _save(folder, model, processor)


def build_tiny_phi3v(folder: Path, seed: int = 0, tokenizer_dir: Path | None = None) -> Path:
    """A 2-layer native Phi-3.5-vision. Uses the real tokenizer files when `tokenizer_dir` is given."""
    from inspector.models.phi3v.tiny import save_tiny_phi3v

    return save_tiny_phi3v(Path(folder), tokenizer_dir=tokenizer_dir, seed=seed)


def build_tiny_model(family: str, folder: Path, seed: int = 0, **kwargs) -> Path:
    """Build and save a tiny random VLM of `family` (one of FAMILIES) into `folder`; returns the folder."""
    builders = {"llava": build_tiny_llava, "idefics3": build_tiny_idefics3, "phi3v": build_tiny_phi3v}
    if family not in builders:
        raise InputError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    return builders[family](Path(folder), seed=seed, **kwargs)


def _save(folder: Path, model, processor) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "INSPECTOR_TINY_MODEL.json").write_text(
        json.dumps({"note": "random weights, built by inspector.tiny for tests; answers are noise"})
    )
    return folder
