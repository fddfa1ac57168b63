"""A folder of bad, odd and hostile image files, for tests of anything that walks and decodes images.

`make_hostile_files(folder)` returns {path relative to folder (posix): whether it should decode}. The folder also
holds things a scan must skip without listing them (hidden files and folders, a non-image extension, a FIFO, a
symlink loop); those are not in the returned dict, so `discover([folder])` must list exactly the dict's keys.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

#: The pixel value written into the 16-bit test images, and what 8-bit value it must become (not 255: clipping).
GREY16_VALUE = 32768
GREY16_EXPECTED = 128
#: The 16-bit RGB test pixel and its expected 8-bit value.
RGB16_VALUE = (65535, 32768, 4096)
RGB16_EXPECTED = (255, 128, 16)


def picture(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    """A small deterministic picture with edges and gradients, so encoders produce realistic files."""
    width, height = size
    im = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(im)
    draw.rectangle((width // 8, height // 8, width // 2, height // 2), fill=(200, 30, 40))
    draw.ellipse((width // 2, height // 3, width - 2, height - 2), fill=(20, 90, 200))
    return im.convert(mode)


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **params)
    return out.getvalue()


def png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def png_rgb16(width: int, height: int, pixel: tuple[int, int, int]) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write these)."""
    row = b"\x00" + struct.pack(">HHH", *pixel) * width
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    idat = zlib.compress(row * height)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


