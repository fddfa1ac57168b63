"""The HTML report, rendered from a real SQLite store filled with real scoring results."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from inspector.errors import InputError, RunNotFoundError
from inspector.fields import BUILTIN_FIELDS, FieldResult, Outcome, ProductFields, TruthRecord
from inspector.report import render_report, render_report_html
from inspector.scoring import score_answer
from inspector.store import ItemResult, Store, open_store


def builtin_fields(*values: object) -> ProductFields:
    """The built-in fields in declaration order: brand, title, category, price, currency, size_prices."""
    return ProductFields(dict(zip(BUILTIN_FIELDS.names, values, strict=False)))


#: Hostile values: each tries to break out of its context (element text, attribute, script block, JSON string).
XSS_PATH = "odd/<script>window.__xss=1</script>\"'.jpg"
XSS_BRAND = '"><img src=x onerror="window.__xss=2">'
XSS_RAW = '{"brand": "</script><script>window.__xss=3</script>", "note": "<!-- \' \\u2028 \u2028"}'
XSS_ERROR = "<b>bold?</b></script><script>window.__xss=4</script>"

RUN_ARGS = dict(
    model="tiny/llava",
    backend="hf",
    prompt_name="extract-json",
    prompt_text="Return JSON with <brand>, title, category, price, currency and sizes.",
    settings={
        "max_new_tokens": 96,
        "batch_size": 8,
        "dtype": "float32",
        "device": "cpu",
        "sizes": ["6.5", "8"],
    },
    versions={"torch": "2.13", "transformers": "5.17"},
    inputs=["sample_images/"],
    truth_path="catalogue.csv",
)

SHOE = builtin_fields("Nike", "Dunk Low Retro", "Shoes", 115.0, "USD", {"6.5": 115.0, "8": 120.0})
BOOT = builtin_fields("Adidas", "Samba OG", "Shoes", 120.0, "USD", {"8": 120.0})
BAG = builtin_fields("Burberry", "Check Tote Bag", "Bags", 1290.0, "GBP")
TEE = builtin_fields("Acme", "Logo T-Shirt", "T-Shirts", 25.0, "EUR")


def thumbnail(color: tuple[int, int, int]) -> bytes:
    image = Image.new("RGB", (96, 128), (250, 250, 250))
    ImageDraw.Draw(image).rectangle((12, 20, 84, 100), fill=color)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=70)
    return out.getvalue()


def item(
    n: int,
    path: str,
    truth: ProductFields | None,
    predicted: ProductFields | None,
    *,
    raw: str | None = None,
    error: str | None = None,
) -> ItemResult:
    results = score_answer(predicted or ProductFields(), truth) if truth is not None else []
    return ItemResult(
        sha256=hashlib.sha256(path.encode()).hexdigest(),
        path=path,
        width=600,
        height=800,
        format="JPEG",
        n_bytes=5000 + n,
        thumbnail=None if error else thumbnail(((n * 70) % 255, (n * 40) % 255, 180)),
        raw_output=raw if raw is not None else (None if error else json.dumps(predicted.to_dict())),
        parsed=predicted,
        latency_ms=None if error else 100.0 + 10 * n,
        error=error,
        truth=None if truth is None else TruthRecord(row_number=n + 1, key=f"SKU-{n}", fields=truth),
        field_results=results,
    )


def base_items() -> list[ItemResult]:
    """Seven images: two all right, five with something wrong, one without catalogue row."""
    return [
        item(0, "shoes/nike-dunk.jpg", SHOE, SHOE),
        item(
            1,
            "shoes/adidas-samba.jpg",
            BOOT,
            builtin_fields("Adidas", "Samba OG", "Shoes", 99.0, "USD", {"8": 99.0}),
        ),
        item(2, "bags/burberry-tote.jpg", BAG, builtin_fields(None, "Check Tote Bag", "Bags", 1290.0, "GBP")),
        item(
            3, XSS_PATH, TEE, builtin_fields(XSS_BRAND, "Logo T-Shirt", "T-Shirts", 25.0, "EUR"), raw=XSS_RAW
        ),
        item(4, "broken/truncated.jpg", SHOE, None, error=XSS_ERROR),
        item(5, "extra/no-row.jpg", None, builtin_fields("Kiyo", "Sun Hat", "Hats", 30.0, "JPY")),
        item(6, "tees/acme-shirt.jpg", TEE, builtin_fields("Acme", "Logo T-Shirt", "Shirts", 25.0, "EUR")),
        item(7, "bags/burberry-2.jpg", BAG, BAG),
    ]


#: Images the "mismatches only" filter must show for the base run.
BASE_MISMATCHES = {
    "shoes/adidas-samba.jpg",
    "bags/burberry-tote.jpg",
    XSS_PATH,
    "broken/truncated.jpg",
    "tees/acme-shirt.jpg",
}


def tuned_items() -> list[ItemResult]:
    """The same images after fine-tuning: brand and category fixed, price still wrong, one image not scanned."""
    return [
        item(0, "shoes/nike-dunk.jpg", SHOE, SHOE),
        item(
            1,
            "shoes/adidas-samba.jpg",
            BOOT,
            builtin_fields("Adidas", "Samba OG", "Shoes", 99.0, "USD", {"8": 120.0}),
        ),
        item(2, "bags/burberry-tote.jpg", BAG, BAG),
        item(3, XSS_PATH, TEE, TEE),
        item(4, "broken/truncated.jpg", SHOE, None, error="cannot identify image file"),
        item(6, "tees/acme-shirt.jpg", TEE, TEE),
    ]


def build_demo_store(db: Path) -> tuple[Store, int, int]:
    """A database with a base run (named 'base') and a fine-tuned run ('tuned') over the same images."""
    store = open_store(db)
    base = store.start_run("base-key", name="base", **RUN_ARGS)
    items = base_items()
    store.add_batch(base, items[:4])
    store.add_batch(base, items[4:])
    store.finish_run(base, "completed", {"elapsed_s": 4.0, "images_per_s": 2.0, "rows_without_image": 3})
    tuned = store.start_run("tuned-key", name="tuned", **{**RUN_ARGS, "model": "runs/tuned"})
    store.add_batch(tuned, tuned_items())
    store.finish_run(tuned, "completed", {"elapsed_s": 2.0, "images_per_s": 3.0})
    return store, base, tuned


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Store, int, int]:
    store, base, tuned = build_demo_store(tmp_path / "demo.db")
    yield store, base, tuned
    store.close()


def report_data(html: str) -> dict:
    block = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON: the browser would refuse the data")

    return json.loads(block, parse_constant=refuse)


class Cells(HTMLParser):
    """Collects confusion-table cells (data-truth/data-pred) and the summary cards' numbers."""

    def __init__(self) -> None:
        super().__init__()
        #: (run, field, catalogue value, model value) -> count shown
        self.cells: dict[tuple[int, str, str, str], str] = {}
        self.cards: dict[str, str] = {}
        self._table: tuple[int, str] | None = None
        self._cell: tuple[int, str, str, str] | None = None
        self._card_key: str | None = None
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "table" and "confusion" in (a.get("class") or ""):
            self._table = (int(a["data-run"]), a["data-field"])
        if tag == "td" and "data-pred" in a:
            self._cell = (*self._table, a["data-truth"], a["data-pred"])
        if tag == "span" and a.get("class") in ("k", "v"):
            self._in = a["class"]

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self.cells[self._cell] = self.cells.get(self._cell, "") + data
        if self._in == "k":
            self._card_key = data.strip()
        elif self._in == "v" and self._card_key and self._card_key not in self.cards:
            self.cards[self._card_key] = data.strip()

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        if tag == "span":
            self._in = None


