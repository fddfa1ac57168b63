"""How big and how fast is the HTML report at 10,000 images? Writes the numbers to docs/report-scale.md.

    .venv/bin/python bench/report_scale.py [--rows 10000] [--out docs/report-scale.md] [--keep DIR]

Builds a SQLite store with N synthetic images (thumbnails made from sample_images/ by the scan's own
`make_thumbnail`, answers scored by the real `score_answer`, ~25% with a mismatch, 2% failed), then measures:
writing the store, rendering the report, its file size, and in headless Chromium (selenium + chromedriver) the
time to first rendered page and to filter, sort, search and page through all rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image, ImageDraw  # noqa: E402

from inspector.fields import ProductFields, TruthRecord  # noqa: E402
from inspector.images import make_thumbnail  # noqa: E402
from inspector.report import render_report  # noqa: E402
from inspector.scoring import score_answer  # noqa: E402
from inspector.store import ItemResult, open_store  # noqa: E402

BRANDS = [
    "Nike",
    "Adidas",
    "Burberry",
    "Acme",
    "Northwind",
    "Maison Lune",
    "Kiyo",
    "Puma",
    "Hermès",
    "Levi's",
]
CATEGORIES = [
    "Shoes",
    "Bags",
    "T-Shirts",
    "Hats",
    "Jackets",
    "Dresses",
    "Jeans",
    "Scarves",
    "Watches",
    "Belts",
]
CURRENCIES = ["USD", "EUR", "GBP", "JPY"]


def source_thumbnails(n: int = 48) -> list[bytes]:
    """Thumbnails of real-looking listing images: sample_images/ if present, drawn cards otherwise."""
    images = []
    folder = REPO / "sample_images"
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        if path.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"}:
            with Image.open(path) as image:
                images.append(make_thumbnail(image.convert("RGB")))
    rng = random.Random(1)
    while len(images) < n:
        card = Image.new("RGB", (600, 800), (248, 248, 246))
        draw = ImageDraw.Draw(card)
        draw.ellipse((120, 140, 480, 500), fill=tuple(rng.randrange(40, 220) for _ in range(3)))
        draw.text((60, 600), f"{rng.choice(BRANDS)}  {rng.randrange(20, 900)}.00", fill=(20, 20, 20))
        images.append(make_thumbnail(card))
    return images


def synthetic_item(n: int, rng: random.Random, thumbs: list[bytes]) -> ItemResult:
    category = rng.choice(CATEGORIES)
    price = float(rng.randrange(15, 1500))
    sizes = {s: price + 5 * i for i, s in enumerate(["6.5", "7.5", "8"])} if category == "Shoes" else {}
    truth = ProductFields(
        rng.choice(BRANDS),
        f"{category[:-1]} model {n} {rng.choice(['Classic', 'Pro', 'Lite'])}",
        category,
        price,
        rng.choice(CURRENCIES),
        sizes,
    )
    path = f"catalogue/{category.lower()}/{n:05d}_{rng.randrange(10**8):08d}.jpg"
    sha = hashlib.sha256(path.encode()).hexdigest()
    if rng.random() < 0.02:
        return ItemResult(
            sha256=sha,
            path=path,
            n_bytes=0,
            error="cannot identify image file (zero bytes)",
            truth=TruthRecord(n + 2, f"SKU{n:06d}", truth),
            field_results=score_answer(ProductFields(), truth),
        )
    predicted = ProductFields(**truth.to_dict())
    roll = rng.random()
    if roll < 0.08:
        predicted.price = price * 0.9
    elif roll < 0.14:
        predicted.category = rng.choice(CATEGORIES)
    elif roll < 0.20:
        predicted.brand = None
    elif roll < 0.25 and sizes:
        predicted.size_prices = {"6.5": sizes["6.5"]}
    raw = json.dumps({**predicted.to_dict(), "note": "synthetic answer for the scale benchmark"})
    return ItemResult(
        sha256=sha,
        path=path,
        width=600,
        height=800,
        format="JPEG",
        n_bytes=80_000 + n,
        thumbnail=thumbs[n % len(thumbs)],
        raw_output=raw,
        parsed=predicted,
        latency_ms=rng.uniform(80, 400),
        truth=TruthRecord(n + 2, f"SKU{n:06d}", truth),
        field_results=score_answer(predicted, truth),
    )


#: Type a search and wait until the table shows its result (includes the typing debounce of the search box).
SEARCH = """
    const done = arguments[arguments.length - 1];
    const box = document.getElementById('search'), count = document.getElementById('count');
    const before = count.textContent, start = performance.now();
    box.value = 'jackets';
    box.dispatchEvent(new Event('input'));
    (function poll() {
        if (count.textContent !== before) done(performance.now() - start); else setTimeout(poll, 2);
    })();
