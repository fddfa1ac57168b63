"""Phi-3.5-vision image processor: the HD transform that turns one picture into a grid of 336 px crops.

Each image is resized (keeping its aspect ratio) so that its width, or its height for tall images, spans a whole
number of 336 px crops, padded with white to whole crops, and normalised with the CLIP mean/std. The model sees a
global 336x336 view of the whole padded picture first, then the crops row by row; every image is padded with zero
crops to `num_crops + 1` so that images of different shapes stack into one tensor. `image_sizes` keeps the real
(padded) height and width so the model knows which crops are real.

The arithmetic (float ratio, `int()` truncation, centred white padding rounded down at the top, PIL bilinear resize,
bicubic global view on the normalised tensor) follows the checkpoint's original processor exactly, so that
`pixel_values` agree with it to float precision.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_transforms import to_pil_image
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, load_image
from transformers.processing_utils import ImagesKwargs

CROP_SIZE = 336
"""Side in pixels of one crop: the CLIP ViT-L/14-336 input size."""


class Phi3VImagesKwargs(ImagesKwargs, total=False):
    """Per-call options of `Phi3VImageProcessor` on top of transformers' common image options."""

    num_crops: int | None
    num_img_tokens: int | None


def _largest_scale(ratio: float, num_crops: int) -> int:
    """Largest s such that an s-crops-wide row layout of an image of aspect `ratio` (>= 1) fits `num_crops` crops."""
    scale = 1
    while scale * math.ceil(scale / ratio) <= num_crops:
        scale += 1
    return scale - 1


