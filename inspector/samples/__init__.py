"""Synthetic e-commerce listing cards with a matching catalogue CSV: the sample images and training data.

Each card shows a product picture drawn from simple shapes in the product's colour (its category is told only by
the picture: the word is never printed; the colour is in the catalogue's ``colour`` column, declared for
``--fields`` in the fields.toml written next to it), a brand, a title, a price in one of several currencies and formats, a product code and, for
sneakers, a size/price table. Output is byte-identical for the same seed: only Pillow's built-in font
(`ImageFont.load_default(size=...)`) is used and every random choice comes from seeded generators.

The sample folder's catalogue (seed 0, `generate_samples`) also carries `PLANTED_ERRORS`: a few rows made wrong
on purpose, for the demo to find. Training data (`generate_dataset`) is always what the cards show.

Run `inspector samples OUT_DIR [-n 36] [--seed 0] [--dataset]` (or `python -m inspector.samples ...`) to generate a
folder.
"""

from __future__ import annotations

import csv
import functools
import math
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from inspector.errors import InputError

CATEGORIES: tuple[str, ...] = (
    "sneakers",
    "handbag",
    "t-shirt",
    "dress",
    "cap",
    "watch",
    "sunglasses",
    "trench coat",
    "scarf",
    "backpack",
)
#: Categories whose listings carry a size/price table.
SIZED_CATEGORIES = frozenset({"sneakers"})
CURRENCIES: tuple[str, ...] = ("USD", "EUR", "GBP", "JPY")
#: Card sizes, cycled: each gives Phi-3.5-vision a different crop grid.
CARD_SIZES: tuple[tuple[int, int], ...] = ((640, 640), (800, 600), (600, 900), (1000, 500))
SHOE_SIZES: tuple[str, ...] = (
    "5",
    "5.5",
    "6",
    "6.5",
    "7",
    "7.5",
    "8",
    "8.5",
    "9",
    "9.5",
    "10",
    "10.5",
    "11",
    "12",
)
#: The original Burberry dataset's column names, so the truth CSV exercises column auto-detection.
CSV_COLUMNS: tuple[str, ...] = (
    "local_image_path",
    "title",
    "brand",
    "category3_code",
    "full_price",
    "currency_code",
    "product_code",
    "size_prices",
    "colour",
)
SAVE_OPTIONS: dict[str, tuple[str, dict]] = {
    "jpg": ("JPEG", {"quality": 85}),
    "jpeg": ("JPEG", {"quality": 85}),
    "png": ("PNG", {"compress_level": 6}),
    "webp": ("WEBP", {"quality": 80, "method": 2}),
}

BRANDS: tuple[str, ...] = (
    "Northwind",
    "Aurelia",
    "Castellan",
    "Maison Verre",
    "Kestrel & Co",
    "Halden",
    "Obsidian Row",
    "Saffron Lane",
    "Tidewater",
    "Marlowe & Finch",
    "Vireo",
    "Ashgrove",
    "Bellamy",
    "Corvin",
    "Elmstead",
    "Quillon",
)
# Title words never name or hint at the category: the category must come from the picture.
MODEL_NAMES: tuple[str, ...] = (
    "Aster",
    "Harlow",
    "Kensington",
    "Belgrave",
    "Chelsea",
    "Orion",
    "Solene",
    "Ardent",
    "Wren",
    "Calder",
    "Juno",
    "Linden",
    "Sable",
    "Tamsin",
    "Vale",
    "Brixton",
    "Mayfair",
    "Rowan",
    "Sienna",
    "Holloway",
    "Astor",
    "Camden",
    "Delphine",
    "Everly",
)
DESCRIPTORS: tuple[str, ...] = (
    "Classic",
    "Heritage",
    "Signature",
    "Essential",
    "Archive",
    "Studio",
    "Edition",
    "Icon",
    "Original",
    "Select",
    "Atelier",
    "No. 7",
    "Limited",
    "Vintage",
    "Modern",
    "Luxe",
)
COLOURS: dict[str, tuple[int, int, int]] = {
    "Black": (34, 34, 38),
    "Navy": (30, 44, 88),
    "Camel": (193, 154, 107),
    "Burgundy": (128, 26, 50),
    "Olive": (108, 112, 50),
    "Red": (204, 36, 44),
    "Stone": (200, 192, 176),
    "Grey": (128, 128, 134),
    "Pink": (232, 138, 170),
    "Teal": (22, 128, 128),
    "Mustard": (214, 162, 34),
    "Brown": (112, 70, 40),
    "Cobalt": (40, 82, 200),
    "Forest Green": (34, 100, 62),
    "Lilac": (176, 146, 210),
    "Orange": (236, 120, 32),
}
#: The shifted world's brands and colours (`World.shifted()`): none is drawn by default, so a model that learned the
#: default cards has never seen them.
SHIFTED_BRANDS: tuple[str, ...] = (
    "Larkspur",
    "Fenwick & Rye",
    "Ondine",
    "Gallant",
    "Peregrine",
    "Moorcroft",
    "Selkie Row",
    "Tarrant",
    "Juniper Vale",
    "Brackley",
)
SHIFTED_COLOURS: dict[str, tuple[int, int, int]] = {
    "Ivory": (236, 230, 212),
    "Plum": (94, 40, 86),
    "Sky Blue": (120, 180, 226),
    "Rust": (170, 74, 30),
    "Mint": (150, 214, 180),
    "Charcoal": (58, 60, 66),
}


#: Every colour a card can be painted in, by name.
PAINTS: dict[str, tuple[int, int, int]] = {**COLOURS, **SHIFTED_COLOURS}


