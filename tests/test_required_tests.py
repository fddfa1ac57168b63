"""Where all tests are required (CI), a browser or Postgres test that cannot run fails instead of skipping; a
demo-model test skips while no trained demo model is committed."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SYSTEM_PROGRAM_TESTS = """
import pytest

@pytest.fixture
def postgres_server():
    pytest.skip("no PostgreSQL server here")

@pytest.mark.browser
def test_in_chromium():
    pytest.skip("chromium and chromedriver are not installed")

def test_on_postgres(postgres_server):
    pass

@pytest.fixture
def demo_model_dir():
    pytest.skip("the demo model is not here")

def test_with_the_demo_model(demo_model_dir):
    pass

def test_without_the_shared_files():
    pytest.skip("../shared/phi35v is not present")
"""


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, {"skipped": 4}),
        ({"INSPECTOR_REQUIRE_ALL_TESTS": "1"}, {"failed": 1, "errors": 1, "skipped": 2}),
        ({"CI": "true"}, {"failed": 1, "errors": 1, "skipped": 2}),
        ({"CI": "true", "INSPECTOR_REQUIRE_ALL_TESTS": "0"}, {"skipped": 4}),
    ],
)
def test_browser_and_postgres_skips_fail_only_where_all_tests_are_required(
    pytester, monkeypatch, environment, expected
):
    for name in ("CI", "INSPECTOR_REQUIRE_ALL_TESTS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(SYSTEM_PROGRAM_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rfs")
    result.assert_outcomes(**expected)
    if "failed" in expected:  # the browser test fails in its call, the others in their fixtures' setup
        result.stdout.fnmatch_lines(["*chromium and chromedriver are not installed*", "*all tests are required*"])
        result.stdout.fnmatch_lines(["*no PostgreSQL server here*", "*all tests are required*"])
        result.stdout.fnmatch_lines(["*SKIPPED*the demo model is not here*"])
