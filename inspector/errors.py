"""The library's one exception family.

Every error the library raises on purpose — bad input, a file it cannot use, a model it cannot load — is an
`InspectorError` whose message is one line that says what to fix. The CLI turns exactly these into `Error: ...`
lines; anything else that escapes is a bug and shows as one (a traceback), never as a user mistake.
"""

from __future__ import annotations


class InspectorError(Exception):
    """Base class: a problem the user can fix, with a one-line message saying how."""


class InputError(InspectorError):
    """An input, option or file the user gave cannot be used."""


class DiscoveryError(InputError):
    """An input can't be used at all (it does not exist, is not a file or folder, is a malformed URL)."""


class ImageLoadError(InspectorError):
    """One image cannot be read or decoded. The message is a short reason fit for a report cell."""


class FetchError(ImageLoadError):
    """An image URL could not be downloaded. `transient` failures (timeouts, HTTP 429 and 5xx, connection resets)
    may work later: a scan retries them with backoff, and a rerun tries them again. Others (404, too large) stay."""

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        #: Seconds the server asked us to wait (a 429's or 503's Retry-After header), if it said.
        self.retry_after = retry_after


class TruthError(InputError):
    """The truth CSV cannot be used (missing file or column, no way to match rows to images)."""


class OutputError(InputError):
    """A file the command must write (the HTML report, a model folder, ...) cannot be written there."""


class StoreError(InspectorError):
    """The results database cannot be opened or used; the message says how to fix it."""


class SchemaTooNewError(StoreError):
    """The database has migrations this version of inspector does not know."""


class RunNotFoundError(StoreError):
    """No run with the id or name asked for; the message lists the latest runs."""


class BackendError(InspectorError):
    """The model cannot be loaded or run (bad id, not a vision-language model, ...). Message says how to fix it."""


class ShardError(InspectorError):
    """A shard's process failed; the message names each shard and its error."""


class TrainingError(InspectorError):
    """Training cannot start or go on with this model, data or setting; the message says what to change."""


class NoDecisionsError(InputError):
    """`inspector train --reviews`: a database (or the runs chosen in it) holds no imported decisions."""


class NoCatalogueError(InputError):
    """`inspector train --reviews`: a run was scanned without a catalogue, so it has no values to learn."""


class RayError(InspectorError):
    """A scan with --ray cannot start: Ray is not installed, or the cluster cannot be reached or used."""


class MissingExtraError(InputError):
    """An option needs an optional package that is not installed; the message names the pip extra."""