@dataclass(frozen=True)
class World:
    """Where cards are drawn from: the brands and the product colours (names of `PAINTS`). The default is the
    sample world; `World.shifted()` has brands and colours that the default never draws (for measuring how a model
    adapts to a catalogue it was not trained on). Everything else (categories, prices, layouts) is shared."""

    brands: tuple[str, ...] = BRANDS
    colours: tuple[str, ...] = tuple(COLOURS)

    @classmethod
    def shifted(cls) -> World:
        return cls(SHIFTED_BRANDS, tuple(SHIFTED_COLOURS))


WORLDS: dict[str, Callable[[], World]] = {"default": World, "shifted": World.shifted}

CARD_BACKGROUNDS = ((255, 255, 255), (250, 249, 246), (246, 247, 250), (252, 250, 245))
PICTURE_BACKGROUNDS = ((238, 238, 240), (242, 236, 228), (228, 236, 242), (236, 242, 234), (246, 238, 240))
METALS = ((192, 192, 198), (212, 175, 80), (60, 60, 64))
CODE_LABELS = ("Item", "Product code:", "Ref.", "SKU", "Art. no.", "Style")
BADGES = ("NEW IN", "BESTSELLER", "ONLINE EXCLUSIVE", "LIMITED STOCK", "JUST LANDED")
FOOTERS = (
    "Free delivery & returns",
    "In stock - ships in 2-3 days",
    "Members earn double points",
    "Gift wrap available",
)
_EXCHANGE_RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 150.0}
#: Price presentation styles per currency; "{n}" is the number in US style, "{e}" in European style.
PRICE_STYLES: dict[str, tuple[str, ...]] = {
    "USD": ("${n}", "US${n}", "USD {n}", "{n} USD"),
    "EUR": ("€{n}", "{e} €", "EUR {e}", "{e} EUR", "€ {e}"),
    "GBP": ("£{n}", "GBP {n}", "£ {n}", "{n} GBP"),
    "JPY": ("¥{n}", "JPY {n}", "¥ {n}", "{n} JPY"),
}


@dataclass
class SampleProduct:
    """The facts on one card; exactly what truth.csv records about it."""

    file_name: str
    brand: str
    title: str
    category: str
    price: float
    currency: str
    product_code: str
    #: size -> price, sizes as in ProductFields ("6.5", "8"); empty for unsized categories.
    size_prices: dict[str, float] = field(default_factory=dict)
    #: Colour name of the product in the picture (also used in some titles).
    colour: str = "Black"
    #: (width, height) of the card in pixels.
    card_size: tuple[int, int] = (640, 640)


# ----------------------------------------------------------------------------------------------- products


def make_products(
    n: int, seed: int, *, formats: Sequence[str] = ("jpg", "png", "webp"), world: World | None = None
) -> list[SampleProduct]:
    """n products with balanced categories (shuffled in blocks), unique codes, sizes and formats cycled; brands and
    colours from `world` (default: the sample world).

    Prefix-stable: the first k products of make_products(n, seed) are make_products(k, seed) (file-name width
    aside, which grows past 999 products).
    """
    if n < 0:
        raise InputError(f"n must be >= 0, got {n}")
    formats = _check_formats(formats)
    world = world or World()
    digits = max(3, len(str(n)))
    category_rng = random.Random(f"inspector-categories:{seed}")
    categories: list[str] = []
    while len(categories) < n:
        block = list(CATEGORIES)
        category_rng.shuffle(block)
        categories.extend(block)
    codes: set[str] = set()
    products = []
    for index in range(n):
        rng = random.Random(f"inspector-product:{seed}:{index}")
        category = categories[index]
        code = str(rng.randrange(10_000_000, 100_000_000))
        while code in codes:
            code = str(rng.randrange(10_000_000, 100_000_000))
        codes.add(code)
        colour = rng.choice(world.colours)
        title = f"{rng.choice(MODEL_NAMES)} {rng.choice(DESCRIPTORS)}"
        if rng.random() < 0.5:
            title += f" in {colour}"
        currency = rng.choices(CURRENCIES, weights=(35, 30, 20, 15))[0]
        price = _nice_price(math.exp(rng.uniform(math.log(25), math.log(2500))), currency, rng)
        size_prices = _size_prices(price, currency, rng) if category in SIZED_CATEGORIES else {}
        if size_prices:
            price = min(size_prices.values())
        ext = formats[index % len(formats)]
        products.append(
            SampleProduct(
                file_name=f"{index + 1:0{digits}d}_{code}.{ext}",
                brand=rng.choice(world.brands),
                title=title,
                category=category,
                price=price,
                currency=currency,
                product_code=code,
                size_prices=size_prices,
                colour=colour,
                card_size=CARD_SIZES[index % len(CARD_SIZES)],
            )
        )
    return products


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    checked = tuple(fmt.lower().lstrip(".") for fmt in formats)
    unknown = [fmt for fmt in checked if fmt not in SAVE_OPTIONS]
    if not checked or unknown:
        raise InputError(f"formats must be some of {', '.join(SAVE_OPTIONS)}; got {list(formats)}")
    return checked


def _nice_price(usd: float, currency: str, rng: random.Random) -> float:
    value = usd * _EXCHANGE_RATES[currency]
    if currency == "JPY":
        return float(max(100, round(value, -2)))
    whole = max(5, round(value, -1) if value > 200 else round(value))
    ending = rng.choices((0.0, 0.5, -0.05, -0.01), weights=(70, 10, 10, 10))[0]
    return round(whole + ending, 2)


def _size_prices(price: float, currency: str, rng: random.Random) -> dict[str, float]:
    sizes = sorted(rng.sample(SHOE_SIZES, rng.randint(3, 5)), key=float)
    if currency == "JPY":
        step = 500.0 if price < 30_000 else 1000.0
    else:
        step = 5.0 if price < 300 else 10.0 if price < 1000 else 25.0
    offsets = rng.sample(range(0, 8), len(sizes))  # distinct, so every size has its own price
    return {size: round(price + offset * step, 2) for size, offset in zip(sizes, offsets, strict=True)}


