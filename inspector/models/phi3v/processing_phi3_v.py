"""Phi-3.5-vision processor: prompts with image markers plus their images -> one padded batch for the model.

Unlike the checkpoint's original processor (one prompt per call, image positions marked with negative ids), this one
takes several prompts at once, each with its own images of any shape, and marks image positions with the ordinary
`<|image|>` token id, repeated once per image feature the model will put there. The text around the markers is
tokenised exactly as the original does (each piece on its own, with the tokenizer's special tokens, so `<s>` also
follows every image), so a single prompt gives the same ids as the original, with `<|image|>` where it put negative
ids.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from inspector.models.phi3v.image_processing_phi3_v import (
    Phi3VImageProcessor,
    Phi3VImagesKwargs,
    flatten_images,
)

IMAGE_TOKEN = "<|image|>"
"""The one placeholder token that fills every image position in `input_ids`."""

NUMBERED_MARKER = re.compile(r"<\|image_(\d+)\|>")
"""The original prompt format's marker: `<|image_1|>` for a prompt's first image, `<|image_2|>` for its second..."""

CHAT_TEMPLATE = (Path(__file__).with_name("chat_template.jinja")).read_text(encoding="utf-8")

_TEXT_OPTIONS = {"padding", "padding_side", "max_length", "pad_to_multiple_of", "truncation"}
_TEXT_OPTIONS |= {"add_special_tokens", "return_attention_mask", "return_tensors"}
_IMAGE_OPTIONS = {"num_crops", "image_mean", "image_std", "do_convert_rgb"}


class Phi3VProcessor(ProcessorMixin):
    """Wraps `Phi3VImageProcessor` and the checkpoint's tokenizer (its tokenizer.json as is).

    Call it with prompts that contain `<|image_1|>`, `<|image_2|>`, ... (numbered per prompt, in order), or bare
    `<|image|>` markers, or the output of `apply_chat_template`, and with each prompt's images.
    """

    def __init__(
        self, image_processor: Phi3VImageProcessor, tokenizer: PreTrainedTokenizerBase, chat_template=None
    ):
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE)
        if not isinstance(image_processor, Phi3VImageProcessor):
            raise TypeError(
                f"Phi3VProcessor needs a Phi3VImageProcessor, got {type(image_processor).__name__}. Check "
                "image_processor_type in preprocessor_config.json."
            )
        self.image_token = IMAGE_TOKEN
        image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if not isinstance(image_token_id, int) or image_token_id == tokenizer.unk_token_id:
            raise ValueError(
                f"The tokenizer has no {IMAGE_TOKEN} token; load the tokenizer of a Phi-3-vision checkpoint (it is "
                "token 32044 there) or add it with tokenizer.add_special_tokens."
            )
        self.image_token_id = image_token_id

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def _load_tokenizer_from_pretrained(
        cls, sub_processor_type, pretrained_model_name_or_path, subfolder="", **kwargs
    ):
        # transformers 5's LlamaTokenizer (named in the checkpoint's tokenizer_config.json) rebuilds the
        # pre-tokenizer and tokenises whitespace after special tokens differently from the checkpoint's
        # tokenizer.json, which the model was trained with; load tokenizer.json as it is instead.
        kwargs.pop("trust_remote_code", None)
        return TokenizersBackend.from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a checkpoint folder or hub id; image options such as `num_crops=16` apply to the image processor only.

        transformers hands every loading keyword to every sub-processor (5.25 and 5.17 through different internal
        paths), and a tokenizer keeps the ones it does not know in the init kwargs it saves, so the image options are
        taken out first and applied to the loaded image processor here.
        """
        image_options = {key: kwargs.pop(key) for key in list(kwargs) if key in Phi3VImagesKwargs.__annotations__}
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if image_options:
            processor.image_processor = Phi3VImageProcessor.from_dict(
                processor.image_processor.to_dict(), **image_options
            )
        return processor

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Save as a plain (no remote code) folder; the tokenizer gets the same chat template as the processor."""
        self.tokenizer.chat_template = self.chat_template
        self.tokenizer.init_kwargs.pop("auto_map", None)
        return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    # ------------------------------------------------------------------ processing

    def crop_grid(self, width: int, height: int, num_crops: int | None = None) -> tuple[int, int]:
        """(rows, cols) of 336 px crops for an image of `width` x `height` pixels (see the image processor)."""
        return self.image_processor.crop_grid(width, height, num_crops)

    def num_image_tokens(self, width: int, height: int, num_crops: int | None = None) -> int:
        """Number of `<|image|>` tokens an image of `width` x `height` pixels takes in `input_ids`."""
        return self.image_processor.num_image_tokens(width, height, num_crops)

    def __call__(
        self,
        text: str | list[str] | None = None,
        images: Any = None,
        videos: Any = None,
        audio: Any = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Tokenise prompts and process their images into one batch.

        Args:
            text: one prompt or a list of prompts.
            images: for one prompt, its image or list of images; for several prompts, a list with each prompt's list
                of images (empty or None for a prompt without images), or a flat list shared out in marker order.
            padding: True/"longest" (default), "max_length" (with `max_length`) or False.
            padding_side: "left" for generation, "right" for training; the tokenizer's setting by default.
            num_crops: most 336 px crops per image for this call (the image processor's setting by default).
            return_tensors: "pt" (default), "np" or None.
            Also max_length, pad_to_multiple_of, add_special_tokens, return_attention_mask, and image_mean,
            image_std, do_convert_rgb for the image processor (also accepted in text_kwargs/images_kwargs dicts).

        Returns:
            BatchFeature with input_ids, attention_mask and, when there are images, pixel_values (n_images,
            num_crops + 1, 3, 336, 336) and image_sizes (n_images, 2), images in prompt order.
        """
        if videos is not None or audio is not None:
            raise ValueError("Phi-3.5-vision takes images only, not videos or audio.")
        options = self._flatten_options(kwargs)
        if text is None:
            raise ValueError("Phi3VProcessor needs the prompt text (with an image marker per image).")
        prompts = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
        if prompts is None or not prompts or not all(isinstance(p, str) for p in prompts):
            raise TypeError("text must be a prompt string or a non-empty list of prompt strings.")

        pieces = [split_prompt(prompt, index) for index, prompt in enumerate(prompts)]
        images_per_prompt = assign_images(images, [len(chunks) - 1 for chunks in pieces])

        image_kwargs = {key: options.pop(key) for key in _IMAGE_OPTIONS if key in options}
        return_tensors = options.pop("return_tensors", "pt")
        flat_images = [image for prompt_images in images_per_prompt for image in prompt_images]
        image_inputs: dict[str, Any] = {}
        tokens_per_image: list[int] = []
        if flat_images:
            processed = self.image_processor(flat_images, return_tensors="pt", **image_kwargs)
            tokens_per_image = processed["num_img_tokens"]
            image_inputs = {
                "pixel_values": processed["pixel_values"],
                "image_sizes": processed["image_sizes"],
            }

        input_ids = self._build_input_ids(pieces, tokens_per_image, options.pop("add_special_tokens", True))
        if options.pop("truncation", None):
            raise ValueError(
                "truncation is not supported: it would cut image tokens. Shorten the prompt instead."
            )
        options.setdefault("padding", True)
        options.setdefault("return_attention_mask", True)
        text_inputs = self.tokenizer.pad({"input_ids": input_ids}, **options)

        data = {**text_inputs, **image_inputs}
        if return_tensors in ("np", "numpy"):
            data = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in data.items()}
        elif return_tensors not in (None, "pt", "np", "numpy"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}.")
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def _flatten_options(kwargs: dict[str, Any]) -> dict[str, Any]:
        options = dict(kwargs)
        for group in ("text_kwargs", "images_kwargs", "common_kwargs"):
            options.update(options.pop(group, None) or {})
        unknown = set(options) - _TEXT_OPTIONS - _IMAGE_OPTIONS
        if unknown:
            raise TypeError(
                f"Unsupported Phi3VProcessor option(s): {', '.join(sorted(unknown))}. Supported: "
                f"{', '.join(sorted(_TEXT_OPTIONS | _IMAGE_OPTIONS))}."
            )
        return options

    def _build_input_ids(
        self, pieces: list[list[str]], tokens_per_image: list[int], add_special_tokens: bool
    ) -> list[list[int]]:
        all_chunks = [chunk for chunks in pieces for chunk in chunks]
        chunk_ids = iter(self.tokenizer(all_chunks, add_special_tokens=add_special_tokens)["input_ids"])
        image_counts = iter(tokens_per_image)
        input_ids = []
        for chunks in pieces:
            ids: list[int] = list(next(chunk_ids))
            for _ in chunks[1:]:
                ids.extend([self.image_token_id] * next(image_counts))
                ids.extend(next(chunk_ids))
            input_ids.append(ids)
        return input_ids

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "image_sizes"]