"""


def browser_timings(report: Path) -> dict:
    """Load the report in headless Chromium a few times; time first render and the interactive actions."""
    from selenium import webdriver
    from selenium.webdriver.support.ui import WebDriverWait

    browser = shutil.which("chromium") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not browser or not driver_path:
        return {"skipped": "chromium/chromedriver not installed"}
    profile = tempfile.mkdtemp(prefix="inspector-bench-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--enable-precise-memory-info",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    chrome.set_page_load_timeout(300)
    chrome.set_script_timeout(120)
    measure = """
        const t = performance.now(); (%s); return performance.now() - t;
    """
    results: dict[str, list[float]] = {
        k: []
        for k in (
            "ready_ms",
            "dom_loaded_ms",
            "filter_ms",
            "unfilter_ms",
            "sort_ms",
            "search_ms",
            "next_page_ms",
            "heap_mb",
        )
    }
    try:
        for _ in range(3):
            chrome.get("about:blank")
            chrome.get(report.as_uri())
            WebDriverWait(chrome, 300).until(
                lambda d: d.execute_script("return document.documentElement.dataset.ready")
            )
            results["ready_ms"].append(
                float(chrome.execute_script("return document.documentElement.dataset.ready"))
            )
            results["dom_loaded_ms"].append(
                chrome.execute_script(
                    "const n = performance.getEntriesByType('navigation')[0]; return n.domContentLoadedEventEnd;"
                )
            )
            results["filter_ms"].append(
                chrome.execute_script(measure % "document.getElementById('filter-mismatches').click()")
            )
            results["unfilter_ms"].append(
                chrome.execute_script(measure % "document.getElementById('filter-mismatches').click()")
            )
            results["sort_ms"].append(
                chrome.execute_script(measure % "document.querySelector(\"th[data-sort='price']\").click()")
            )
            results["search_ms"].append(chrome.execute_async_script(SEARCH))
            results["next_page_ms"].append(
                chrome.execute_script(measure % "document.getElementById('next').click()")
            )
            results["heap_mb"].append(
                chrome.execute_script("return performance.memory.usedJSHeapSize") / 2**20
            )
        version = chrome.capabilities.get("browserVersion", "?")
    finally:
        chrome.quit()
        shutil.rmtree(profile, ignore_errors=True)
    summary = {k: statistics.median(v) for k, v in results.items()}
    summary["chromium"] = version
    return summary


def machine() -> str:
    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    if Path("/proc/meminfo").exists():
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 2**20:.0f} GiB RAM"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; load average {load:.1f} at the start (shared machine)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "report-scale.md")
    parser.add_argument("--keep", type=Path, help="keep the database and report in this folder")
    args = parser.parse_args()

    where = machine()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="inspector-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    db, report = folder / "scale.db", folder / "report.html"
    for stale in folder.glob("scale.db*"):
        stale.unlink()
    rng = random.Random(0)
    thumbs = source_thumbnails()
    items = [synthetic_item(n, rng, thumbs) for n in range(args.rows)]

    with open_store(db) as store:
        run_id = store.start_run(
            "scale",
            name="scale",
            model="synthetic",
            backend="none",
            prompt_name="extract-json",
            prompt_text="(synthetic)",
            settings={"batch_size": args.batch_size},
            versions={},
            inputs=["catalogue/"],
            truth_path="catalogue.csv",
        )
        started = time.perf_counter()
        for start in range(0, len(items), args.batch_size):
            store.add_batch(run_id, items[start : start + args.batch_size])
        write_s = time.perf_counter() - started
        store.finish_run(run_id, "completed", {"elapsed_s": write_s, "images_per_s": args.rows / write_s})
        started = time.perf_counter()
        render_report(store, run_id, report)
        render_s = time.perf_counter() - started
    size = report.stat().st_size
    thumb_bytes = sum(len(i.thumbnail or b"") for i in items)
    print(f"store: {write_s:.1f} s, report: {render_s:.1f} s, {size / 2**20:.1f} MiB", flush=True)
    browser = browser_timings(report)
    print(json.dumps(browser, indent=2))

    lines = [
        "# Report at scale",
        "",
        f"Measured by `bench/report_scale.py --rows {args.rows}` on {datetime.now(timezone.utc):%Y-%m-%d}.",
        "",
        f"Machine: {where}. Chromium {browser.get('chromium', '–')} (headless).",
        "",
        f"Data: {args.rows:,} synthetic images, thumbnails made by `inspector.images.make_thumbnail` (160 px, JPEG q75,",
        f"mean {thumb_bytes / max(1, args.rows) / 1024:.1f} KiB), answers scored by `score_answer`; ~25% with a mismatch,",
        "2% failed.",
        "",
        "| What | Result |",
        "| --- | --- |",
        f"| Store {args.rows:,} images (`add_batch`, {args.batch_size} per transaction, SQLite) | {write_s:.1f} s |",
        f"| Render the report (`render_report`) | {render_s:.1f} s |",
        f"| Report file size | {size / 2**20:.1f} MiB ({size / max(1, args.rows) / 1024:.1f} KiB per image, "
        f"{thumb_bytes * 4 / 3 / max(1, size):.0%} of it thumbnails) |",
    ]
    if "skipped" in browser:
        lines.append(f"| Browser timings | skipped: {browser['skipped']} |")
    else:
        lines += [
            f"| Open in Chromium: first page of rows drawn | {browser['ready_ms'] / 1000:.2f} s after navigation start |",
            f'| Toggle "mismatches only" (all {args.rows:,} rows filtered) | {browser["filter_ms"]:.0f} ms on, '
            f"{browser['unfilter_ms']:.0f} ms off |",
            f"| Sort by price | {browser['sort_ms']:.0f} ms |",
            f"| Search, typed to result shown (incl. 200 ms typing debounce; first search builds the index) "
            f"| {browser['search_ms']:.0f} ms |",
            f"| Next page | {browser['next_page_ms']:.0f} ms |",
            f"| JavaScript heap after loading | {browser['heap_mb']:.0f} MiB |",
        ]
    lines += [
        "",
        "Times are medians of 3 page loads. Rows are drawn one page (50 by default) at a time from the JSON data",
        "block, so the page stays responsive however many images a run has; the file size grows linearly, almost",
        "all of it thumbnails. Reproduce: `.venv/bin/python bench/report_scale.py` (needs chromium, chromedriver and",
        "selenium for the browser rows).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