def format_amount(value: float, currency: str, european: bool = False) -> str:
    """1290.0 -> "1,290.00" (or "1.290,00" European); JPY has no decimals."""
    text = f"{value:,.0f}" if currency == "JPY" else f"{value:,.2f}"
    if european:
        text = text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    return text


def format_price(value: float, currency: str, style: str) -> str:
    return style.format(n=format_amount(value, currency), e=format_amount(value, currency, european=True))


# ----------------------------------------------------------------------------------------------- drawing


@functools.lru_cache(maxsize=128)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


#: The built-in font has no €, £ or ¥ glyph: these are drawn as strokes, this wide (in font sizes).
_SYMBOL_ADVANCE = 0.62
_SYMBOLS = "€£¥"


@dataclass(frozen=True)
class _Glyph:
    """One rendered character: an L mask placed at (pen x + dx, baseline + dy), then the pen moves by advance."""

    mask: Image.Image | None
    dx: int
    dy: int
    advance: float


@functools.lru_cache(maxsize=16384)
def _glyph(char: str, size: int, bold: bool) -> _Glyph:
    """Glyphs are rendered once and pasted many times: per-string FreeType rendering dominated card time."""
    if char in _SYMBOLS:
        return _symbol_glyph(char, size, bold)
    font = _font(size)
    stroke = max(1, round(size / 30)) if bold else 0
    left, top, right, bottom = font.getbbox(char, anchor="ls", stroke_width=stroke)
    advance = font.getlength(char)
    if right <= left or bottom <= top:
        return _Glyph(None, 0, 0, advance)
    mask = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(mask).text(
        (-left, -top), char, font=font, fill=255, anchor="ls", stroke_width=stroke, stroke_fill=255
    )
    return _Glyph(mask, left, top, advance)


def _symbol_glyph(symbol: str, size: int, bold: bool) -> _Glyph:
    cap = -_font(size).getbbox("H", anchor="ls")[1]
    advance = _SYMBOL_ADVANCE * size
    line = max(1, round(size * (0.1 if bold else 0.075)))
    mask = Image.new("L", (round(advance) + 2 * line, cap + 2 * line), 0)
    draw = ImageDraw.Draw(mask)
    x, baseline = line, cap + line  # origin of the symbol inside the mask
    width = advance * 0.85
    top, mid = baseline - cap, baseline - cap / 2
    if symbol == "€":
        radius = cap / 2
        centre_x = x + width * 0.58
        draw.arc(
            (centre_x - radius, mid - radius, centre_x + radius, mid + radius), 45, 315, fill=255, width=line
        )
        for dy in (-0.13 * cap, 0.13 * cap):
            draw.line((x, mid + dy, centre_x + radius * 0.1, mid + dy), fill=255, width=line)
    elif symbol == "£":
        bowl = cap * 0.55
        stem_x = x + width * 0.35
        draw.arc((stem_x, top, stem_x + bowl, top + bowl), 180, 330, fill=255, width=line)
        draw.line((stem_x, top + bowl / 2, stem_x, baseline - line), fill=255, width=line)
        draw.line(
            (x + width * 0.08, mid + cap * 0.05, x + width * 0.75, mid + cap * 0.05), fill=255, width=line
        )
        draw.line(
            (x + width * 0.08, baseline - line / 2, x + width, baseline - line / 2), fill=255, width=line
        )
    else:  # ¥
        centre_x = x + width / 2
        draw.line((x + width * 0.05, top, centre_x, mid + cap * 0.05), fill=255, width=line)
        draw.line((x + width * 0.95, top, centre_x, mid + cap * 0.05), fill=255, width=line)
        draw.line((centre_x, mid, centre_x, baseline), fill=255, width=line)
        for dy in (0.12 * cap, 0.34 * cap):
            draw.line((x + width * 0.12, mid + dy, x + width * 0.88, mid + dy), fill=255, width=line)
    return _Glyph(mask, -line, -baseline, advance)


@functools.lru_cache(maxsize=4096)
def _text_width(text: str, size: int, bold: bool = False) -> float:
    return sum(_glyph(char, size, bold).advance for char in text)


def _draw_text(card: Image.Image, x: float, baseline: float, text: str, size: int, fill, bold=False) -> None:
    """Text left-aligned on a baseline, with the built-in font (and stroked €, £, ¥ which it lacks)."""
    baseline = round(baseline)
    for char in text:
        glyph = _glyph(char, size, bold)
        if glyph.mask is not None:
            card.paste(fill, (round(x) + glyph.dx, baseline + glyph.dy), glyph.mask)
        x += glyph.advance


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """factor < 1 darkens, > 1 lightens towards white."""
    if factor <= 1:
        return tuple(round(c * factor) for c in colour)  # type: ignore[return-value]
    return tuple(round(c + (255 - c) * (factor - 1)) for c in colour)  # type: ignore[return-value]


def _luminance(colour: tuple[int, int, int]) -> float:
    red, green, blue = colour
    return 0.299 * red + 0.587 * green + 0.114 * blue


