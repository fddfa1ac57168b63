"""What the command line shows: consoles, progress bars and one-line errors. CLI side only: the library never
imports this module (it takes progress objects, e.g. `Scanner(progress=...)`, and raises `InspectorError`)."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from inspector.errors import InspectorError
from inspector.interrupts import Terminated, raise_if_stopped, stop_signals_as_interrupts


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn the library's `InspectorError`s into one-line `Error: ...` messages (no traceback).

    Anything else is a bug and is left to show as one: a `KeyError` from our own code must not pass for a
    user's mistake."""
    try:
        yield
    except InspectorError as error:
        text = str(error).strip()
        raise click.ClickException(text.splitlines()[0] if text else type(error).__name__) from None


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """SIGTERM stops the command like Ctrl-C does (runs end `interrupted`, temporary files are removed), and the
    process then exits with the conventional status for death by SIGTERM, 143, which schedulers understand."""
    try:
        with stop_signals_as_interrupts():
            yield
            raise_if_stopped()  # a stop raised where Python dropped it (a finaliser) still stops the command
    except Terminated:
        click.echo("Stopped (SIGTERM).", err=True)
        sys.exit(128 + signal.SIGTERM)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def stdout_console() -> Console:
    """Tables on stdout; wide when piped so that nothing is cut off in files and tests."""
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True, width=200)
    return console


def progress_bar(console: Console, label: str, *fields: str) -> Progress:
    """A bar with count, the given task-field columns, elapsed time and ETA; silent when not on a terminal."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(text) for text in fields),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )


class RichScanProgress:
    """A `ScanProgress`: bar with images/s and ETA on stderr; silent when stderr is not a terminal."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = progress_bar(
            console, "scanning", "{task.fields[rate]} img/s", "[red]{task.fields[failed]} failed"
        )
        self.task = None
        self.failed = 0

    def __enter__(self) -> RichScanProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start(self, total: int, already_done: int) -> None:
        """Called again with a larger total when more images join (a multi-GPU scan's shards start one by one)."""
        if self.task is None:
            self.task = self.progress.add_task("scan", total=total, completed=already_done, rate="-", failed=0)
        else:
            self.progress.update(self.task, total=total)

    def advance(self, n_images: int, n_failed: int) -> None:
        if self.task is None:
            return
        self.failed += n_failed
        self.progress.advance(self.task, n_images)
        task = self.progress.tasks[0]
        rate = f"{task.speed:.2f}" if task.speed else "-"
        self.progress.update(self.task, rate=rate, failed=self.failed)

    def message(self, text: str) -> None:
        self.console.print(f"[yellow]{text}")
