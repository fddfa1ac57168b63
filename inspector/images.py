"""Decode untrusted image bytes into a clean RGB picture that any vision-language processor accepts.

Everything that can go wrong with one file (empty, truncated, not an image, a decompression bomb, an odd colour
mode) becomes an `ImageLoadError` with a short human reason, so a scan records the failure and moves on.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from inspector.errors import ImageLoadError  # noqa: F401 - part of this module's API

#: Upscaled tiny images never get a long side beyond this (unless the original was already longer).
_MAX_UPSCALED_SIDE = 1024



def sha256_hex(data: bytes) -> str:
    """The identity of an image: the sha256 of its bytes, as 64 lower-case hex digits."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class LoadedImage:
    """A decoded image, ready for a model."""

    #: RGB, EXIF orientation applied, transparency composited on white, short side >= min_side.
    image: Image.Image
    #: Size as displayed (EXIF orientation applied), before any upscaling of tiny images.
    width: int
    height: int
    #: Pillow's format name ("JPEG", "PNG", ...), None when unknown.
    format: str | None
    n_bytes: int


def decode_image(data: bytes, *, max_pixels: int = 50_000_000, min_side: int = 28) -> LoadedImage:
    """Decode image bytes; raises only ImageLoadError.

    Truncated files fail with "truncated file" rather than loading a partly grey picture: a half-decoded product
    image would be scored as if the model had seen the whole listing. Only the first frame of an animation is
    used. Images whose header declares more than `max_pixels` pixels are rejected before any pixel is allocated.
    """
    try:
        return _decode(data, max_pixels=max_pixels, min_side=min_side)
    except ImageLoadError:
        raise
    except MemoryError:
        raise ImageLoadError("out of memory while decoding") from None
    except Exception as exc:  # any decoder bug or odd file must stay a per-image failure
        raise ImageLoadError(f"cannot decode image ({type(exc).__name__}: {exc})") from exc


def _decode(data: bytes, *, max_pixels: int, min_side: int) -> LoadedImage:
    if not data:
        raise ImageLoadError("empty file")
    with warnings.catch_warnings():
        # Pillow warns about large images, odd palettes and corrupt EXIF; we decide ourselves what is fatal.
        warnings.simplefilter("ignore")
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageLoadError(f"image too large (decompression bomb): {_bomb_size(data, exc)}") from None
        except Image.UnidentifiedImageError:
            if _looks_truncated(data):
                raise ImageLoadError("truncated file") from None
            raise ImageLoadError(_not_an_image_reason(data)) from None
        except (OSError, SyntaxError, EOFError, ValueError) as exc:
            raise ImageLoadError(_corrupt_reason(exc, data)) from None

        width, height = im.size
        if width <= 0 or height <= 0:
            raise ImageLoadError(f"invalid image size {width}x{height} px")
        if width * height > max_pixels:
            raise ImageLoadError(f"image too large (decompression bomb): {width}x{height} px")
        image_format = im.format
        try:
            im.load()
        except (OSError, SyntaxError, EOFError, ValueError) as exc:
            raise ImageLoadError(_corrupt_reason(exc, data)) from None

        im = _apply_exif_orientation(im)
        width, height = im.size
        rgb = _to_rgb(im)
    rgb = _ensure_min_side(rgb, min_side, max_pixels)
    return LoadedImage(image=rgb, width=width, height=height, format=image_format, n_bytes=len(data))