def split_prompt(prompt: str, index: int = 0) -> list[str]:
    """Split a prompt at its image markers: n markers give n + 1 text chunks (possibly empty).

    Numbered markers must be `<|image_1|>` ... `<|image_n|>`, each once and in order; bare `<|image|>` markers are
    taken in order. A prompt may not mix the two.
    """
    numbers = [int(number) for number in NUMBERED_MARKER.findall(prompt)]
    bare = prompt.count(IMAGE_TOKEN)
    if numbers and bare:
        raise ValueError(
            f"Prompt {index} mixes <|image_N|> and {IMAGE_TOKEN} markers; use one kind: <|image_1|>, <|image_2|>, ..."
        )
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(
            f"Prompt {index} has image markers {[f'<|image_{n}|>' for n in numbers]}; they must be <|image_1|> to "
            f"<|image_{len(numbers)}|>, each once and in that order (one per image of the prompt, no gaps)."
        )
    if bare:
        return prompt.split(IMAGE_TOKEN)
    return NUMBERED_MARKER.split(prompt)[::2]


def assign_images(images: Any, markers_per_prompt: list[int]) -> list[list[Any]]:
    """Give each prompt its images, checking that every prompt has one image per marker."""
    n_prompts = len(markers_per_prompt)
    if images is None:
        per_prompt: list[list[Any]] = [[] for _ in range(n_prompts)]
    elif (
        isinstance(images, (list, tuple))
        and len(images) == n_prompts
        and all(item is None or isinstance(item, (list, tuple)) for item in images)
        and (n_prompts > 1 or isinstance(images[0], (list, tuple)))
    ):
        per_prompt = [flatten_images(item) for item in images]
    else:
        flat = flatten_images(images)
        if len(flat) != sum(markers_per_prompt):
            raise ValueError(
                f"Got {len(flat)} image(s) for prompts with {sum(markers_per_prompt)} image marker(s) in all "
                f"({markers_per_prompt} per prompt); put one <|image_N|> marker in the prompt per image."
            )
        per_prompt, start = [], 0
        for count in markers_per_prompt:
            per_prompt.append(flat[start : start + count])
            start += count
    for index, (prompt_images, count) in enumerate(zip(per_prompt, markers_per_prompt, strict=True)):
        if len(prompt_images) != count:
            raise ValueError(
                f"Prompt {index} has {count} image marker(s) but {len(prompt_images)} image(s) were given for it; "
                "put one <|image_N|> marker in the prompt per image."
            )
    return per_prompt


__all__ = ["CHAT_TEMPLATE", "IMAGE_TOKEN", "Phi3VProcessor", "assign_images", "split_prompt"]