def _landscape_layout(width: int, height: int, num_crops: int) -> tuple[int, int, int]:
    """For an image with width >= height: (resized width, resized height, padded rows of crops)."""
    ratio = width / height
    scale = _largest_scale(ratio, num_crops)
    new_width = scale * CROP_SIZE
    # `max(1, ...)` only matters for images more than 336*num_crops times wider than tall, which the original code
    # cannot process at all (it would resize to zero pixels).
    new_height = max(1, int(new_width / ratio))
    rows = -(-new_height // CROP_SIZE)
    return new_width, new_height, rows


class Phi3VImageProcessor(BaseImageProcessor):
    """Image processor of Phi-3.5-vision (`image_processor_type` "Phi3VImageProcessor" in the checkpoint).

    Args:
        num_crops: most 336 px crops per image (4 in Phi-3.5-vision, 16 in Phi-3-vision); overridable per call.
        num_img_tokens: image tokens per crop after the 2x2 merge of CLIP's 24x24 patches (144 = 12x12).
        image_mean, image_std: normalisation, CLIP's by default.
        do_convert_rgb: convert every image to RGB first (the model only takes 3 channels).
    """

    model_input_names = ["pixel_values", "image_sizes"]
    valid_kwargs = Phi3VImagesKwargs

    def __init__(
        self,
        num_crops: int = 4,
        num_img_tokens: int = 144,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        do_convert_rgb: bool = True,
        **kwargs: Any,
    ) -> None:
        # The checkpoint's preprocessor_config.json names its remote-code classes; we never save that back.
        kwargs.pop("auto_map", None)
        super().__init__(**kwargs)
        self.num_crops = self._check_num_crops(num_crops)
        tokens_per_row = math.isqrt(num_img_tokens)
        if num_img_tokens <= 0 or tokens_per_row * tokens_per_row != num_img_tokens:
            raise ValueError(
                f"num_img_tokens must be a positive square (tokens of a square grid per crop, 144 for "
                f"Phi-3.5-vision), got {num_img_tokens}. Fix num_img_tokens in preprocessor_config.json."
            )
        self.num_img_tokens = num_img_tokens
        self.image_mean = list(image_mean) if image_mean is not None else list(OPENAI_CLIP_MEAN)
        self.image_std = list(image_std) if image_std is not None else list(OPENAI_CLIP_STD)
        self.do_convert_rgb = do_convert_rgb

    @staticmethod
    def _check_num_crops(num_crops: Any) -> int:
        if isinstance(num_crops, bool) or not isinstance(num_crops, int) or num_crops < 1:
            raise ValueError(
                f"num_crops must be a positive integer (4 for Phi-3.5-vision), got {num_crops!r}."
            )
        return num_crops

    # ------------------------------------------------------------------ geometry (no pixels needed)

    def crop_grid(self, width: int, height: int, num_crops: int | None = None) -> tuple[int, int]:
        """(rows, cols) of 336 px crops that an image of `width` x `height` pixels is turned into.

        Images with the same grid give `pixel_values` of the same real size, so a scan can batch them together.
        """
        num_crops = self._check_num_crops(self.num_crops if num_crops is None else num_crops)
        if width < 1 or height < 1:
            raise ValueError(f"Image size must be positive, got {width}x{height}.")
        if width < height:
            new_width, _, rows = _landscape_layout(height, width, num_crops)
            return new_width // CROP_SIZE, rows
        new_width, _, rows = _landscape_layout(width, height, num_crops)
        return rows, new_width // CROP_SIZE

    def num_image_tokens(self, width: int, height: int, num_crops: int | None = None) -> int:
        """Number of `<|image|>` tokens the model needs for an image of `width` x `height` pixels."""
        rows, cols = self.crop_grid(width, height, num_crops)
        return self._tokens_for_grid(rows, cols)

    def _tokens_for_grid(self, rows: int, cols: int) -> int:
        # Crops' features plus the global view's, one separator between them, and one separator per feature row
        # (rows*sqrt(n) rows for the crops, sqrt(n) rows for the global view).
        tokens_per_row = math.isqrt(self.num_img_tokens)
        return (rows * cols + 1) * self.num_img_tokens + 1 + (rows + 1) * tokens_per_row

    # ------------------------------------------------------------------ pixels

    def hd_transform(self, image: Image.Image, num_crops: int | None = None) -> Image.Image:
        """Resize and white-pad an RGB PIL image onto its crop grid (the returned image is rows*336 x cols*336)."""
        num_crops = self._check_num_crops(self.num_crops if num_crops is None else num_crops)
        transposed = image.width < image.height
        if transposed:
            image = image.transpose(Image.Transpose.TRANSPOSE)
        new_width, new_height, rows = _landscape_layout(image.width, image.height, num_crops)
        resized = image.resize((new_width, new_height), resample=Image.Resampling.BILINEAR)
        padded_height = rows * CROP_SIZE
        if padded_height != new_height:
            canvas = Image.new("RGB", (new_width, padded_height), (255, 255, 255))
            canvas.paste(resized, (0, (padded_height - new_height) // 2))
            resized = canvas
        if transposed:
            resized = resized.transpose(Image.Transpose.TRANSPOSE)
        return resized

    def _to_rgb_pil(self, image: Any, do_convert_rgb: bool) -> Image.Image:
        if isinstance(image, os.PathLike):
            image = os.fspath(image)
        if isinstance(image, str):
            image = load_image(image)
        elif isinstance(image, (np.ndarray, torch.Tensor)):
            image = to_pil_image(image)
        elif not isinstance(image, Image.Image):
            raise TypeError(
                f"Unsupported image type {type(image).__name__}: pass PIL images, numpy arrays, torch tensors, or "
                "paths to image files."
            )
        if image.width < 1 or image.height < 1:
            raise ValueError(f"Image has no pixels ({image.width}x{image.height}).")
        if do_convert_rgb and image.mode != "RGB":
            image = image.convert("RGB")
        # The model takes exactly 3 channels whatever do_convert_rgb says (as the original processor does).
        return image if image.mode == "RGB" else image.convert("RGB")

    def _pixel_tensor(self, image: Image.Image, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """(3, H, W) float32 normalised pixels, computed like torchvision's ToTensor + Normalize."""
        array = np.asarray(image, dtype=np.uint8)
        pixels = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return pixels.sub_(mean[:, None, None]).div_(std[:, None, None])

    def preprocess(
        self,
        images: Any,
        num_crops: int | None = None,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        do_convert_rgb: bool | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Turn one image or a (possibly nested) list of images into model inputs.

        Returns a BatchFeature with `pixel_values` float32 (n_images, num_crops + 1, 3, 336, 336), global view
        first and zero crops last; `image_sizes` int64 (n_images, 2), the padded (height, width) in pixels; and
        `num_img_tokens`, a list with each image's number of image tokens.
        """
        unknown = set(kwargs) - set(Phi3VImagesKwargs.__annotations__)
        if unknown:
            raise TypeError(f"Unexpected argument(s) for Phi3VImageProcessor: {', '.join(sorted(unknown))}.")
        num_crops = self._check_num_crops(self.num_crops if num_crops is None else num_crops)
        do_convert_rgb = self.do_convert_rgb if do_convert_rgb is None else do_convert_rgb
        mean = torch.as_tensor(self.image_mean if image_mean is None else image_mean, dtype=torch.float32)
        std = torch.as_tensor(self.image_std if image_std is None else image_std, dtype=torch.float32)
        mean, std = mean.expand(3), std.expand(3)

        flat = flatten_images(images)
        if not flat:
            raise ValueError("No images given: pass at least one image.")

        pixel_values = torch.zeros(len(flat), num_crops + 1, 3, CROP_SIZE, CROP_SIZE, dtype=torch.float32)
        image_sizes = []
        num_img_tokens = []
        for index, raw in enumerate(flat):
            hd_image = self.hd_transform(self._to_rgb_pil(raw, do_convert_rgb), num_crops)
            pixels = self._pixel_tensor(hd_image, mean, std)
            height, width = pixels.shape[1:]
            rows, cols = height // CROP_SIZE, width // CROP_SIZE
            # The global view is the whole padded picture squeezed to one crop (bicubic, on normalised values).
            pixel_values[index, 0] = F.interpolate(pixels[None], size=(CROP_SIZE, CROP_SIZE), mode="bicubic")[
                0
            ]
            crops = pixels.reshape(3, rows, CROP_SIZE, cols, CROP_SIZE).permute(1, 3, 0, 2, 4)
            pixel_values[index, 1 : 1 + rows * cols] = crops.reshape(rows * cols, 3, CROP_SIZE, CROP_SIZE)
            image_sizes.append([height, width])
            num_img_tokens.append(self._tokens_for_grid(rows, cols))

        data = {
            "pixel_values": pixel_values,
            "image_sizes": torch.tensor(image_sizes, dtype=torch.int64),
            "num_img_tokens": num_img_tokens,
        }
        if return_tensors in ("np", "numpy"):
            data["pixel_values"] = data["pixel_values"].numpy()
            data["image_sizes"] = data["image_sizes"].numpy()
        elif return_tensors not in (None, "pt", "pytorch") and str(return_tensors) != "TensorType.PYTORCH":
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}.")
        return BatchFeature(data=data)

    def __call__(self, images: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("auto_map", None)
        return output


def flatten_images(images: Any) -> list[Any]:
    """One image, a list of images, or a list of per-prompt lists of images -> flat list in order."""
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        flat: list[Any] = []
        for item in images:
            flat.extend(flatten_images(item))
        return flat
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images]


__all__ = ["CROP_SIZE", "Phi3VImageProcessor", "Phi3VImagesKwargs", "flatten_images"]