def _not_an_image_reason(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "not an image (an HTML page)"
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "not an image (SVG is not supported)"
    sample = data[:512]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 3:  # not just a multi-byte character cut at the end of the sample
            return "not an image"
        text = sample[: exc.start].decode("utf-8")
    if "".join(text.split()).isprintable():
        return "not an image (text)"
    return "not an image"


def _corrupt_reason(exc: BaseException, data: bytes) -> str:
    message = str(exc).lower()
    if isinstance(exc, EOFError) or "truncated" in message or "broken data stream" in message:
        return "truncated file"
    if _looks_truncated(data):
        return "truncated file"
    return f"corrupt image data ({exc})"


def _looks_truncated(data: bytes) -> bool:
    """True when data starts like a known format but stops short of its end (only asked after a failure)."""
    signatures = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")
    if any(len(data) < max(len(sig), 8) and sig.startswith(data[: len(sig)]) for sig in signatures):
        return True
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"IEND" not in data[-12:]
    if data.startswith(b"\xff\xd8\xff"):
        return b"\xff\xd9" not in data[-16:]
    if data.startswith(b"GIF8"):
        return not data.rstrip(b"\x00").endswith(b";")
    if data.startswith(b"RIFF"):
        return len(data) < 12 or len(data) < 8 + int.from_bytes(data[4:8], "little")
    if data.startswith(b"BM"):
        return len(data) < 6 or len(data) < int.from_bytes(data[2:6], "little")
    if data.startswith((b"II*\x00", b"MM\x00*")) and len(data) >= 8:
        order = "little" if data.startswith(b"II") else "big"
        directory = int.from_bytes(data[4:8], order)
        if len(data) < directory + 2:
            return True
        entries = int.from_bytes(data[directory : directory + 2], order)
        return len(data) < directory + 2 + 12 * entries + 4  # the first image directory is cut off
    return False


def _bomb_size(data: bytes, exc: Exception) -> str:
    """WxH of an image Pillow refused to open as a bomb, read from its header only (no pixels allocated)."""
    prefix = data[:16]
    for format_id in Image.ID:
        factory, accept = Image.OPEN[format_id]
        try:
            if accept and not accept(prefix):
                continue
            header = factory(io.BytesIO(data), "")
        except Exception:
            continue
        width, height = header.size
        header.close()
        return f"{width}x{height} px"
    match = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{match.group(1)} px" if match else "too many pixels"


def _apply_exif_orientation(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # unreadable EXIF: keep the pixels as stored rather than fail the image
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: high bit depths scaled (not clipped), transparency composited on white.

    CMYK uses Pillow's conversion (Adobe-inverted JPEGs handled), without ICC colour management.
    """
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        im = _high_depth_to_l(im)
        mode = im.mode
    has_alpha = "A" in mode or "a" in mode or "transparency" in im.info
    try:
        if has_alpha:
            rgba = im.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return im.convert("RGB")
    except ValueError:
        raise ImageLoadError(f"unsupported colour mode {mode}") from None


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey -> 8-bit grey, mapping the value range instead of clipping at 255."""
    if im.mode != "F":
        im = im.convert("I")
    low, high = im.getextrema()
    if im.mode == "I" and low >= 0 and high <= 65535:
        scale, offset = 1 / 257, 0.0  # 16-bit data: 65535 -> 255
    elif im.mode == "F" and low >= 0 and high <= 1:
        scale, offset = 255.0, 0.0  # normalised float data
    elif low >= 0 and high <= 255:
        scale, offset = 1.0, 0.0
    elif high > low:
        scale, offset = 255 / (high - low), -low * 255 / (high - low)
    else:
        scale, offset = 0.0, 0.0
    return im.point(lambda value: value * scale + offset + 0.5).convert("L")


def _ensure_min_side(im: Image.Image, min_side: int, max_pixels: int | None = None) -> Image.Image:
    """Upscale so neither side is below min_side, keeping the aspect ratio where the result stays reasonable.

    Hugging Face image processors guess the channel axis from the array shape and misread a 3-pixel-wide image
    as channels-first. Extremely long thin images keep their long side (capped) and only the short side grows.
    """
    width, height = im.size
    if min(width, height) >= min_side:
        return im
    scale = min_side / min(width, height)
    long_cap = max(width, height, _MAX_UPSCALED_SIDE)
    new_width = min(max(min_side, round(width * scale)), long_cap)
    new_height = min(max(min_side, round(height * scale)), long_cap)
    if max_pixels is not None and new_width * new_height > max_pixels:  # a 1 x 40M px strip would take GBs
        raise ImageLoadError(
            f"image too large (decompression bomb): {width}x{height} px, {new_width}x{new_height} px once "
            f"upscaled to the {min_side} px minimum side"
        )
    return im.resize((new_width, new_height), Image.Resampling.BICUBIC)


def make_thumbnail(image: Image.Image, max_side: int = 160, quality: int = 75) -> bytes:
    """A small JPEG of the image for the report (longest side max_side; a few KB)."""
    thumb = image if image.mode == "RGB" else _to_rgb(image)
    thumb = thumb.copy()
    thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()
