"""Find the images a scan should look at (folders, single files, http(s) URLs) and read their bytes safely."""

from __future__ import annotations

import http.client
import logging
import os
import re
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from inspector import __version__
from inspector.errors import DiscoveryError, FetchError  # noqa: F401 - DiscoveryError is part of this API
from inspector.images import ImageLoadError

log = logging.getLogger(__name__)

#: File extensions (lower-case, without the dot) that a folder walk picks up; compared case-insensitively.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"})

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
USER_AGENT = f"inspector/{__version__} (product image checker)"

_URL_PATTERN = re.compile(r"^https?://", re.IGNORECASE)
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ImageSource:
    """One image to scan: a local file or a URL."""

    #: What to show the user: the path as reached from the given input, or the URL.
    location: str
    path: Path | None = None
    url: str | None = None
    #: The scan root it was found under (a folder given as input; a single file's parent folder).
    root: Path | None = None

    @property
    def is_url(self) -> bool:
        return self.url is not None



def has_image_extension(name: str) -> bool:
    _, dot, extension = name.rpartition(".")
    return bool(dot) and extension.lower() in IMAGE_EXTENSIONS


def discover(inputs: Sequence[str | Path]) -> list[ImageSource]:
    """List the images under the inputs, in a deterministic order, each real file once.

    Folders are walked depth first (a folder's files by name, then its subfolders by name); hidden files and
    folders (".name") are skipped; image files are recognised by extension (IMAGE_EXTENSIONS); symlinks are
    followed but a folder already walked is never entered again, so symlink loops terminate. A file named
    directly is taken whatever its extension. http(s) URLs are kept as they are. Unreadable subfolders are
    skipped with a logged warning.
    """
    sources: list[ImageSource] = []
    seen_files: set[object] = set()
    seen_urls: set[str] = set()
    walked_folders: set[tuple[int, int]] = set()

    def add_file(path: Path, root: Path) -> None:
        key = _file_identity(path)
        if key in seen_files:
            return
        seen_files.add(key)
        sources.append(ImageSource(location=str(path), path=path, root=root))

    for item in inputs:
        if isinstance(item, str) and _URL_PATTERN.match(item):
            url = _check_url(item)
            if url not in seen_urls:
                seen_urls.add(url)
                sources.append(ImageSource(location=url, url=url))
            continue
        path = Path(item)
        try:
            info = path.stat()
        except FileNotFoundError:
            raise DiscoveryError(
                f"{item}: no such file or folder (give image files, folders of images or http(s) URLs)"
            ) from None
        except OSError as exc:
            raise DiscoveryError(f"{item}: cannot be read ({exc.strerror or exc})") from None
        if stat.S_ISDIR(info.st_mode):
            for file_path in _walk(path, walked_folders):
                add_file(file_path, path)
        elif stat.S_ISREG(info.st_mode):
            add_file(path, path.parent)
        else:
            raise DiscoveryError(f"{item}: not a regular file or folder (give image files, folders or URLs)")
    return sources


