"""Files and folders the commands write (the HTML report, samples, model folders): checked before slow work
starts, written atomically, and every failure a one-line `OutputError` that names the path and the reason."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from inspector.errors import InputError, OutputError

NAME_MAX_BYTES = 255
"""The longest file or folder name (one path component) in bytes: ext4, xfs, btrfs, tmpfs, APFS, NTFS (chars)."""

PATH_MAX_BYTES = 4096
"""The longest path in bytes the kernel takes (Linux; longer is `File name too long` whatever the names)."""


def check_path_names(path: str | Path, option: str) -> Path:
    """Refuse a path the operating system would refuse with `File name too long` (an OSError from wherever it is
    first used, even `exists()`): a name in it over 255 bytes, or the whole over 4096. Works for input and output
    paths alike; touches nothing."""
    target = Path(path).expanduser()
    for name in target.parts:
        size = len(os.fsencode(name))
        if size > NAME_MAX_BYTES:
            raise InputError(
                f"{option}: the name {name[:24]}… in it is {size} bytes long, more than the {NAME_MAX_BYTES} bytes a "
                "file or folder name may have; pass a shorter path"
            )
    size = len(os.fsencode(str(target)))
    if size >= PATH_MAX_BYTES:
        raise InputError(
            f"{option}: the path is {size} bytes long, more than the {PATH_MAX_BYTES - 1} bytes a path may have; "
            "pass a shorter path"
        )
    return target


def check_output_file(path: str | Path, option: str) -> Path:
    """Refuse, before any slow work, an output file path that cannot be written: empty, too long, a folder, under
    a file, or in a folder this process may not write to. Creates nothing (a missing parent folder is made on
    write)."""
    if str(path).strip() == "":
        raise InputError(f"{option} is empty; pass a file name such as report.html")
    target = check_path_names(path, option)
    if target.is_dir():
        raise OutputError(f"{option} {path} is a folder; pass a file name, e.g. {target / 'report.html'}")
    folder = _nearest_existing(target.parent)
    if not folder.is_dir():
        raise OutputError(f"{option} {path}: {folder} is a file, not a folder; pass another path")
    _check_writable(folder, f"{option} {path}")
    return target


def make_folder(path: str | Path, what: str) -> Path:
    """`mkdir -p`, with a one-line error (`what` says what the folder is for) when it cannot be done."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create folder {path} for {what} ({_reason(error)}); pass another path") from None
    return folder


def write_text_atomic(path: str | Path, text: str, what: str) -> Path:
    """Write `text` (UTF-8) to `path` through a temporary file beside it and a rename, so a reader never sees half
    a file; on any failure (full disk, permissions) the temporary file is removed and the old file kept."""
    target = Path(path).expanduser()
    make_folder(target.parent, what)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except OSError as error:
        raise OutputError(f"cannot write {what} {path}: {_reason(error)}") from None
    finally:  # also on KeyboardInterrupt / SIGTERM: never leave the temporary file behind
        tmp.unlink(missing_ok=True)
    return target


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _check_writable(folder: Path, what: str) -> None:
    problem = writable_problem(folder)
    if problem is not None:
        raise OutputError(f"{what}: cannot write in {folder} ({problem}); pass another path")


def writable_problem(folder: Path) -> str | None:
    """Why this process cannot create files in `folder`, or None if it can. Tried, not guessed: permission bits
    do not tell (root ignores them; read-only mounts, immutable folders and quotas do not show in them)."""
    try:
        handle, name = tempfile.mkstemp(prefix=".inspector-check.", dir=folder)
    except OSError as error:
        return _reason(error)
    os.close(handle)
    os.unlink(name)
    return None


def _reason(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return "no space left on the device; free some space or write elsewhere"
    return error.strerror or str(error)