def parse(html: str) -> Cells:
    parser = Cells()
    parser.feed(html)
    return parser


def test_report_is_one_self_contained_file(demo, tmp_path: Path) -> None:
    store, base, _ = demo
    out = render_report(store, base, tmp_path / "out" / "report.html")
    assert out == tmp_path / "out" / "report.html"
    html = out.read_text(encoding="utf-8")
    assert not list(out.parent.glob(".*.tmp"))  # written atomically, nothing left behind
    # Nothing is fetched: no external scripts, styles, fonts or images; thumbnails are data: URIs.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html, re.I)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in csp and "img-src data:" in csp
    # The one executable script is allowed by its hash, and by nothing else.
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp
    data = report_data(html)
    thumbs = [row["t"] for row in data["rows"] if row["t"]]
    assert len(thumbs) == 7 and all(t.startswith("data:image/jpeg;base64,/9j/") for t in thumbs)


def test_hostile_values_stay_text(demo) -> None:
    store, base, tuned = demo
    for html in (render_report_html(store, base), render_report_html(store, base, tuned)):
        # Only our own script elements (two JSON data blocks, one script); no hostile markup survives anywhere.
        assert html.count("<script") == 3 and html.count("</script") == 3
        for needle in ("<script>window", "<img src=x", "<b>bold?</b>", 'onerror="window', "<!-- '"):
            assert needle not in html
        assert "&lt;brand&gt;" in html  # the prompt text, escaped by Jinja
        data = report_data(html)
        rows = {row["p"]: row for row in data["rows"]}
        assert XSS_PATH in rows  # ... yet the exact values reach the page script intact
        assert rows[XSS_PATH]["runs"][0]["raw"] == XSS_RAW
        assert rows[XSS_PATH]["runs"][0]["v"]["brand"] == XSS_BRAND
        assert rows["broken/truncated.jpg"]["runs"][0]["err"] in (XSS_ERROR, "cannot identify image file")


