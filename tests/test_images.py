"""Decoding untrusted image bytes: every odd file decodes to a usable RGB picture or fails with a clear reason."""

from __future__ import annotations

import hashlib
import io
import random

import hostile
import pytest
from PIL import Image, ImageFile

from inspector.images import ImageLoadError, LoadedImage, decode_image, make_thumbnail, sha256_hex


def pixel(loaded: LoadedImage, x_fraction: float, y_fraction: float) -> tuple[int, int, int]:
    image = loaded.image
    return image.getpixel((int(x_fraction * (image.width - 1)), int(y_fraction * (image.height - 1))))


def close(actual, expected, tolerance: int = 6) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def test_sha256_hex_is_the_sha256_of_the_bytes():
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_hex(b"") == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("name", sorted(hostile.GOOD_FILES))
def test_odd_but_valid_files_decode_to_rgb(name):
    data = hostile.GOOD_FILES[name]()
    loaded = decode_image(data)
    assert loaded.image.mode == "RGB"
    assert min(loaded.image.size) >= 28
    assert loaded.n_bytes == len(data)
    assert loaded.format in {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}
    if min(loaded.width, loaded.height) >= 28:
        assert loaded.image.size == (loaded.width, loaded.height)


BAD_REASONS = {
    "empty.jpg": "empty file",
    "truncated.jpg": "truncated file",
    "truncated.png": "truncated file",
    "truncated.webp": "truncated file",
    "not_an_image.png": "not an image (text)",
    "html_page.jpg": "not an image (an HTML page)",
    "drawing_svg.png": "not an image (SVG is not supported)",
    "random_bytes.webp": "not an image",
    "jpeg_header_only.jpg": "truncated file",
    "bomb_30000x30000.png": "image too large (decompression bomb): 30000x30000 px",
    "bomb_10000x6000.png": "image too large (decompression bomb): 10000x6000 px",
}


def test_every_bad_file_has_an_expected_reason():
    assert set(BAD_REASONS) == set(hostile.BAD_FILES)


@pytest.mark.parametrize("name", sorted(hostile.BAD_FILES))
def test_bad_files_fail_with_a_short_reason(name):
    with pytest.raises(ImageLoadError) as failure:
        decode_image(hostile.BAD_FILES[name]())
    assert str(failure.value) == BAD_REASONS[name]