class _Pen:
    """Draws in unit coordinates (0..1) inside a square of the card, optionally mirrored left-right."""

    def __init__(self, card: Image.Image, x0: float, y0: float, side: float, mirror: bool) -> None:
        self.card, self.draw = card, ImageDraw.Draw(card)
        self.x0, self.y0, self.side, self.mirror = x0, y0, side, mirror
        self.outline_width = max(2, round(side * 0.012))

    def x(self, u: float) -> float:
        return self.x0 + (1 - u if self.mirror else u) * self.side

    def y(self, v: float) -> float:
        return self.y0 + v * self.side

    def points(self, pts: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(self.x(u), self.y(v)) for u, v in pts]

    def box(self, u0: float, v0: float, u1: float, v1: float) -> tuple[float, float, float, float]:
        left, right = sorted((self.x(u0), self.x(u1)))
        return (left, self.y(v0), right, self.y(v1))

    def width(self, w: float) -> int:
        return max(1, round(w * self.side))

    def polygon(self, pts, fill, outline=None) -> None:
        self.draw.polygon(self.points(pts), fill=fill, outline=outline, width=self.outline_width)

    def ellipse(self, u0, v0, u1, v1, fill=None, outline=None, width: float | None = None) -> None:
        line = self.width(width) if width else self.outline_width
        self.draw.ellipse(self.box(u0, v0, u1, v1), fill=fill, outline=outline, width=line)

    def rounded(self, u0, v0, u1, v1, radius: float, fill, outline=None) -> None:
        self.draw.rounded_rectangle(
            self.box(u0, v0, u1, v1),
            radius=radius * self.side,
            fill=fill,
            outline=outline,
            width=self.outline_width,
        )

    def line(self, pts, fill, width: float) -> None:
        self.draw.line(self.points(pts), fill=fill, width=self.width(width), joint="curve")

    def arc(self, u0, v0, u1, v1, start: float, end: float, fill, width: float) -> None:
        if self.mirror:  # reflect the angles about the vertical axis
            start, end = 180 - end, 180 - start
        self.draw.arc(self.box(u0, v0, u1, v1), start, end, fill=fill, width=self.width(width))

    def chord(self, u0, v0, u1, v1, start: float, end: float, fill, outline=None) -> None:
        if self.mirror:
            start, end = 180 - end, 180 - start
        self.draw.chord(
            self.box(u0, v0, u1, v1), start, end, fill=fill, outline=outline, width=self.outline_width
        )

    def textile(self, pts, colour, accent, pattern: str | None, outline) -> None:
        """A polygon filled with a plain colour, stripes or a check."""
        if pattern is None:
            self.polygon(pts, fill=colour, outline=outline)
            return
        size = (math.ceil(self.side) + 1,) * 2
        mask = Image.new("L", size, 0)
        local = [(x - self.x0, y - self.y0) for x, y in self.points(pts)]
        ImageDraw.Draw(mask).polygon(local, fill=255)
        fabric = Image.new("RGB", size, colour)
        draw = ImageDraw.Draw(fabric)
        step = max(6, round(self.side * 0.07))
        band = max(2, step // 5)  # thin bands: the base colour (the one a title may name) stays dominant
        for offset in range(0, size[0], step):
            draw.rectangle((0, offset, size[0], offset + band), fill=accent)
            if pattern == "check":
                draw.rectangle((offset, 0, offset + band, size[1]), fill=accent)
        self.card.paste(fabric, (round(self.x0), round(self.y0)), mask)
        self.draw.polygon(self.points(pts), outline=outline, width=self.outline_width)


@dataclass
class _Look:
    """Colours and finishes of one product picture."""

    colour: tuple[int, int, int]
    accent: tuple[int, int, int]
    outline: tuple[int, int, int]
    metal: tuple[int, int, int]
    pattern: str | None


def _draw_sneakers(pen: _Pen, look: _Look, rng: random.Random) -> None:
    sole = rng.choice(((246, 246, 244), (182, 122, 64), (40, 40, 44)))
    pen.polygon(
        [(0.06, 0.60), (0.93, 0.60), (0.96, 0.65), (0.93, 0.72), (0.08, 0.72), (0.05, 0.66)],
        fill=sole,
        outline=look.outline,
    )
    upper = [(0.08, 0.61), (0.08, 0.40), (0.12, 0.30), (0.22, 0.27), (0.30, 0.33), (0.40, 0.40), (0.55, 0.44)]
    upper += [(0.72, 0.47), (0.86, 0.51), (0.93, 0.57), (0.93, 0.61)]
    pen.polygon(upper, fill=look.colour, outline=look.outline)
    pen.polygon(
        [(0.74, 0.61), (0.75, 0.49), (0.86, 0.51), (0.93, 0.57), (0.93, 0.61)], fill=_shade(look.colour, 1.35)
    )
    pen.ellipse(0.12, 0.27, 0.30, 0.35, fill=_shade(look.colour, 0.4), outline=look.outline)
    pen.polygon(
        [(0.28, 0.56), (0.64, 0.46), (0.68, 0.50), (0.34, 0.59)], fill=look.accent, outline=look.outline
    )
    pen.rounded(0.065, 0.38, 0.11, 0.58, 0.01, fill=look.accent, outline=look.outline)
    lace = (250, 250, 250) if _luminance(look.colour) < 150 else (40, 40, 40)
    for i in range(4):
        pen.line(
            [(0.36 + i * 0.07, 0.36 + i * 0.022), (0.42 + i * 0.07, 0.43 + i * 0.022)], fill=lace, width=0.014
        )


def _draw_handbag(pen: _Pen, look: _Look, rng: random.Random) -> None:
    pen.arc(0.30, 0.12, 0.70, 0.60, 180, 360, fill=_shade(look.colour, 0.6), width=0.035)
    pen.polygon(
        [(0.16, 0.38), (0.84, 0.38), (0.90, 0.84), (0.10, 0.84)], fill=look.colour, outline=look.outline
    )
    flap = [(0.16, 0.38), (0.84, 0.38), (0.81, 0.58), (0.50, 0.65), (0.19, 0.58)]
    pen.polygon(flap, fill=_shade(look.colour, 0.8), outline=look.outline)
    pen.rounded(0.45, 0.58, 0.55, 0.68, 0.015, fill=look.metal, outline=look.outline)
    for u in (0.16, 0.80):
        pen.ellipse(u, 0.83, u + 0.04, 0.87, fill=look.metal)


def _draw_tshirt(pen: _Pen, look: _Look, rng: random.Random) -> None:
    body = [(0.36, 0.16), (0.22, 0.20), (0.04, 0.36), (0.14, 0.48), (0.25, 0.41), (0.25, 0.86), (0.75, 0.86)]
    body += [(0.75, 0.41), (0.86, 0.48), (0.96, 0.36), (0.78, 0.20), (0.64, 0.16), (0.58, 0.21), (0.50, 0.23)]
    body += [(0.42, 0.21)]
    pen.textile(body, look.colour, look.accent, look.pattern, look.outline)
    pen.line(
        [(0.37, 0.17), (0.43, 0.225), (0.50, 0.245), (0.57, 0.225), (0.63, 0.17)],
        fill=look.accent,
        width=0.02,
    )
    if look.pattern is None and rng.random() < 0.6:
        pen.ellipse(0.42, 0.38, 0.58, 0.54, fill=look.accent, outline=look.outline)


def _draw_dress(pen: _Pen, look: _Look, rng: random.Random) -> None:
    pen.line([(0.41, 0.08), (0.40, 0.20)], fill=look.outline, width=0.015)
    pen.line([(0.59, 0.08), (0.60, 0.20)], fill=look.outline, width=0.015)
    body = [(0.38, 0.18), (0.45, 0.23), (0.55, 0.23), (0.62, 0.18), (0.60, 0.44), (0.85, 0.90), (0.15, 0.90)]
    body += [(0.40, 0.44)]
    pen.textile(body, look.colour, look.accent, look.pattern, look.outline)
    pen.polygon(
        [(0.40, 0.43), (0.60, 0.43), (0.61, 0.48), (0.39, 0.48)], fill=look.accent, outline=look.outline
    )
    for u in (0.30, 0.50, 0.70):
        pen.line([(0.5, 0.50), (u, 0.88)], fill=_shade(look.colour, 0.75), width=0.006)


def _draw_cap(pen: _Pen, look: _Look, rng: random.Random) -> None:
    pen.polygon(
        [(0.58, 0.55), (0.96, 0.60), (0.93, 0.67), (0.58, 0.62)],
        fill=_shade(look.colour, 0.7),
        outline=look.outline,
    )
    pen.chord(0.14, 0.26, 0.74, 0.86, 180, 360, fill=look.colour, outline=look.outline)
    pen.rounded(0.13, 0.53, 0.75, 0.60, 0.01, fill=look.accent, outline=look.outline)
    for u in (0.30, 0.44, 0.58):
        pen.line([(0.44, 0.27), (u, 0.54)], fill=_shade(look.colour, 0.65), width=0.008)
    pen.ellipse(0.40, 0.23, 0.48, 0.29, fill=look.accent, outline=look.outline)


def _draw_watch(pen: _Pen, look: _Look, rng: random.Random) -> None:
    pen.rounded(0.40, 0.03, 0.60, 0.36, 0.03, fill=look.colour, outline=look.outline)
    pen.rounded(0.40, 0.64, 0.60, 0.97, 0.03, fill=look.colour, outline=look.outline)
    for v in (0.76, 0.83, 0.90):
        pen.ellipse(0.485, v, 0.515, v + 0.03, fill=_shade(look.colour, 0.45))
    pen.rounded(0.73, 0.46, 0.79, 0.54, 0.01, fill=look.metal, outline=look.outline)
    pen.ellipse(0.25, 0.25, 0.75, 0.75, fill=look.metal, outline=look.outline)
    face = rng.choice(((250, 250, 248), (24, 28, 40), (236, 226, 200)))
    ink = (20, 20, 20) if _luminance(face) > 128 else (240, 240, 240)
    pen.ellipse(0.30, 0.30, 0.70, 0.70, fill=face, outline=_shade(look.metal, 0.7))
    for hour in range(12):
        angle = hour * math.pi / 6
        inner = 0.15 if hour % 3 else 0.13
        pen.line(
            [(0.5 + inner * math.sin(angle), 0.5 - inner * math.cos(angle))]
            + [(0.5 + 0.18 * math.sin(angle), 0.5 - 0.18 * math.cos(angle))],
            fill=ink,
            width=0.008,
        )
    for length, fraction, width in ((0.09, rng.random(), 0.016), (0.15, rng.random(), 0.01)):
        angle = fraction * 2 * math.pi
        pen.line(
            [(0.5, 0.5), (0.5 + length * math.sin(angle), 0.5 - length * math.cos(angle))],
            fill=ink,
            width=width,
        )
    pen.ellipse(0.485, 0.485, 0.515, 0.515, fill=ink)


def _draw_sunglasses(pen: _Pen, look: _Look, rng: random.Random) -> None:
    lens = rng.choice(((30, 30, 34), (70, 50, 30), (30, 60, 70), (60, 40, 70)))
    pen.line([(0.10, 0.44), (0.02, 0.38)], fill=look.colour, width=0.03)
    pen.line([(0.90, 0.44), (0.98, 0.38)], fill=look.colour, width=0.03)
    pen.arc(0.43, 0.39, 0.57, 0.52, 190, 350, fill=look.colour, width=0.03)
    round_lenses = rng.random() < 0.5
    for u0 in (0.09, 0.55):
        if round_lenses:
            pen.ellipse(u0, 0.36, u0 + 0.36, 0.66, fill=lens, outline=look.colour, width=0.03)
        else:
            pen.rounded(u0, 0.37, u0 + 0.36, 0.64, 0.06, fill=lens, outline=look.colour)
            pen.rounded(u0, 0.37, u0 + 0.36, 0.41, 0.01, fill=look.colour)
        pen.line([(u0 + 0.07, 0.45), (u0 + 0.14, 0.41)], fill=(235, 235, 235), width=0.012)


def _draw_trench_coat(pen: _Pen, look: _Look, rng: random.Random) -> None:
    body = [(0.36, 0.10), (0.64, 0.10), (0.80, 0.18), (0.87, 0.68), (0.77, 0.69), (0.74, 0.36), (0.74, 0.94)]
    body += [(0.26, 0.94), (0.26, 0.36), (0.23, 0.69), (0.13, 0.68), (0.20, 0.18)]
    pen.textile(body, look.colour, look.accent, look.pattern, look.outline)
    lapel = _shade(look.colour, 0.8)
    pen.polygon([(0.36, 0.10), (0.50, 0.32), (0.43, 0.38), (0.31, 0.16)], fill=lapel, outline=look.outline)
    pen.polygon([(0.64, 0.10), (0.50, 0.32), (0.57, 0.38), (0.69, 0.16)], fill=lapel, outline=look.outline)
    pen.line([(0.5, 0.32), (0.5, 0.94)], fill=look.outline, width=0.006)
    pen.polygon(
        [(0.26, 0.50), (0.74, 0.50), (0.74, 0.56), (0.26, 0.56)],
        fill=_shade(look.colour, 0.7),
        outline=look.outline,
    )
    pen.rounded(0.46, 0.495, 0.54, 0.565, 0.005, fill=None, outline=look.metal)
    for v in (0.38, 0.44, 0.63):
        for u in (0.43, 0.57):
            pen.ellipse(u - 0.015, v - 0.015, u + 0.015, v + 0.015, fill=look.metal, outline=look.outline)


def _draw_scarf(pen: _Pen, look: _Look, rng: random.Random) -> None:
    pen.arc(0.27, 0.07, 0.73, 0.33, 180, 360, fill=look.colour, width=0.07)
    pen.arc(0.27, 0.07, 0.73, 0.33, 180, 360, fill=look.outline, width=0.008)
    ends = (
        [(0.28, 0.19), (0.45, 0.22), (0.43, 0.82), (0.27, 0.82)],
        [(0.55, 0.22), (0.72, 0.19), (0.76, 0.74), (0.60, 0.76)],
    )
    for end in ends:
        pen.textile(end, look.colour, look.accent, look.pattern, look.outline)
        (u0, v0), (u1, v1) = end[3], end[2]
        for i in range(8):
            t = (i + 0.5) / 8
            u, v = u0 + (u1 - u0) * t, v0 + (v1 - v0) * t
            pen.line([(u, v), (u + 0.002, v + 0.06)], fill=look.accent, width=0.008)


def _draw_backpack(pen: _Pen, look: _Look, rng: random.Random) -> None:
    strap = _shade(look.colour, 0.55)
    pen.rounded(0.17, 0.26, 0.25, 0.80, 0.03, fill=strap, outline=look.outline)
    pen.rounded(0.75, 0.26, 0.83, 0.80, 0.03, fill=strap, outline=look.outline)
    pen.arc(0.41, 0.08, 0.59, 0.28, 180, 360, fill=strap, width=0.025)
    pen.rounded(0.24, 0.17, 0.76, 0.91, 0.11, fill=look.colour, outline=look.outline)
    pen.arc(0.26, 0.20, 0.74, 0.52, 180, 360, fill=_shade(look.colour, 0.6), width=0.012)
    pen.rounded(0.31, 0.55, 0.69, 0.85, 0.05, fill=_shade(look.colour, 0.8), outline=look.outline)
    pen.line([(0.33, 0.61), (0.67, 0.61)], fill=look.accent, width=0.01)
    pen.rounded(0.60, 0.60, 0.63, 0.68, 0.005, fill=look.metal, outline=look.outline)


_PAINTERS: dict[str, Callable[[_Pen, _Look, random.Random], None]] = {
    "sneakers": _draw_sneakers,
    "handbag": _draw_handbag,
    "t-shirt": _draw_tshirt,
    "dress": _draw_dress,
    "cap": _draw_cap,
    "watch": _draw_watch,
    "sunglasses": _draw_sunglasses,
    "trench coat": _draw_trench_coat,
    "scarf": _draw_scarf,
    "backpack": _draw_backpack,
}
#: Where the floor shadow starts (unit coordinates): just under each drawn product.
_SHADOW_TOP = {"sneakers": 0.71, "cap": 0.66, "sunglasses": 0.70, "handbag": 0.82, "watch": 0.93}
_TEXTILES = frozenset({"t-shirt", "dress", "trench coat", "scarf"})


def _draw_picture(
    card: Image.Image, box: tuple[int, int, int, int], product: SampleProduct, rng: random.Random
):
    left, top, right, bottom = box
    backdrop = rng.choice(PICTURE_BACKGROUNDS)
    ImageDraw.Draw(card).rounded_rectangle(box, radius=max(4, (right - left) // 40), fill=backdrop)
    side = min(right - left, bottom - top) * rng.uniform(0.82, 0.96)
    x0 = left + (right - left - side) * rng.uniform(0.3, 0.7)
    y0 = top + (bottom - top - side) * rng.uniform(0.3, 0.7)
    colour = PAINTS[product.colour]
    accent_name = rng.choice([name for name in COLOURS if name != product.colour])
    pattern = None
    if product.category in _TEXTILES and rng.random() < (0.7 if product.category == "scarf" else 0.35):
        pattern = rng.choice(("stripes", "check"))
    look = _Look(
        colour=colour,
        accent=COLOURS[accent_name] if rng.random() < 0.7 else (248, 248, 248),
        outline=_shade(colour, 0.45) if _luminance(colour) > 60 else (10, 10, 10),
        metal=rng.choice(METALS),
        pattern=pattern,
    )
    pen = _Pen(card, x0, y0, side, mirror=rng.random() < 0.5)
    shadow_top = _SHADOW_TOP.get(product.category, 0.90)
    pen.ellipse(0.12, shadow_top, 0.88, shadow_top + 0.06, fill=_shade(backdrop, 0.88))
    _PAINTERS[product.category](pen, look, rng)


@dataclass
class _TextStyle:
    price_style: str
    code_label: str
    footer: str | None
    ink: tuple[int, int, int]
    price_ink: tuple[int, int, int]


def _wrap(text: str, size: int, width: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and _text_width(f"{lines[-1]} {word}", size) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _text_block(
    card: Image.Image | None,
    x: float,
    y: float,
    width: float,
    unit: float,
    product: SampleProduct,
    style: _TextStyle,
) -> float:
    """Measure (card=None) or draw the text column; returns its height. unit = font size scale in pixels."""
    start = y
    draw = ImageDraw.Draw(card) if card is not None else None

    def text_line(text: str, size: float, fill, bold: bool = False, spacing: float = 1.3) -> None:
        nonlocal y
        px = max(8, round(size))
        y += px
        if card is not None:
            _draw_text(card, x, y, text, px, fill, bold)
        y += px * (spacing - 1)

    text_line(product.brand.upper(), unit * 1.5, style.ink, bold=True, spacing=1.5)
    for line in _wrap(product.title, max(8, round(unit)), width):
        text_line(line, unit, _shade(style.ink, 1.4))
    y += unit * 0.4
    text_line(
        format_price(product.price, product.currency, style.price_style),
        unit * 1.6,
        style.price_ink,
        bold=True,
    )
    if product.size_prices:
        y += unit * 0.3
        size_px = max(8, round(unit * 0.9))
        column = x + max(_text_width("Size", size_px), _text_width("10.5", size_px)) + unit * 2
        rows = [("Size", "Price")] + [
            (size, format_price(value, product.currency, style.price_style))
            for size, value in product.size_prices.items()
        ]
        for index, (size, price) in enumerate(rows):
            y += size_px * 1.45
            if card is not None and draw is not None:
                _draw_text(card, x, y, size, size_px, style.ink, bold=index == 0)
                _draw_text(card, column, y, price, size_px, style.ink, bold=index == 0)
                rule = (180, 180, 180) if index else style.ink
                draw.line((x, y + size_px * 0.4, x + width, y + size_px * 0.4), fill=rule, width=1)
        y += size_px * 0.6
    y += unit * 0.3
    text_line(f"{style.code_label} {product.product_code}", unit * 0.8, (110, 110, 116))
    if style.footer:
        text_line(style.footer, unit * 0.75, (90, 120, 90))
    return y - start


def _fit_text(product: SampleProduct, style: _TextStyle, width: float, height: float, unit: float) -> float:
    """Largest font unit (<= unit) whose text column fits in width x height."""
    while unit > 9:
        longest = max(
            _text_width(product.brand.upper(), round(unit * 1.5), True),
            _text_width("Product code: 00000000", round(unit * 0.8)),
        )
        if longest <= width and _text_block(None, 0, 0, width, unit, product, style) <= height:
            break
        unit *= 0.92
    return unit


def draw_card(product: SampleProduct, rng: random.Random) -> Image.Image:
    """Render one listing card. All presentation choices (layout, colours, price format) come from rng."""
    width, height = product.card_size
    short = min(width, height)
    card = Image.new("RGB", (width, height), rng.choice(CARD_BACKGROUNDS))
    draw = ImageDraw.Draw(card)
    dark = rng.random() < 0.25
    style = _TextStyle(
        price_style=rng.choice(PRICE_STYLES[product.currency]),
        code_label=rng.choice(CODE_LABELS),
        footer=rng.choice(FOOTERS) if rng.random() < 0.4 else None,
        ink=(20, 24, 40) if dark else (30, 30, 30),
        price_ink=rng.choice(((30, 30, 30), (176, 20, 40), (20, 70, 140))),
    )
    margin = round(short * 0.045)
    side_by_side = width >= 1.2 * height or (bool(product.size_prices) and width >= height)
    # Font unit (title size); _fit_text shrinks it when the text would not fit.
    unit = short * (0.055 if width >= 1.5 * height else 0.048)
    if side_by_side:
        split = round(width * rng.uniform(0.47, 0.55))
        picture_box = (margin, margin, split - margin // 2, height - margin)
        text_x, text_width = split + margin // 2, width - split - margin // 2 - margin
        unit = _fit_text(product, style, text_width, height - 2 * margin, unit)
        text_height = _text_block(None, 0, 0, text_width, unit, product, style)
        text_y = margin + (height - 2 * margin - text_height) * rng.uniform(0.2, 0.5)
    else:
        text_width = width - 2 * margin
        unit = _fit_text(product, style, text_width, (height - 2 * margin) * 0.5, unit)
        text_height = _text_block(None, 0, 0, text_width, unit, product, style)
        picture_box = (margin, margin, width - margin, round(height - margin - text_height - margin * 0.8))
        text_x, text_y = margin, picture_box[3] + margin * 0.6
    _draw_picture(card, picture_box, product, rng)
    if rng.random() < 0.3:
        badge = rng.choice(BADGES)
        size = max(9, round(unit * 0.75))
        badge_width = _text_width(badge, size, True) + size
        x0, y0 = picture_box[0] + margin * 0.4, picture_box[1] + margin * 0.4
        draw.rounded_rectangle(
            (x0, y0, x0 + badge_width, y0 + size * 1.7), radius=size // 3, fill=(20, 20, 24)
        )
        _draw_text(card, x0 + size / 2, y0 + size * 1.25, badge, size, (255, 255, 255), bold=True)
    _text_block(card, text_x, text_y, text_width, unit, product, style)
    return card


# ----------------------------------------------------------------------------------------------- files


def _card_rng(seed: int, index: int) -> random.Random:
    """Each card has its own generator, so cards can be drawn in any order or process."""
    return random.Random(f"inspector-card:{seed}:{index}")


def _render_to_file(job: tuple[SampleProduct, int, int, str]) -> None:
    product, seed, index, path = job
    image_format, options = SAVE_OPTIONS[Path(path).suffix.lower().lstrip(".")]
    draw_card(product, _card_rng(seed, index)).save(path, format=image_format, **options)


def _truth_row(product: SampleProduct, image_path: str) -> dict[str, str]:
    """What the card shows, as its catalogue row (column -> cell)."""
    sizes = ";".join(f"{size}:{value:.2f}" for size, value in product.size_prices.items())
    cells = (
        image_path,
        product.title,
        product.brand,
        product.category,
        f"{product.price:.2f}",
        product.currency,
        product.product_code,
        sizes,
        product.colour,
    )
    return dict(zip(CSV_COLUMNS, cells, strict=True))


@dataclass(frozen=True)
class PlantedError:
    """A deliberate catalogue error: the card of `file_name` shows `true`, its catalogue row says `catalogue`."""

    file_name: str
    #: The inspector field, and the truth.csv column that holds it.
    field: str
    column: str
    true: str
    catalogue: str


#: The catalogue errors planted in the sample folder's truth.csv (`inspector samples`, seed 0): one wrong price,
#: colour, category and currency, each on another card that shows its true value plainly (no size tables), for
#: the demo to find. sample_images/README.md lists them. Training data (`generate_dataset`) never has any.
PLANTED_ERRORS: tuple[PlantedError, ...] = (
    PlantedError("014_10355590.png", "price", "full_price", "609.95", "690.95"),
    PlantedError("016_41493423.jpg", "colour", "colour", "Orange", "Navy"),
    PlantedError("019_93528168.jpg", "category", "category3_code", "watch", "sunglasses"),
    PlantedError("029_77604824.png", "currency", "currency_code", "USD", "EUR"),
)


def planted_errors(products: Sequence[SampleProduct]) -> tuple[PlantedError, ...]:
    """The planted errors among these products' cards (matched by file name, which holds the product code)."""
    names = {product.file_name for product in products}
    return tuple(error for error in PLANTED_ERRORS if error.file_name in names)


def _plant(row: dict[str, str], error: PlantedError) -> None:
    if row[error.column] != error.true:  # the generator changed: PLANTED_ERRORS and the README must follow it
        raise RuntimeError(
            f"planted error {error}: the card now shows {row[error.column]!r}; update PLANTED_ERRORS "
            "and sample_images/README.md"
        )
    row[error.column] = error.catalogue


def _write(
    out_dir: Path,
    products: list[SampleProduct],
    seed: int,
    image_folder: str,
    workers: int,
    planted: Sequence[PlantedError] = (),
) -> Path:
    out_dir = Path(out_dir)
    (out_dir / image_folder).mkdir(parents=True, exist_ok=True)
    relative = [f"{image_folder}/{p.file_name}" if image_folder else p.file_name for p in products]
    jobs = [
        (product, seed, index, str(out_dir / rel))
        for index, (product, rel) in enumerate(zip(products, relative, strict=True))
    ]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_render_to_file, jobs, chunksize=max(1, len(jobs) // (workers * 8))))
    else:
        for job in jobs:
            _render_to_file(job)
    csv_path = out_dir / "truth.csv"
    with open(csv_path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        errors = {error.file_name: error for error in planted}
        for product, rel in zip(products, relative, strict=True):
            row = _truth_row(product, rel)
            if product.file_name in errors:
                _plant(row, errors[product.file_name])
            writer.writerow(row.values())
    (out_dir / FIELDS_FILE).write_text(fields_toml(), encoding="utf-8")
    return csv_path


#: The fields file written next to truth.csv: the visual attributes the catalogue has besides the built-ins.
FIELDS_FILE = "fields.toml"


def fields_toml() -> str:
    """The cards' custom fields for `--fields`: the product's colour, painted in the picture (a visual attribute:
    about half the titles name it too, the other half only the picture shows)."""
    values = ", ".join(f'"{name}"' for name in COLOURS)
    return (
        "# The sample cards' own attribute besides the built-in fields: inspector scan --fields fields.toml\n"
        "[fields.colour]\n"
        'kind = "category"\n'
        'synonyms = ["color", "main colour"]\n'
        'description = "the main colour of the product"\n'
        f"values = [{values}]\n"
    )


def generate_samples(
    out_dir: Path,
    n: int = 36,
    seed: int = 0,
    *,
    formats: Sequence[str] = ("jpg", "png", "webp"),
    with_planted_errors: bool = True,
) -> Path:
    """Write n cards and truth.csv (image paths relative to it) into out_dir; returns the CSV path.

    The catalogue carries the `PLANTED_ERRORS` of these cards (those of the sample folder, seed 0), unless
    `with_planted_errors` is False."""
    products = make_products(n, seed, formats=formats)
    planted = planted_errors(products) if with_planted_errors else ()
    return _write(Path(out_dir), products, seed, "", workers=1, planted=planted)


def generate_dataset(
    out_dir: Path,
    n: int,
    seed: int,
    *,
    formats: Sequence[str] = ("jpg",),
    workers: int = 1,
    world: World | None = None,
) -> Path:
    """Training data: n cards under out_dir/images/ and out_dir/truth.csv; returns the CSV path.

    JPEG only by default (the fastest to write). Output does not depend on `workers`. The fields.toml written
    beside it is the sample world's whatever the `world` (the question a model trained on the samples asks).
    """
    products = make_products(n, seed, formats=formats, world=world)
    return _write(Path(out_dir), products, seed, "images", workers=workers)
