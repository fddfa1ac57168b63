"""Downloads that fail transiently are retried with capped backoff during a scan, and a rerun tries again the
images whose download still failed, replacing their error rows; permanent failures stay as they are."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from inspector.cli import cli
from inspector.discovery import RetryPolicy, discover, has_image_extension, read_source
from inspector.errors import FetchError
from inspector.samples import generate_samples

FAST = RetryPolicy(attempts=3, base_s=0.01, cap_s=0.05)


class Flaky(BaseHTTPRequestHandler):
    """/MODE/N/NAME fails N times with MODE (429, 500, 503, reset, 404), then serves image NAME."""

    requests: Counter = Counter()
    images: dict[str, bytes] = {}
    retry_after = "0"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        Flaky.requests[self.path] += 1
        _, mode, failures, name = self.path.split("/", 3)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if mode == "404" or Flaky.requests[self.path] <= int(failures):
                self.fail(mode)
            else:
                body = Flaky.images[name]
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

    def fail(self, mode: str) -> None:
        if mode == "reset":  # close the connection without an answer
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.send_response(int(mode))
        if mode == "429":
            self.send_header("Retry-After", Flaky.retry_after)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture()
def server(tmp_path, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    folder = tmp_path / "served"
    generate_samples(folder, n=3, seed=1)
    Flaky.images = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if has_image_extension(p.name)}
    Flaky.images["corrupt.png"] = b"\x89PNG not really"
    Flaky.requests = Counter()
    Flaky.retry_after = "0"
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def image_names() -> list[str]:
    return sorted(name for name in Flaky.images if name != "corrupt.png")


def fetch(url: str, retry: RetryPolicy = FAST) -> bytes:
    (source,) = discover([url])
    return read_source(source, timeout=5, retry=retry)


@pytest.mark.parametrize("mode", ["429", "500", "503", "reset"])
def test_a_transient_failure_is_retried_until_the_download_works(server, mode):
    name = image_names()[0]
    assert fetch(f"{server}/{mode}/2/{name}") == Flaky.images[name]
    assert Flaky.requests[f"/{mode}/2/{name}"] == 3


@pytest.mark.parametrize("mode", ["429", "503", "reset"])
def test_retries_are_bounded_and_the_failure_says_it_may_work_later(server, mode):
    name = image_names()[0]
    with pytest.raises(FetchError, match=r"\(after 3 attempts\)") as raised:
        fetch(f"{server}/{mode}/9/{name}")
    assert raised.value.transient
    assert Flaky.requests[f"/{mode}/9/{name}"] == 3


def test_a_404_is_not_retried_and_is_not_transient(server):
    with pytest.raises(FetchError, match="HTTP 404") as raised:
        fetch(f"{server}/404/0/x.png")
    assert not raised.value.transient
    assert Flaky.requests["/404/0/x.png"] == 1


def test_retry_after_is_honoured_but_capped(server):
    name = image_names()[0]
    Flaky.retry_after = "0.3"
    started = time.monotonic()
    fetch(f"{server}/429/1/{name}", RetryPolicy(attempts=2, base_s=0.01, cap_s=5))
    assert time.monotonic() - started >= 0.3
    Flaky.retry_after = "3600"
    started = time.monotonic()
    fetch(f"{server}/429/1/{image_names()[1]}", RetryPolicy(attempts=2, base_s=0.01, cap_s=0.2))
    assert time.monotonic() - started < 2


def test_backoff_doubles_up_to_the_cap():
    error = FetchError("HTTP 503", transient=True)
    policy = RetryPolicy(attempts=6, base_s=0.5, cap_s=3)
    assert [policy.delay(n, error) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3, 3]


def test_a_rerun_retries_failed_downloads_and_replaces_their_error_rows(server, tmp_path, monkeypatch):
    monkeypatch.setattr("inspector.discovery.DEFAULT_RETRY", FAST)
    first, second, third = image_names()
    urls = [
        f"{server}/503/0/{first}",  # works
        f"{server}/503/2/{second}",  # fails twice: the scan's own retries get it
        f"{server}/429/5/{third}",  # fails 5 times: 3 in the first scan, 2 in the rerun's, then works
        f"{server}/404/0/gone.png",  # never works: not retried by the rerun
        f"{server}/503/0/corrupt.png",  # downloads, cannot be decoded: not retried by the rerun
    ]
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(['{"brand": "Acme"}'] * 20))
    db = tmp_path / "r.db"
    args = ["scan", *urls, "--model", f"fake:{answers}", "--db", str(db), "--no-report", "--workers", "1"]

    scanned = CliRunner().invoke(cli, args)
    assert scanned.exit_code == 0, scanned.output
    assert scanned.stdout.startswith("Run 1: 2 images answered, 3 failed")
    with sqlite3.connect(db) as connection:
        rows = dict(connection.execute("SELECT path, retryable FROM predictions WHERE error IS NOT NULL"))
    assert rows == {urls[2]: 1, urls[3]: 0, urls[4]: 0}

    rerun = CliRunner().invoke(cli, args)
    assert rerun.exit_code == 0, rerun.output
    assert rerun.stdout.startswith("Run 1: 1 images answered, 0 failed, 4 already done")
    assert Flaky.requests[f"/429/5/{third}"] == 6
    with sqlite3.connect(db) as connection:
        predictions = connection.execute("SELECT path, error FROM predictions ORDER BY path").fetchall()
        n_images, n_failed = connection.execute("SELECT n_images, n_failed FROM runs").fetchone()
    assert [path for path, _ in predictions] == sorted(urls)  # one row per URL: the error row was replaced
    assert [path for path, error in predictions if error] == sorted(urls[3:])
    assert (n_images, n_failed) == (5, 2)
