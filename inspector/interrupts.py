"""Stop signals as exceptions in the main thread: SIGTERM (docker stop, Slurm, systemd, kill) is handled like
Ctrl-C, so a stopped scan ends its run `interrupted` and cleans up (temporary files, open transactions) instead of
dying mid-write and staying `running` forever; and neither signal ever cuts a database write in two.

Why writes are shielded: Python raises a signal's exception wherever the main thread is. Raised while SQLAlchemy
executes a statement, it makes SQLAlchemy close ("invalidate") the connection while the exception's traceback
still holds the statement's cursor, and SQLite keeps such a connection open, with its transaction and write lock,
until the cursor is freed: the next write of the same process (`Store.finish_run`, on a second connection) waited
60 s for "database is locked", exited 1 and left the run `running`. So a stop that arrives inside `deferred()` is
held until the block ends, and raised there. And a stop is remembered until the command ends: one raised inside a
finaliser (where Python prints it and drops it; once a scan ran on to `completed`) is raised again at the end of
the next `deferred()` block, or by `raise_if_stopped` when the command's work is done, so it is never lost.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM; everything that handles Ctrl-C handles it."""


class _State:
    def __init__(self) -> None:
        #: Whether our handlers are installed (inside `stop_signals_as_interrupts`).
        self.installed = False
        #: How deep the main thread is in `deferred()` blocks (0: a stop is raised at once).
        self.deferring = 0
        #: The stop signal received since the handlers were installed, if any.
        self.stop: int | None = None


_STATE = _State()


def _exception(signum: int) -> KeyboardInterrupt:
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return Terminated(f"stopped by signal {signal.Signals(signum).name}")


def _on_stop_signal(signum: int, frame: object) -> None:
    _STATE.stop = _STATE.stop or signum
    if not _STATE.deferring:
        raise _exception(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def stop_signals_as_interrupts() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` and Ctrl-C `KeyboardInterrupt` in the main thread, except inside
    `deferred()` blocks, which they end instead; the previous handlers are restored after. SIGINT is only taken
    over from Python's default handler (an ignored or custom one stays). A no-op outside the main thread (Python
    only delivers signals there) and when already inside."""
    if not _in_main_thread() or _STATE.installed:
        yield
        return
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_stop_signal)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_stop_signal)
    _STATE.installed, _STATE.stop, _STATE.deferring = True, None, 0
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _STATE.installed, _STATE.stop, _STATE.deferring = False, None, 0


def raise_if_stopped() -> None:
    """Raise the stop signal received since `stop_signals_as_interrupts` began, if any: a command calls it when its
    work is done, so that a stop lost in a finaliser still stops it."""
    if _STATE.installed and _STATE.stop is not None:
        raise _exception(_STATE.stop)


@contextlib.contextmanager
def handlers_kept() -> Iterator[None]:
    """Around a call that installs its own signal handlers: ours are put back after it (Ray's `ray.init` installs
    a SIGTERM handler that exits with status 15, so a stopped Ray scan ended `failed`)."""
    if not _STATE.installed or not _in_main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except SystemExit as stop:  # Ray's handler, while the call runs: sys.exit(SIGTERM)
        if stop.code == signal.SIGTERM:
            raise Terminated(f"stopped by signal {signal.SIGTERM.name}") from None
        raise
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block that a stop signal does not cut short: a stop that arrives inside is raised when the block ends
    (unless another exception is already leaving it), as is one received earlier and lost. Nested blocks raise at
    the end of the outermost. A no-op outside the main thread and outside `stop_signals_as_interrupts`."""
    if not _STATE.installed or not _in_main_thread():
        yield
        return
    _STATE.deferring += 1
    try:
        yield
    finally:
        _STATE.deferring -= 1
    if not _STATE.deferring and _STATE.stop is not None:
        raise _exception(_STATE.stop)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Inside a `deferred()` block, a part that a stop signal ends at once (a scan's loop over batches); a stop
    held until now is raised on entry."""
    if not _STATE.installed or not _in_main_thread():
        yield
        return
    saved, _STATE.deferring = _STATE.deferring, 0
    try:
        if _STATE.stop is not None:
            raise _exception(_STATE.stop)
        yield
    finally:
        _STATE.deferring = saved
