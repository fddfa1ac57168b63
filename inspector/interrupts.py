"""SIGTERM (docker stop, Slurm, systemd, kill) handled like Ctrl-C, so a stopped scan ends its run `interrupted`
and cleans up (temporary files, open transactions) instead of dying mid-write and staying `running` forever."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM; everything that handles Ctrl-C handles it."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` in the main thread; the previous handler is restored after.
    A no-op outside the main thread (Python only delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