@functools.cache
def png_bomb(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of width x height pixels that is only ~100 KB on disk.

    Deflate blocks that end with a full flush are independent, so one compressed slab of rows is repeated.
    """
    row = bytes(1 + (width + 7) // 8)
    rows_per_slab = 1000
    slabs, rest = divmod(height, rows_per_slab)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    slab = compressor.compress(row * rows_per_slab) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.compress(row * rest) + compressor.flush(zlib.Z_FINISH)
    checksum = 1
    for _ in range(slabs):
        checksum = zlib.adler32(row * rows_per_slab, checksum)
    checksum = zlib.adler32(row * rest, checksum)
    idat = b"\x78\xda" + slab * slabs + tail + struct.pack(">I", checksum)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def exif_rotated_jpeg() -> bytes:
    """40x20 stored, left half red and right half blue, EXIF orientation 6: displays 20x40, red on top."""
    im = Image.new("RGB", (40, 20), (230, 0, 0))
    im.paste((0, 0, 230), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(im, "JPEG", quality=95, exif=exif.tobytes())


def palette_with_transparency(fmt: str) -> bytes:
    """Palette image: index 0 transparent (must become white), index 1 pure red."""
    im = Image.new("P", (32, 32), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    ImageDraw.Draw(im).rectangle((16, 0, 31, 31), fill=1)
    return encode(im, fmt, transparency=0)


def alpha_image(mode: str, fmt: str) -> bytes:
    """Left half fully transparent black (must become white), right half opaque."""
    im = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    im.paste((0, 128, 0, 255), (16, 0, 32, 32))
    return encode(im.convert(mode), fmt)


def animated(fmt: str) -> bytes:
    """Three frames; the first is red."""
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def grey16(fmt: str) -> bytes:
    return encode(Image.new("I;16", (32, 32), GREY16_VALUE), fmt)


def truncated(data: bytes, fraction: float = 0.5) -> bytes:
    return data[: int(len(data) * fraction)]


#: name -> (bytes factory, should decode)
GOOD_FILES: dict[str, Callable[[], bytes]] = {
    "plain.jpg": lambda: encode(picture(), "JPEG"),
    "plain.png": lambda: encode(picture(), "PNG"),
    "plain.webp": lambda: encode(picture(), "WEBP"),
    "plain.bmp": lambda: encode(picture(), "BMP"),
    "plain.tiff": lambda: encode(picture(), "TIFF"),
    "UPPER_CASE.JPEG": lambda: encode(picture(), "JPEG"),
    "jpeg_named.png": lambda: encode(picture(), "JPEG"),
    "cmyk.jpg": lambda: encode(Image.new("CMYK", (32, 32), (255, 0, 0, 0)), "JPEG", quality=95),
    "cmyk.tif": lambda: encode(Image.new("CMYK", (32, 32), (255, 0, 0, 0)), "TIFF"),
    "grey16.png": lambda: grey16("PNG"),
    "grey16.tif": lambda: grey16("TIFF"),
    "rgb16.png": lambda: png_rgb16(32, 32, RGB16_VALUE),
    "float32.tif": lambda: encode(Image.new("F", (32, 32), 0.5), "TIFF"),
    "bilevel.bmp": lambda: encode(picture().convert("1"), "BMP"),
    "palette_transparent.png": lambda: palette_with_transparency("PNG"),
    "palette_transparent.gif": lambda: palette_with_transparency("GIF"),
    "rgba.png": lambda: alpha_image("RGBA", "PNG"),
    "rgba.webp": lambda: alpha_image("RGBA", "WEBP"),
    "grey_alpha.png": lambda: alpha_image("LA", "PNG"),
    "animated.gif": lambda: animated("GIF"),
    "animated.webp": lambda: animated("WEBP"),
    "animated.png": lambda: animated("PNG"),
    "exif_rotated.jpg": exif_rotated_jpeg,
    "tiny_3x2.png": lambda: encode(picture((3, 2)), "PNG"),
    "tiny_1x1.gif": lambda: encode(Image.new("P", (1, 1), 0), "GIF"),
    "wide_4000x20.png": lambda: encode(picture((4000, 20)), "PNG"),
    "tall_20x4000.jpg": lambda: encode(picture((20, 4000)), "JPEG"),
}

BAD_FILES: dict[str, Callable[[], bytes]] = {
    "empty.jpg": lambda: b"",
    "truncated.jpg": lambda: truncated(encode(picture((320, 240)), "JPEG", quality=95)),
    "truncated.png": lambda: truncated(encode(picture((320, 240)), "PNG")),
    "truncated.webp": lambda: truncated(encode(picture((320, 240)), "WEBP")),
    "not_an_image.png": lambda: b"This is a plain text file pretending to be a PNG.\n" * 4,
    "html_page.jpg": lambda: b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
    "drawing_svg.png": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
    "random_bytes.webp": lambda: random.Random(0).randbytes(4096),
    "jpeg_header_only.jpg": lambda: b"\xff\xd8\xff\xe0" + b"\x00" * 60,
    "bomb_30000x30000.png": lambda: png_bomb(30000, 30000),
    "bomb_10000x6000.png": lambda: png_bomb(10000, 6000),
}

#: Odd or hostile names (relative paths); each holds a valid small PNG.
ODD_NAMES: tuple[str, ...] = (
    "with space.png",
    "ünïcødé 画像.jpg",
    "emoji 👟.png",
    "<img src=x onerror=alert(1)>.png",
    # A folder named "<script>alert(1)<" holding "script>.png": the relative path is the full script tag.
    "<script>alert(1)</script>.png",
    "-leading-dash.png",
    "quotes '\"&amp; and $(touch pwned).png",
    "tab\tname.png",
    "new\nline.png",
    "%s%n%x format.png",
    "x" * 240 + ".png",
)

#: A file name that is not valid UTF-8 (Linux allows any bytes but "/" and NUL).
INVALID_UTF8_NAME = b"latin1 caf\xe9.png"


def make_hostile_files(folder: Path) -> dict[str, bool]:
    """Write the hostile corpus into folder; return {relative posix path: should decode}. Skips what the OS forbids."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, bool] = {}

    def write(relative: str, data: bytes, ok: bool) -> None:
        path = folder / relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except (OSError, ValueError):  # the filesystem refuses this name
            return
        expected[relative] = ok

    for name, factory in GOOD_FILES.items():
        write(name, factory(), True)
    for name, factory in BAD_FILES.items():
        write(name, factory(), False)
    valid_png = encode(picture(), "PNG")
    for name in ODD_NAMES:
        write(name, valid_png, True)
    try:
        raw = os.fsencode(folder) + b"/" + INVALID_UTF8_NAME
        with open(raw, "wb") as handle:
            handle.write(valid_png)
        expected[os.fsdecode(INVALID_UTF8_NAME)] = True
    except (OSError, ValueError):
        pass

    # A symlink whose target is missing: listed (it has an image extension) and fails to load.
    try:
        if not os.path.lexists(folder / "broken_link.png"):
            os.symlink("does-not-exist.png", folder / "broken_link.png")
        expected["broken_link.png"] = False
    except OSError:
        pass

    # Present but never listed.
    (folder / ".hidden.png").write_bytes(valid_png)
    (folder / ".hidden_folder").mkdir(exist_ok=True)
    (folder / ".hidden_folder" / "inside.png").write_bytes(valid_png)
    (folder / "notes.txt").write_text("not an image extension\n")
    if hasattr(os, "mkfifo"):
        with contextlib.suppress(OSError):
            os.mkfifo(folder / "fifo.jpg")  # reading it would block forever
    with contextlib.suppress(OSError):
        os.symlink(".", folder / "loop", target_is_directory=True)
    return expected