def test_summary_and_metrics(demo) -> None:
    store, base, _ = demo
    html = render_report_html(store, base)
    cards = parse(html).cards
    assert cards["Images"] == "8"
    assert cards["Failed"] == "1"
    assert cards["All fields right"] == "2"  # nike-dunk and burberry-2
    assert cards["With mismatches"] == "5"
    assert cards["Speed"].startswith("2.00")
    assert "rows_without_image" in html  # extra run stats are listed
    metrics = {name: m.to_dict() for name, m in store.run_metrics(base).items()}
    brand = metrics["brand"]
    # 7 scored rows: nike, adidas, burberry x2, acme right (4 + broken = missed, burberry-tote missed, hostile wrong)
    assert (brand["correct"], brand["wrong"], brand["missed"]) == (4, 1, 2)
    assert f"{100 * brand['accuracy']:.1f}%" in html
    assert re.search(r"<th scope=\"row\">price</th>", html)


def test_rows_carry_outcomes_for_the_filters(demo) -> None:
    store, base, _ = demo
    data = report_data(render_report_html(store, base))
    rows = {row["p"]: row for row in data["rows"]}
    assert [row["p"] for row in data["rows"]] == sorted(rows)
    mismatched = {
        path
        for path, row in rows.items()
        if row["runs"][0]["err"] or set(row["runs"][0]["o"].values()) & set(data["mismatches"])
    }
    assert mismatched == BASE_MISMATCHES
    adidas = rows["shoes/adidas-samba.jpg"]["runs"][0]
    assert (
        adidas["o"]["price"] == "wrong"
        and adidas["sz"] == {"8": "wrong"}
        and adidas["o"]["size_prices"] == "wrong"
    )
    assert rows["bags/burberry-tote.jpg"]["runs"][0]["o"]["size_prices"] == "both_empty"
    assert rows["extra/no-row.jpg"]["truth"] is None and rows["extra/no-row.jpg"]["runs"][0]["o"] == {}
    assert rows["shoes/nike-dunk.jpg"]["tr"] == [1, "SKU-0"]
    assert rows["shoes/nike-dunk.jpg"]["wh"] == [600, 800]
    groups = {name: {key: (label, n) for key, label, n in values} for name, _, values in data["groups"]}
    assert list(groups) == ["brand", "category"]  # the categorical fields, in field order
    assert groups["category"]["shoes"] == ("Shoes", 3) and groups["category"]["hats"] == ("Hats", 1)


def test_category_confusion_table(demo) -> None:
    store, base, _ = demo
    cells = parse(render_report_html(store, base)).cells
    assert cells[(0, "category", "shoes", "shoes")] == "2"
    assert cells[(0, "category", "shoes", "")] == "1"  # the failed image: no predicted category
    assert cells[(0, "category", "bags", "bags")] == "2"
    assert cells[(0, "category", "t shirts", "t shirts")] == "1"
    assert cells[(0, "category", "t shirts", "shirts")] == "1"
    assert ("extra", "hats") not in {(t, p) for _, _, t, p in cells}  # no catalogue row: not in the table


