"""Finding images (folders, files, URLs) and reading their bytes without hanging, looping or over-reading."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import hostile
import pytest

from inspector.discovery import (
    IMAGE_EXTENSIONS,
    USER_AGENT,
    DiscoveryError,
    ImageSource,
    discover,
    read_source,
)
from inspector.images import ImageLoadError

PNG = hostile.encode(hostile.picture(), "PNG")


def touch(path: Path, data: bytes = PNG) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def relative(sources: list[ImageSource], root: Path) -> list[str]:
    return [Path(source.location).relative_to(root).as_posix() for source in sources]


def discover_with_deadline(inputs, seconds: float = 20) -> list[ImageSource]:
    """discover() in a thread, so a symlink loop that hangs fails the test instead of the whole suite."""
    result: list = []
    worker = threading.Thread(target=lambda: result.append(discover(inputs)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "discover() did not terminate"
    return result[0]


def test_image_extensions():
    assert {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"} == set(IMAGE_EXTENSIONS)


def test_folders_are_walked_recursively_in_a_deterministic_order(tmp_path):
    for name in [
        "b.png",
        "a.JPG",
        "c.Jpeg",
        "sub/z.webp",
        "sub/deeper/y.gif",
        "a_sub/x.bmp",
        "t.TIF",
        "u.tiff",
    ]:
        touch(tmp_path / name)
    for name in ["notes.txt", "image.png.bak", "README", "photo.heic", "noext"]:
        touch(tmp_path / name)
    sources = discover([tmp_path])
    # A folder's files (by name), then its subfolders (by name), depth first.
    expected = [
        "a.JPG",
        "b.png",
        "c.Jpeg",
        "t.TIF",
        "u.tiff",
        "a_sub/x.bmp",
        "sub/z.webp",
        "sub/deeper/y.gif",
    ]
    assert relative(sources, tmp_path) == expected
    assert discover([tmp_path]) == sources
    assert all(source.root == tmp_path and source.path == Path(source.location) for source in sources)
    assert all(source.url is None and not source.is_url for source in sources)


def test_hidden_files_and_folders_are_skipped(tmp_path):
    touch(tmp_path / "visible.png")
    touch(tmp_path / ".hidden.png")
    touch(tmp_path / ".cache" / "inside.png")
    touch(tmp_path / "sub" / ".DS_Store.jpg")
    touch(tmp_path / "sub" / "ok.jpg")
    assert relative(discover([tmp_path]), tmp_path) == ["visible.png", "sub/ok.jpg"]


def test_a_hidden_folder_given_explicitly_is_walked(tmp_path):
    touch(tmp_path / ".cache" / "inside.png")
    assert relative(discover([tmp_path / ".cache"]), tmp_path) == [".cache/inside.png"]


def test_symlink_loops_terminate(tmp_path):
    root = tmp_path / "root"
    touch(root / "a.png")
    touch(root / "sub" / "b.png", hostile.encode(hostile.picture(), "JPEG"))
    os.symlink(root, root / "sub" / "loop_to_root")
    os.symlink(".", root / "self")
    os.symlink("..", root / "sub" / "parent")
    sources = discover_with_deadline([root])
    assert relative(sources, root) == ["a.png", "sub/b.png"]


def test_two_folders_linking_to_each_other_terminate(tmp_path):
    touch(tmp_path / "one" / "a.png")
    touch(tmp_path / "two" / "b.png")
    os.symlink(tmp_path / "two", tmp_path / "one" / "to_two")
    os.symlink(tmp_path / "one", tmp_path / "two" / "to_one")
    sources = discover_with_deadline([tmp_path / "one", tmp_path / "two"])
    assert sorted(Path(source.location).name for source in sources) == ["a.png", "b.png"]


def test_symlinked_folders_outside_the_root_are_followed(tmp_path):
    touch(tmp_path / "elsewhere" / "far.png")
    touch(tmp_path / "root" / "near.png")
    os.symlink(tmp_path / "elsewhere", tmp_path / "root" / "linked")
    sources = discover([tmp_path / "root"])
    assert relative(sources, tmp_path / "root") == ["near.png", "linked/far.png"]
    assert read_source(sources[1]) == PNG


def test_the_same_real_file_is_listed_once(tmp_path):
    original = touch(tmp_path / "a_original.png")
    os.symlink(original, tmp_path / "b_symlink.png")
    os.link(original, tmp_path / "c_hardlink.png")
    touch(
        tmp_path / "d_copy.png"
    )  # same bytes, different file: discovery keeps it (the scan dedups by sha256)
    sources = discover([tmp_path, original, str(original), tmp_path / "." / "a_original.png"])
    assert relative(sources, tmp_path) == ["a_original.png", "d_copy.png"]


def test_single_files_are_taken_whatever_their_extension(tmp_path):
    odd = touch(tmp_path / "picture.data")
    hidden = touch(tmp_path / ".hidden.png")
    sources = discover([odd, str(hidden)])
    assert [source.path for source in sources] == [odd, hidden]
    assert sources[0] == ImageSource(location=str(odd), path=odd, url=None, root=tmp_path)


def test_urls_are_kept_as_url_sources_once_each():
    urls = ["https://example.com/a.jpg", "HTTP://example.com/b?size=large", "https://example.com/a.jpg"]
    sources = discover(urls)
    assert [source.url for source in sources] == urls[:2]
    assert all(source.is_url and source.path is None and source.root is None for source in sources)
    assert sources[0].location == "https://example.com/a.jpg"


def test_inputs_keep_their_order(tmp_path):
    touch(tmp_path / "z" / "1.png")
    touch(tmp_path / "a" / "2.png", b"other")
    sources = discover([tmp_path / "z", "https://example.com/x.png", tmp_path / "a"])
    assert [Path(source.location).name for source in sources] == ["1.png", "x.png", "2.png"]


def test_a_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(DiscoveryError) as failure:
        discover([tmp_path / "nope"])
    message = str(failure.value)
    assert "nope" in message and "no such file or folder" in message and "http(s) URLs" in message


@pytest.mark.parametrize("bad", ["http://", "https:///path-only", "http://[::1/x.png"])
def test_a_url_without_host_is_a_clear_error(bad):
    with pytest.raises(DiscoveryError, match="not a valid URL"):
        discover([bad])


def test_a_fifo_given_directly_is_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(DiscoveryError, match="not a regular file"):
        discover([tmp_path / "pipe.jpg"])


def test_an_empty_folder_gives_no_sources(tmp_path):
    assert discover([tmp_path]) == []
    assert discover([]) == []


def test_hostile_folder_lists_exactly_the_expected_files(tmp_path):
    expected = hostile.make_hostile_files(tmp_path)
    sources = discover_with_deadline([tmp_path])
    names = relative(sources, tmp_path)
    assert len(names) == len(set(names))
    assert set(names) == set(expected)
    assert "<script>alert(1)</script>.png" in names
    for source in sources:
        name = Path(source.location).relative_to(tmp_path).as_posix()
        if name == "broken_link.png":
            with pytest.raises(ImageLoadError, match="broken symlink"):
                read_source(source)
        else:
            assert read_source(source) == (tmp_path / name).read_bytes()


def test_read_source_refuses_oversized_files(tmp_path):
    source = discover([touch(tmp_path / "big.png", b"x" * 2000)])[0]
    with pytest.raises(ImageLoadError, match=r"file too large: 2000 bytes \(limit 1000\)"):
        read_source(source, max_bytes=1000)
    assert len(read_source(source, max_bytes=2000)) == 2000


def test_read_source_never_blocks_on_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    source = ImageSource(location="pipe.png", path=tmp_path / "pipe.png")
    started = time.monotonic()
    with pytest.raises(ImageLoadError, match="not a regular file"):
        read_source(source)
    assert time.monotonic() - started < 5


def test_read_source_errors_are_image_load_errors(tmp_path):
    with pytest.raises(ImageLoadError, match="file not found"):
        read_source(ImageSource(location="gone.png", path=tmp_path / "gone.png"))
    with pytest.raises(ImageLoadError, match="not a regular file|cannot read file"):
        read_source(ImageSource(location="folder", path=tmp_path))
    with pytest.raises(ImageLoadError, match="neither a path nor a URL"):
        read_source(ImageSource(location="nothing"))


# ----------------------------------------------------------------------------------------------- URLs


class Handler(BaseHTTPRequestHandler):
    """Routes for the URL tests; records the User-Agent of every request."""

    user_agents: list[str] = []

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def send_body(self, body: bytes, length: int | None = None, content_type: str = "image/png") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        Handler.user_agents.append(self.headers.get("User-Agent", ""))
        with contextlib.suppress(
            BrokenPipeError, ConnectionResetError
        ):  # the client gave up, as tests intend
            self.route()

    def route(self) -> None:
        if self.path == "/image.png":
            self.send_body(PNG, len(PNG))
        elif self.path == "/big-declared":
            self.send_body(b"x" * 100, length=10_000_000)
        elif self.path == "/big-undeclared":
            self.send_body(b"x" * 5000)  # no Content-Length: read until the connection closes
        elif self.path == "/slow":
            time.sleep(1.5)
            self.send_body(PNG, len(PNG))
        elif self.path == "/trickle":
            self.send_response(200)
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/image.png")
            self.end_headers()
        elif self.path == "/redirect-ftp":
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/secret.png")
            self.end_headers()
        elif self.path == "/odd-length":
            self.send_response(200)
            self.send_header("Content-Length", "\u00b2")  # "²": str.isdigit() says yes, int() raises ValueError
            self.end_headers()
            self.wfile.write(PNG)
        elif self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only a few bytes")
        else:
            self.send_error(404, "Not Found")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # loopback only
    httpd.daemon_threads = True
    httpd.block_on_close = False
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def fetch(url: str, **kwargs) -> bytes:
    """One download attempt (retries have their own tests in test_fetch_retry.py)."""
    from inspector.discovery import RetryPolicy

    (source,) = discover([url])
    return read_source(source, **{"retry": RetryPolicy(attempts=1), **kwargs})


def test_url_sources_are_downloaded_with_a_user_agent(server):
    Handler.user_agents.clear()
    assert fetch(f"{server}/image.png") == PNG
    assert Handler.user_agents == [USER_AGENT]
    assert USER_AGENT.startswith("inspector/")


def test_redirects_to_http_are_followed(server):
    assert fetch(f"{server}/redirect") == PNG


def test_redirects_to_other_schemes_are_refused(server):
    with pytest.raises(ImageLoadError, match="HTTP 302"):
        fetch(f"{server}/redirect-ftp")


def test_http_errors_become_image_load_errors(server):
    with pytest.raises(ImageLoadError, match="^HTTP 404 Not Found$"):
        fetch(f"{server}/missing.png")


def test_declared_oversize_downloads_are_refused_before_reading(server):
    with pytest.raises(ImageLoadError, match=r"download too large: 10000000 bytes \(limit 1000\)"):
        fetch(f"{server}/big-declared", max_bytes=1000)


def test_undeclared_oversize_downloads_stop_at_the_limit(server):
    with pytest.raises(ImageLoadError, match="download too large: over 1000 bytes"):
        fetch(f"{server}/big-undeclared", max_bytes=1000)
    assert len(fetch(f"{server}/big-undeclared", max_bytes=5000)) == 5000


def test_a_server_that_does_not_answer_times_out(server):
    started = time.monotonic()
    with pytest.raises(ImageLoadError, match="timed out after 0.3 s"):
        fetch(f"{server}/slow", timeout=0.3)
    assert time.monotonic() - started < 1.4


def test_a_server_that_trickles_bytes_meets_the_overall_deadline(server):
    started = time.monotonic()
    with pytest.raises(ImageLoadError, match="timed out after 0.5 s"):
        fetch(f"{server}/trickle", timeout=0.5)
    assert time.monotonic() - started < 1.5


def test_a_content_length_of_non_ascii_digits_is_ignored_not_a_crash(server):
    # "²".isdigit() is True and int("²") raised ValueError out of the download: such a header declares nothing
    assert fetch(f"{server}/odd-length") == PNG
    with pytest.raises(ImageLoadError, match="download too large: over 10 bytes"):
        fetch(f"{server}/odd-length", max_bytes=10)


def test_a_connection_closed_early_is_an_image_load_error(server):
    with pytest.raises(ImageLoadError, match="incomplete"):
        fetch(f"{server}/short")


def test_an_unreachable_host_is_an_image_load_error(server):
    import socket

    with socket.socket() as probe:  # a port on loopback that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ImageLoadError, match="cannot fetch URL"):
        fetch(f"http://127.0.0.1:{port}/x.png", timeout=5)