def _check_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unclosed [IPv6 address
        parts = None
    if parts is None or not parts.hostname:
        raise DiscoveryError(f"{url}: not a valid URL (expected http://host/path or https://host/path)")
    return url


def _file_identity(path: Path) -> object:
    """Same real file (symlinks, hard links, different spellings of the path) -> same key."""
    try:
        info = path.stat()
    except OSError:  # broken symlink: fall back to where it points
        return os.path.realpath(path)
    return (info.st_dev, info.st_ino)


def _walk(root: Path, walked: set[tuple[int, int]]) -> Iterator[Path]:
    """Depth-first, sorted by name; each real folder entered once (this is what stops symlink loops)."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in walked:
                continue
            walked.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as entries:
                children = sorted(entries, key=lambda entry: entry.name)
        except OSError as exc:
            if folder == root:
                raise DiscoveryError(f"{root}: cannot read folder ({exc.strerror or exc})") from None
            log.warning("skipping folder %s: %s", folder, exc.strerror or exc)
            continue
        subfolders = []
        for entry in children:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():  # follows symlinks
                    subfolders.append(folder / entry.name)
                elif entry.is_file():
                    if has_image_extension(entry.name):
                        yield folder / entry.name
                elif entry.is_symlink() and has_image_extension(entry.name):
                    yield folder / entry.name  # broken link: listed so the scan records why it fails
            except OSError as exc:
                log.warning("skipping %s: %s", folder / entry.name, exc.strerror or exc)
        # Files of a folder come first, then its subfolders in name order.
        stack.extend(reversed(subfolders))


@dataclass(frozen=True)
class RetryPolicy:
    """How a download that failed transiently is tried again: `attempts` in all, waiting `base_s`, 2·`base_s`, ...
    up to `cap_s` between them (or what a Retry-After header asks, also capped), so one slow server costs a scan
    seconds, not minutes."""

    attempts: int = 4
    base_s: float = 0.5
    cap_s: float = 8.0

    def delay(self, attempt: int, error: FetchError) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if error.retry_after is not None:
            return min(self.cap_s, max(0.0, error.retry_after))
        return min(self.cap_s, self.base_s * 2 ** (attempt - 1))


DEFAULT_RETRY = RetryPolicy()


def read_source(
    source: ImageSource,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = 30,
    retry: RetryPolicy | None = None,
) -> bytes:
    """The raw bytes of a source; raises ImageLoadError (never blocks on a FIFO, never reads past max_bytes).
    A URL whose download fails transiently is tried again (`retry`, default `DEFAULT_RETRY`); the last failure
    is raised as a `FetchError` whose `transient` says whether a later rerun should try it again."""
    if source.url is not None:
        policy = retry or DEFAULT_RETRY
        for attempt in range(1, policy.attempts + 1):
            try:
                return _read_url(source.url, max_bytes, timeout)
            except FetchError as error:
                if not error.transient or attempt >= policy.attempts:
                    if error.transient and policy.attempts > 1:
                        raise FetchError(
                            f"{error} (after {policy.attempts} attempts)", transient=True
                        ) from None
                    raise
                time.sleep(policy.delay(attempt, error))
    if source.path is None:
        raise ImageLoadError("source has neither a path nor a URL")
    return _read_file(source.path, max_bytes)


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO that replaced the file would otherwise wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImageLoadError("broken symlink" if path.is_symlink() else "file not found") from None
    except OSError as exc:
        raise ImageLoadError(f"cannot read file ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageLoadError("not a regular file")
        if info.st_size > max_bytes:
            raise ImageLoadError(f"file too large: {info.st_size} bytes (limit {max_bytes})")
        chunks: list[bytes] = []
        received = 0
        while received <= max_bytes:  # the file may grow while it is read
            chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - received))
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
    except OSError as exc:
        raise ImageLoadError(f"cannot read file ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if received > max_bytes:
        raise ImageLoadError(f"file too large: over {max_bytes} bytes")
    return b"".join(chunks)


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s), never to ftp:// or anything else."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.HTTPError(
                newurl, code, f"redirect to a non-http(s) URL: {newurl}", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


#: HTTP statuses worth trying again: request timeout, too many requests, and the server-side 5xx family.
_TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


def _retry_after(headers) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare for images and is ignored)."""
    value = (headers or {}).get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _declared_length(header: str | None) -> int | None:
    """The Content-Length header's value, or None where it is absent or not ASCII digits ("²" is a digit to
    str.isdigit() but int() refuses it): such a header declares nothing, as http.client treats it too."""
    value = (header or "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _read_url(url: str, max_bytes: int, timeout: float) -> bytes:
    """Download with a User-Agent, a deadline for the whole transfer (not just per read) and a size limit."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.5"})
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    deadline = time.monotonic() + timeout
    try:
        with opener.open(request, timeout=timeout) as response:
            length = _declared_length(response.headers.get("Content-Length"))
            if length is not None and length > max_bytes:
                raise ImageLoadError(f"download too large: {length} bytes (limit {max_bytes})")
            chunks: list[bytes] = []
            received = 0
            while True:
                if time.monotonic() > deadline:
                    raise FetchError(f"download timed out after {timeout:g} s", transient=True)
                # read1: return what has arrived, so a server trickling bytes still meets the deadline.
                chunk = response.read1(min(_CHUNK, max_bytes + 1 - received))
                if not chunk:
                    break
                chunks.append(chunk)
                received += len(chunk)
                if received > max_bytes:
                    raise ImageLoadError(f"download too large: over {max_bytes} bytes")
            if length is not None and received < length:
                raise FetchError(f"download incomplete: {received} of {length} bytes", transient=True)
    except ImageLoadError:
        raise
    except urllib.error.HTTPError as exc:
        raise FetchError(
            f"HTTP {exc.code} {exc.reason}".strip(),
            transient=exc.code in _TRANSIENT_HTTP,
            retry_after=_retry_after(exc.headers),
        ) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise FetchError(f"download timed out after {timeout:g} s", transient=True) from None
        raise FetchError(f"cannot fetch URL ({exc.reason})", transient=True) from None
    except TimeoutError:
        raise FetchError(f"download timed out after {timeout:g} s", transient=True) from None
    except http.client.IncompleteRead:
        raise FetchError("download incomplete (connection closed early)", transient=True) from None
    except ValueError as exc:  # a URL urllib cannot use: trying again will not help
        raise FetchError(f"cannot fetch URL ({type(exc).__name__}: {exc})", transient=False) from None
    except (OSError, http.client.HTTPException) as exc:  # connection reset or refused, broken chunking
        raise FetchError(f"cannot fetch URL ({type(exc).__name__}: {exc})", transient=True) from None
    return b"".join(chunks)