@pytest.mark.parametrize("name", ["bomb_30000x30000.png", "bomb_10000x6000.png"])
def test_decompression_bombs_are_rejected_before_any_pixel_is_decoded(name, monkeypatch):
    def refuse(self):
        raise AssertionError("pixels of a decompression bomb were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        decode_image(hostile.BAD_FILES[name]())


def test_bomb_files_are_real_valid_images():
    # The generator makes genuine PNGs, not broken headers: a smaller one decodes completely.
    loaded = decode_image(hostile.png_bomb(3000, 2500))
    assert (loaded.width, loaded.height) == (3000, 2500)
    assert loaded.image.getpixel((2999, 2499)) == (0, 0, 0)
    assert len(hostile.png_bomb(30000, 30000)) < 200_000


def test_max_pixels_is_configurable():
    data = hostile.encode(hostile.picture((100, 100)), "PNG")
    with pytest.raises(ImageLoadError, match=r"100x100 px"):
        decode_image(data, max_pixels=5000)
    assert decode_image(data, max_pixels=10_000).width == 100


def test_cmyk_becomes_the_right_rgb_colour():
    for name in ("cmyk.jpg", "cmyk.tif"):
        loaded = decode_image(hostile.GOOD_FILES[name]())
        assert close(pixel(loaded, 0.5, 0.5), (0, 255, 255)), name  # pure cyan


def test_16_bit_grey_is_scaled_not_clipped():
    for name in ("grey16.png", "grey16.tif"):
        loaded = decode_image(hostile.GOOD_FILES[name]())
        expected = hostile.GREY16_EXPECTED
        assert close(pixel(loaded, 0.5, 0.5), (expected,) * 3, tolerance=1), name


def test_16_bit_rgb_keeps_its_colour():
    loaded = decode_image(hostile.GOOD_FILES["rgb16.png"]())
    assert close(pixel(loaded, 0.5, 0.5), hostile.RGB16_EXPECTED, tolerance=1)


def test_float_image_in_0_1_is_scaled_to_8_bit():
    loaded = decode_image(hostile.GOOD_FILES["float32.tif"]())
    assert close(pixel(loaded, 0.5, 0.5), (128, 128, 128), tolerance=1)


def test_32_bit_integer_image_is_stretched_to_its_range():
    im = Image.new("I", (32, 32), 0)
    im.paste(1_000_000, (16, 0, 32, 32))
    loaded = decode_image(hostile.encode(im, "TIFF"))
    assert pixel(loaded, 0.1, 0.5) == (0, 0, 0)
    assert pixel(loaded, 0.9, 0.5) == (255, 255, 255)


@pytest.mark.parametrize("name", ["palette_transparent.png", "palette_transparent.gif"])
def test_palette_transparency_is_composited_on_white(name):
    loaded = decode_image(hostile.GOOD_FILES[name]())
    assert pixel(loaded, 0.2, 0.5) == (255, 255, 255)
    assert pixel(loaded, 0.8, 0.5) == (255, 0, 0)


@pytest.mark.parametrize(
    ("name", "opaque"),
    [("rgba.png", (0, 128, 0)), ("rgba.webp", (0, 128, 0)), ("grey_alpha.png", (75, 75, 75))],
)
def test_alpha_is_composited_on_white(name, opaque):
    loaded = decode_image(hostile.GOOD_FILES[name]())
    assert close(pixel(loaded, 0.2, 0.5), (255, 255, 255), tolerance=3)
    assert close(pixel(loaded, 0.8, 0.5), opaque, tolerance=3)


@pytest.mark.parametrize("name", ["animated.gif", "animated.webp", "animated.png"])
def test_animations_give_their_first_frame(name):
    loaded = decode_image(hostile.GOOD_FILES[name]())
    assert close(pixel(loaded, 0.5, 0.5), (255, 0, 0))


def test_exif_orientation_is_applied():
    loaded = decode_image(hostile.exif_rotated_jpeg())
    assert (loaded.width, loaded.height) == (20, 40)  # stored 40x20, displayed rotated
    assert loaded.image.width < loaded.image.height
    assert close(pixel(loaded, 0.5, 0.1), (230, 0, 0), tolerance=30)
    assert close(pixel(loaded, 0.5, 0.9), (0, 0, 230), tolerance=30)


def test_corrupt_exif_does_not_fail_the_image():
    data = hostile.encode(
        hostile.picture(), "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff garbage"
    )
    assert decode_image(data).width == 64


def test_tiny_images_are_upscaled_keeping_the_aspect_ratio():
    loaded = decode_image(hostile.GOOD_FILES["tiny_3x2.png"]())
    assert (loaded.width, loaded.height) == (3, 2)
    assert loaded.image.size == (42, 28)
    one = decode_image(hostile.GOOD_FILES["tiny_1x1.gif"]())
    assert one.image.size == (28, 28)


def test_min_side_is_configurable():
    loaded = decode_image(hostile.GOOD_FILES["tiny_3x2.png"](), min_side=10)
    assert loaded.image.size == (15, 10)
    assert decode_image(hostile.encode(hostile.picture((64, 48)), "PNG"), min_side=10).image.size == (64, 48)


@pytest.mark.parametrize(
    ("name", "expected"), [("wide_4000x20.png", (4000, 28)), ("tall_20x4000.jpg", (28, 4000))]
)
def test_extreme_aspect_ratios_get_no_side_below_min_side(name, expected):
    loaded = decode_image(hostile.GOOD_FILES[name]())
    assert loaded.image.size == expected


def test_long_thin_images_do_not_explode_when_upscaled():
    loaded = decode_image(hostile.encode(Image.new("RGB", (20_000, 1), (9, 9, 9)), "PNG"))
    assert loaded.image.size == (20_000, 28)


def test_content_decides_the_format_not_the_extension():
    assert decode_image(hostile.GOOD_FILES["jpeg_named.png"]()).format == "JPEG"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_truncation_fails_as_truncated(fmt):
    data = hostile.encode(hostile.picture((120, 90)), fmt)
    # Cutting only the last few bytes of a PNG (IEND) or GIF (trailer) loses no pixels: those may decode.
    for cut in [*range(1, 40), *range(40, len(data) - 32, max(1, len(data) // 60))]:
        with pytest.raises(ImageLoadError) as failure:
            decode_image(data[:cut])
        if fmt != "TIFF":  # a TIFF cut inside its tag data is indistinguishable from a corrupt one
            assert str(failure.value) == "truncated file", cut
    with pytest.raises(ImageLoadError, match="^truncated file$"):
        decode_image(data[: len(data) // 2])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_random_corruption_never_raises_anything_but_image_load_error(fmt):
    data = hostile.encode(hostile.picture((80, 60)), fmt)
    rng = random.Random(fmt)
    for _ in range(60):
        corrupted = bytearray(data)
        for _ in range(rng.randint(1, 12)):
            corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
        try:
            loaded = decode_image(bytes(corrupted))
        except ImageLoadError as exc:
            assert str(exc)
        else:
            assert loaded.image.mode == "RGB"


def test_unexpected_decoder_errors_become_image_load_errors(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(Image, "open", broken)
    with pytest.raises(ImageLoadError, match=r"cannot decode image \(RuntimeError: decoder exploded\)"):
        decode_image(b"\x89PNG\r\n\x1a\n")


def test_thumbnail_is_a_small_jpeg():
    card = Image.open(io.BytesIO(hostile.encode(hostile.picture((800, 600)), "PNG")))
    thumb = make_thumbnail(card)
    decoded = Image.open(io.BytesIO(thumb))
    assert decoded.format == "JPEG"
    assert decoded.size == (160, 120)
    assert len(thumb) < 8000
    assert make_thumbnail(card, max_side=64).startswith(b"\xff\xd8")
    assert Image.open(io.BytesIO(make_thumbnail(card, max_side=64))).size == (64, 48)


def test_thumbnail_accepts_any_mode_and_never_upscales():
    rgba = Image.new("RGBA", (10, 6), (0, 0, 0, 0))
    decoded = Image.open(io.BytesIO(make_thumbnail(rgba)))
    assert decoded.size == (10, 6)
    assert close(decoded.getpixel((5, 3)), (255, 255, 255), tolerance=3)


def test_long_thin_strips_past_max_pixels_once_upscaled_are_bombs():
    strip = hostile.encode(Image.new("L", (1, 400_000), 128), "PNG")  # a few KB; 28 x 400,000 px once upscaled
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        decode_image(strip, max_pixels=1_000_000)
    assert decode_image(strip, max_pixels=20_000_000).image.size == (28, 400_000)