def test_compare_two_runs(demo) -> None:
    store, base, tuned = demo
    html = render_report_html(store, base, tuned)
    data = report_data(html)
    assert [r["label"] for r in data["runs"]] == ["run 1 (base)", "run 2 (tuned)"]
    assert [r["letter"] for r in data["runs"]] == ["A", "B"]
    rows = {row["p"]: row for row in data["rows"]}
    assert len(rows) == 8
    assert rows["extra/no-row.jpg"]["runs"][1] is None and rows["bags/burberry-2.jpg"]["runs"][1] is None
    assert rows["bags/burberry-tote.jpg"]["runs"][0]["o"]["brand"] == "missed"
    assert rows["bags/burberry-tote.jpg"]["runs"][1]["o"]["brand"] == "correct"
    assert "runs/tuned" in html and "Δ" in html
    brand_a = store.run_metrics(base)["brand"].accuracy
    brand_b = store.run_metrics(tuned)["brand"].accuracy
    assert f"+{round(100 * (brand_b - brand_a), 1)} pt" in html
    assert html.count('class="confusion"') == 4  # brand and category, for each run
    with pytest.raises(InputError, match="another run"):
        render_report_html(store, base, base)


def test_runs_without_truth_images_or_finite_numbers(tmp_path: Path) -> None:
    with open_store(tmp_path / "db.sqlite") as store:
        empty = store.start_run("empty", name=None, **RUN_ARGS)
        html = render_report_html(store, empty)
        assert report_data(html)["rows"] == [] and "No field was scored" in html

        odd = store.start_run("odd", name="odd", **RUN_ARGS)
        nan = builtin_fields("A", "B", "C", float("nan"), "USD", {"8": float("inf")})
        store.add_batch(odd, [item(0, "a.jpg", None, nan), item(1, "b.jpg", None, None, error="boom")])
        store.finish_run(odd, "interrupted", {"elapsed_s": float("nan")})
        data = report_data(render_report_html(store, odd))  # refuses NaN/Infinity
        values = {row["p"]: row["runs"][0]["v"] for row in data["rows"]}
        assert values["a.jpg"]["price"] is None and values["a.jpg"]["size_prices"] == {"8": None}
        with pytest.raises(RunNotFoundError):
            render_report_html(store, 99)


def test_database_with_undecodable_file_names_still_reports(tmp_path: Path) -> None:
    """A run started before such names were cleaned has them in its JSON: the report is still written."""
    import sqlite3

    db = tmp_path / "db.sqlite"
    with open_store(db) as store:
        run = store.start_run("k", name=None, **RUN_ARGS)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET inputs = ?", ['["folder caf\\udce9/"]'])
    with open_store(db) as store:
        out = render_report(store, run, tmp_path / "report.html")
    assert "folder caf\ufffd/" in out.read_text(encoding="utf-8")


def test_navigation_names_of_a_and_b_and_deltas_coloured_by_better_or_worse(demo) -> None:
    """Issue 20.6: navigation at the top; the compare view says which run is A and which B; Δ is coloured by
    better or worse, not by sign (an error that falls is better)."""
    store, base, tuned = demo
    html = render_report_html(store, base, tuned)
    nav = re.search(r'<nav class="toc".*?</nav>', html, re.S).group(0)
    links = re.findall(r'<a href="#([^"]+)">([^<]+)</a>', nav)
    assert links == [
        ("summary", "Summary"), ("metrics", "Per-field results"), ("confusion-brand", "Brand"),
        ("confusion-category", "Category"), ("review", "Review"), ("images", "Images"), ("details", "Run details"),
    ]  # fmt: skip
    for anchor, _ in links:
        assert f'id="{anchor}"' in html
    legend = re.search(r'<p class="ab">(.*?)</p>', html, re.S).group(1)
    text = " ".join(re.sub(r"<[^>]+>", " ", legend).split())
    assert text == (
        "A run 1 (base) · tiny/llava B run 2 (tuned) · runs/tuned "
        "Δ is B − A, green where B is better, red where it is worse."
    )
    # brand accuracy rises from A to B (better, green); the size price error falls (also better)
    brand = re.search(r'<th scope="row">brand</th>(.*?)</tr>', html, re.S).group(1)
    assert 'class="num delta better">+' in brand
    sizes = re.search(r'<th scope="row">size_price</th>(.*?)</tr>', html, re.S).group(1)
    assert re.search(r'class="num delta better">-[0-9.,]+</td>\s*$', sizes), sizes
    single = render_report_html(store, base)
    assert '<p class="ab">' not in single and '<nav class="toc"' in single


def test_a_field_with_only_unreadable_catalogue_cells_shows_nothing_scored() -> None:
    from inspector.report import _metric_dict
    from inspector.scoring import summarise

    metrics = summarise([FieldResult("weight", Outcome.UNREADABLE, "500 g", "heavy")] * 2)["weight"].to_dict()
    shown = _metric_dict(metrics)
    assert (shown["n"], shown["counts"]["unreadable"], shown["accuracy"]) == (0, 2, None)
