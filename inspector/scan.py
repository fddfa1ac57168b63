"""The scan job: images → model answers in batches → parsed fields → scores against the catalogue → store.

Stages overlap: a thread pool reads, hashes and decodes images ahead of the model (and, for backends that can,
also turns each into model inputs: Phi-3.5-vision's crops, tokens, pinned pixels); the model runs batches of images
that share a batch key (Phi-3.5-vision's crop grid); each finished batch is committed in one transaction before the next one runs (12 ms
per 64 images, under 1% of a GPU batch: BENCHMARKS.md), so a scan killed at any moment loses at most the batch in
flight, and a rerun of the same command resumes the same run and skips what is stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from inspector.backends import Backend, GenerationSettings, backend_name, choose_backend
from inspector.backends.base import Generation
from inspector.checkpoints import TrainedQuestion
from inspector.confidence import field_confidences, with_confidence
from inspector.discovery import ImageSource, discover, read_source
from inspector.errors import FetchError, InputError, InspectorError, StoreError
from inspector.fields import BUILTIN_FIELDS, FieldResult, FieldSet, ProductFields, TruthRecord
from inspector.images import ImageLoadError, LoadedImage, decode_image, make_thumbnail, sha256_hex
from inspector.interrupts import deferred, interruptible
from inspector.outputs import check_output_file, check_path_names
from inspector.parsing import read_answer
from inspector.prompts import Prompt
from inspector.registry import resolve_model
from inspector.scan_config import (  # noqa: F401 - re-exported: ScanConfig and its run key live there (light)
    DEFAULT_MODEL,
    NOT_IN_RUN_KEY,
    RUN_KEY_FORMAT,
    ScanConfig,
    _config_defaults,
    run_key_digest,
)
from inspector.scoring import PriceTolerance, score_answer
from inspector.store import RUN_NAME_LENGTH, ItemResult, Store, length_problem

if TYPE_CHECKING:  # pandas is only imported when a scan has a catalogue
    from inspector.truth import TruthTable

class ScanProgress(Protocol):
    """What the CLI shows while a scan runs; the library never prints."""

    def start(self, total: int, already_done: int) -> None:
        """The scan found `total` images; may be called again with a larger total (multi-GPU shards)."""

    def advance(self, n_images: int, n_failed: int) -> None: ...

    def message(self, text: str) -> None: ...


class SilentProgress:
    """A `ScanProgress` that shows nothing (library use, tests)."""

    def start(self, total: int, already_done: int) -> None:
        pass

    def advance(self, n_images: int, n_failed: int) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class ScanSummary:
    run_id: int
    run_key: str
    status: str
    found: int
    already_done: int
    processed: int
    failed: int
    duplicates: int
    elapsed_s: float
    images_per_s: float
    truth: dict | None = None
    report_path: str | None = None
    metrics: dict = field(default_factory=dict)
    #: Of `failed`: images whose answer hit a bug of ours while it was read (recorded on each image).
    internal_errors: int = 0
    #: Values left empty because no number holds them (a JSON integer of 309+ digits).
    unrepresentable_values: int = 0
    #: The run's images the model gave any field a value for (`Store.answered_images`), when counted.
    answered_images: int | None = None

    @classmethod
    def of_session(
        cls, run_id: int, run_key: str, status: str, found: int, counts: dict, stats: dict
    ) -> ScanSummary:
        """The summary of one scan session from its counts and the `session_stats` stored with it."""
        return cls(
            run_id=run_id,
            run_key=run_key,
            status=status,
            found=found,
            already_done=counts["already_done"],
            processed=counts["processed"],
            failed=counts["failed"],
            duplicates=counts["duplicates"],
            elapsed_s=stats["elapsed_s"],
            images_per_s=stats["images_per_s"] or 0.0,
            truth=stats["truth"],
            internal_errors=counts["internal_errors"],
            unrepresentable_values=counts["unrepresentable_values"],
        )


def with_report_and_metrics(config: ScanConfig, store: Store, summary: ScanSummary) -> ScanSummary:
    """A finished scan's HTML report (unless the config has none) and metrics: the one place a scan's report is
    written, whichever engine ran it (here, one process per GPU, or Ray)."""
    if config.report:
        from inspector.report import render_report

        summary.report_path = str(render_report(store, summary.run_id, Path(config.report)))
    summary.metrics = {name: m.to_dict() for name, m in store.run_metrics(summary.run_id).items()}
    summary.answered_images = store.answered_images(summary.run_id)
    return summary


def new_counts() -> dict[str, int]:
    """A scan session's counters, as `commit_batch` and the batch loops advance them. `internal_errors`: failed
    images whose failure is a bug of ours (see `ItemFinisher.item`); `unrepresentable_values`: values left empty
    because no number holds them (see `parsing.ReadAnswer`)."""
    return {
        "processed": 0,
        "failed": 0,
        "duplicates": 0,
        "already_done": 0,
        "internal_errors": 0,
        "unrepresentable_values": 0,
    }


def session_stats(counts: dict, elapsed: float, truth_summary: dict | None, **extra: object) -> dict:
    """What `Store.finish_run` keeps about one scan session (local, multi-GPU shard or Ray): counts, speed (answered
    images over wall time), the catalogue match, and anything the caller adds."""
    answered = counts["processed"] - counts["failed"]
    return {
        "elapsed_s": round(elapsed, 3),
        "n_images": counts["processed"],
        "n_failed": counts["failed"],
        "images_per_s": round(answered / elapsed, 3) if elapsed > 0 else None,
        "duplicates": counts["duplicates"],
        "already_done": counts["already_done"],
        "internal_errors": counts["internal_errors"],
        "unrepresentable_values": counts["unrepresentable_values"],
        "truth": truth_summary,
        **extra,
    }


@dataclass
class PendingImage:
    """An image read and decoded, waiting for the model."""

    source: ImageSource
    sha256: str
    loaded: LoadedImage
    thumbnail: bytes | None
    #: Model inputs made in the loader thread (`backend.prepare_item`), when the backend supports it.
    prepared: object | None = None


def load_image(
    source: ImageSource, prepare: Callable[[object], object] | None = None
) -> PendingImage | ItemResult:
    """Stage 1 of a scan (local loader threads and Ray's CPU stage alike): `_load`, then the backend's per-image
    input preparation; a failure there leaves `prepared` unset, so the image goes through the plain `generate`
    path, where an error is isolated to it and recorded as usual."""
    loaded = _load(source)
    if prepare is not None and isinstance(loaded, PendingImage):
        try:
            loaded.prepared = prepare(loaded.loaded.image)
        except Exception:  # noqa: BLE001 - the plain path reports the error per image
            loaded.prepared = None
    return loaded


def unreadable_sha(source: ImageSource) -> str:
    """The identity of an image whose bytes could not be read: a stand-in from where it lives."""
    return sha256_hex(f"unreadable:{source.location}".encode())


def _load(source: ImageSource) -> PendingImage | ItemResult:
    """Read, hash and decode one image; a failure becomes a finished ItemResult carrying the error."""
    try:
        data = read_source(source)
    except ImageLoadError as error:
        # A transient download failure is stored as retryable, so a rerun tries it again instead of counting it done.
        sha = unreadable_sha(source)
        item = _failed_item(source, sha, str(error))
        item.retryable = isinstance(error, FetchError) and error.transient
        return item
    sha = sha256_hex(data)
    try:
        loaded = decode_image(data)
    except ImageLoadError as error:
        return _failed_item(source, sha, str(error), n_bytes=len(data))
    try:
        thumbnail = make_thumbnail(loaded.image)
    except Exception:  # a thumbnail is a nicety; never lose the image over it
        thumbnail = None
    return PendingImage(source, sha, loaded, thumbnail)


def _failed_item(source: ImageSource, sha: str, error: str, n_bytes: int | None = None) -> ItemResult:
    return ItemResult(
        sha256=sha,
        path=source.location,
        width=None,
        height=None,
        format=None,
        n_bytes=n_bytes,
        thumbnail=None,
        raw_output=None,
        parsed=None,
        latency_ms=None,
        error=error,
        truth=None,
        field_results=[],
    )


@dataclass
class ScanInputs:
    """What a scan reads before its model loads: the images found and the catalogue (None without --truth)."""

    sources: list[ImageSource]
    truth: TruthTable | None
    #: Things the user should know before the model loads (e.g. a fine-tuned model asked another question).
    warnings: list[str] = field(default_factory=list)


def read_scan_inputs(config: ScanConfig) -> ScanInputs:
    """Check everything about a scan's inputs that can fail (prompt, tolerance, paths, truth CSV, where the report
    goes) and read them, so that bad input is reported before the slow model load and nothing is read twice."""
    problem = length_problem(config.run_name, RUN_NAME_LENGTH)
    if problem:
        raise InputError(f"--run-name {problem}")
    if config.report is not None:
        check_output_file(config.report, "--report")
    if choose_backend(config.model).runs_model:  # the fake model runs nowhere; an unknown backend stops here
        from inspector.backends import check_model_reference
        from inspector.backends.hf import check_device

        resolve_model(config.model)  # a registered name without its folder is an error now, not after loading
        check_device(config.device)
        check_model_reference(config.model)
    config.scan_prompt()  # reads the fields file too
    PriceTolerance.parse(config.price_tolerance)
    sources = discover(config.inputs)
    truth = None
    if config.truth:
        from inspector.truth import load_truth

        truth = load_truth(config.truth, config.truth_columns, config.truth_key, config.fieldset())
    warning = trained_prompt_mismatch(config)
    return ScanInputs(sources, truth, ([warning] if warning else []) + (truth.warnings if truth else []))


#: The scan settings that make up the question a model is asked, in the groups a checkpoint's question is adopted
#: by: a prompt name and a prompt file are one choice.
QUESTION_SETTINGS: tuple[tuple[str, ...], ...] = (
    ("prompt", "prompt_file"),
    ("fields_file",),
    ("sizes",),
    ("num_crops",),
)


def trained_question(model: str) -> TrainedQuestion | None:
    """The question `model` was trained on, when it is a folder `inspector train` wrote (or a registered name
    whose folder is one); None for any other model."""
    if "://" in model or not choose_backend(model).runs_model:
        return None
    folder = check_path_names(resolve_model(model), "--model")  # a local folder or a hub id
    return TrainedQuestion.of(folder) if folder.is_dir() else None


def ask_as_trained(config: ScanConfig) -> tuple[ScanConfig, TrainedQuestion | None]:
    """`config` asking the question its model was trained on, where it leaves that to the model: each group of
    `QUESTION_SETTINGS` that the config leaves at its default is taken from the checkpoint's train_config.json;
    settings the config gives win. Returns the config and what was taken (None: nothing), as a question. The
    result's settings are the resolved ones, so its run key is that of the same scan with those options given."""
    question = trained_question(config.model)
    if question is None:
        return config, None
    defaults = _config_defaults(ScanConfig)
    adopted: dict[str, object] = {}
    for group in QUESTION_SETTINGS:
        if all(getattr(config, name) == defaults[name] for name in group):
            question.check_readable(group, config.model)
            adopted.update({name: getattr(question, name) for name in group})
    adopted = {name: value for name, value in adopted.items() if value != defaults[name]}
    if not adopted:
        return config, None
    return config.derive(**adopted), TrainedQuestion(**adopted)


def trained_prompt_mismatch(config: ScanConfig) -> str | None:
    """A warning when `config.model` is a folder `inspector train` wrote (its train_config.json) and the scan asks
    it another question than it was trained on (another prompt, sizes, fields or crops, given as options): a
    fine-tuned model answers its training question far better, and nothing else would tell the user why the
    answers got worse."""
    if "://" in config.model:
        return None
    check_path_names(config.model, "--model")  # a local folder, a hub id or fake:FILE
    from inspector.errors import InspectorError

    try:
        question = trained_question(config.model)
        if question is None:
            return None
        if question.missing:
            raise InputError(", ".join(question.missing.values()) + " not found")
        same = question.as_prompt().text == config.scan_prompt().text
    except (InspectorError, OSError, ValueError) as error:
        return f"{config.model} was fine-tuned with a prompt or fields file that cannot be read here ({error})"
    if same and question.num_crops in (None, config.num_crops):
        return None
    how = question.options()
    advice = f"; ask as it was trained: {how}" if how else "; ask with the default prompt and fields"
    return f"{config.model} was fine-tuned on another question than this scan asks{advice}"


def match_truth(
    table: TruthTable | None, sources: list[ImageSource]
) -> tuple[dict[str, TruthRecord], dict | None]:
    """Each image's catalogue row, keyed by its location, and the match summary (None without a catalogue)."""
    if table is None:
        return {}, None
    with_paths = [s for s in sources if s.path is not None]
    roots = sorted({s.root for s in with_paths if s.root is not None})
    match = table.match([s.path for s in with_paths], roots)
    by_location = {}
    for source in with_paths:
        record = match.records.get(source.path)
        if record is not None:
            by_location[source.location] = record
    return by_location, match.summary()


class Scanner:
    """Runs one scan. Library entry point: `Scanner(config, backend, store).run()`."""

    def __init__(
        self,
        config: ScanConfig,
        backend: Backend,
        store: Store,
        progress: ScanProgress | None = None,
        inputs: ScanInputs | None = None,
    ) -> None:
        """`inputs`: what `read_scan_inputs(config)` returned, when the caller already read it."""
        self.config = config
        self._inputs = inputs
        self.backend = backend
        self.store = store
        self.progress = progress or SilentProgress()
        self.fields = config.fieldset()
        self.prompt = config.scan_prompt()
        self.settings = config.generation_settings()
        self.tolerance = PriceTolerance.parse(config.price_tolerance)
        self.truth_by_location: dict[str, TruthRecord] = {}
        self.truth_summary: dict | None = None
        self.batch_size = config.batch_size or auto_batch_size(backend, self.settings)
        self.answerer = BatchAnswerer(backend, self.prompt, self.settings, self.progress.message)
        self.finisher = ItemFinisher(self.tolerance, config.title_threshold, self.fields)
        self.prepares_items = self.answerer.prepares_items
        #: Seconds the scan's thread spent waiting for the loader threads' next image.
        self.input_wait_seconds = 0.0

    @property
    def model_seconds(self) -> float:
        """Seconds the scan's thread spent inside the backend."""
        return self.answerer.model_seconds

    # -- set-up -----------------------------------------------------------------------------------------------

    def _sources(self) -> list[ImageSource]:
        sources = self._read_inputs().sources
        if self.config.limit is not None:
            sources = sources[: self.config.limit]
        index, count = self.config.shard
        return sources[index::count]

    def _read_inputs(self) -> ScanInputs:
        if self._inputs is None:
            self._inputs = read_scan_inputs(self.config)
        return self._inputs

    def _match_truth(self, sources: list[ImageSource]) -> None:
        self.truth_by_location, self.truth_summary = match_truth(self._read_inputs().truth, sources)

    # -- the run ----------------------------------------------------------------------------------------------

    def run(self, finalize: bool = True) -> ScanSummary:
        """Scan, committing batch by batch. `finalize=False` leaves closing the run to a parent (multi-GPU)."""
        config = self.config
        sources = self._sources()
        self._match_truth(sources)
        key = config.run_key(self.prompt)
        counts = new_counts()
        started = time.perf_counter()

        def stats() -> dict:
            return session_stats(
                counts,
                time.perf_counter() - started,
                self.truth_summary,
                model_s=round(self.model_seconds, 3),
                input_wait_s=round(self.input_wait_seconds, 3),
            )

        with deferred():  # no stop signal falls between creating the run and closing it (see `finishing_run`)
            run_id = start_run(self.store, config, self.prompt, self.backend, self.batch_size)
            with finishing_run(self.store, run_id, stats, finalize=finalize) as outcome:
                done = self.store.done_shas(run_id)
                self.progress.start(len(sources), 0)
                started = time.perf_counter()
                threads = _LoaderThreadsOnly(self.prepares_items and _on_gpu(self.backend))
                try:
                    for items in self._batches(sources, done, counts):
                        commit_batch(self.store, run_id, items, counts, self.progress)
                finally:
                    threads.restore()
        return ScanSummary.of_session(run_id, key, outcome.status, len(sources), counts, outcome.stats)

    def _batches(
        self, sources: list[ImageSource], done: set[str], counts: dict
    ) -> Iterator[list[ItemResult]]:
        """Decoded images grouped by batch key; each group runs once it holds `batch_size` images."""
        seen: set[str] = set(done)
        buckets: dict[object, list[PendingImage]] = {}
        failures: list[ItemResult] = []
        load = partial(load_image, prepare=self.answerer.prepare())
        with ThreadPoolExecutor(max_workers=max(1, self.config.workers), thread_name_prefix="decode") as pool:
            loads = _prefetch(pool, sources, ahead=max(2 * self.batch_size, 16), load=load)
            while True:
                waited = time.perf_counter()
                loaded = next(loads, None)
                self.input_wait_seconds += time.perf_counter() - waited
                if loaded is None:
                    break
                sha = loaded.sha256
                if sha in seen:
                    counts["already_done" if sha in done else "duplicates"] += 1
                    self.progress.advance(1, 0)
                    continue
                seen.add(sha)
                if isinstance(loaded, ItemResult):
                    failures.append(self._with_truth(loaded))
                    if len(failures) >= self.batch_size:
                        yield failures
                        failures = []
                    continue
                bucket = buckets.setdefault(self.backend.batch_key(loaded.loaded.image), [])
                bucket.append(loaded)
                if len(bucket) >= self.batch_size:
                    yield self._run_batch(bucket)
                    bucket.clear()
        if failures:
            yield failures
        for bucket in buckets.values():
            if bucket:
                yield self._run_batch(bucket)

    def _run_batch(self, batch: list[PendingImage]) -> list[ItemResult]:
        """Answers for a batch, parsed and scored."""
        return [
            self.finisher.item(answer, self.truth_by_location.get(answer.pending.source.location))
            for answer in self.answerer.answer(batch)
        ]

    def _with_truth(self, item: ItemResult) -> ItemResult:
        """A failed image's catalogue row and its (all missed) outcomes."""
        return self.finisher.failure(item, self.truth_by_location.get(item.path))


@dataclass
class Answer:
    """What the model said about one image (or why it said nothing)."""

    pending: PendingImage
    text: str | None
    latency_ms: float | None
    error: str | None
    #: The backend's answer with its tokens' log-probabilities, where it gave them (for per-field confidence).
    generation: Generation | None = None


class BatchAnswerer:
    """Stage 2 of a scan (the local Scanner's thread and each Ray GPU actor alike): one backend answering
    batches of decoded images."""

    def __init__(
        self,
        backend: Backend,
        prompt: Prompt,
        settings: GenerationSettings,
        message: Callable[[str], None] | None = None,
    ) -> None:
        self.backend = backend
        self.prompt = prompt
        self.settings = settings
        self.message = message or (lambda _text: None)
        #: Backends that can make each image's inputs alone (off the model's thread) and batch them later.
        self.prepares_items = bool(getattr(backend, "prepares_items", False)) and hasattr(
            backend, "generate_prepared"
        )
        #: Seconds spent inside the backend.
        self.model_seconds = 0.0

    def prepare(self) -> Callable[[object], object] | None:
        """What `load_image` calls to make one image's model inputs, when the backend can."""
        return partial(self.backend.prepare_item, prompt=self.prompt.text) if self.prepares_items else None

    def answer(self, batch: list[PendingImage]) -> list[Answer]:
        """Answers for a batch; a batch that runs out of memory is split in halves, any other failure is isolated
        to the images that cause it (each retried alone), so one bad image never costs the others."""
        started = time.perf_counter()
        try:
            if self.prepares_items and all(p.prepared is not None for p in batch):
                texts = self.backend.generate_prepared([p.prepared for p in batch], self.settings)
            else:
                texts = self.backend.generate(
                    [p.loaded.image for p in batch], [self.prompt.text] * len(batch), self.settings
                )
            latency_ms = (time.perf_counter() - started) * 1000 / len(batch)
            self.model_seconds += time.perf_counter() - started
        except Exception as error:  # noqa: BLE001 - every failure is recorded per image, never fatal
            if len(batch) == 1:
                return [Answer(batch[0], None, None, _describe_error(error))]
            if _is_out_of_memory(error):
                _free_memory()
                self.message(f"out of memory on a batch of {len(batch)}; retrying in halves")
            half = len(batch) // 2
            return self.answer(batch[:half]) + self.answer(batch[half:])
        generations = [Generation.of(text) for text in texts]
        return [Answer(p, g.text, latency_ms, None, g) for p, g in zip(batch, generations, strict=True)]


class ItemFinisher:
    """Stage 3 of a scan (local and Ray alike): parse an answer and score it against the image's catalogue row."""

    def __init__(
        self, tolerance: PriceTolerance, title_threshold: float, fieldset: FieldSet = BUILTIN_FIELDS
    ) -> None:
        self.tolerance = tolerance
        self.title_threshold = title_threshold
        self.fields = fieldset

    def item(self, answer: Answer, truth: TruthRecord | None) -> ItemResult:
        """The image's result. No answer can stop a scan: an exception while reading or scoring it (a bug of ours)
        is recorded on this image, with its type and message, as an internal error that the summary counts; the
        raw answer is kept, and a rerun tries the image again (after an upgrade, it may read)."""
        pending = answer.pending
        loaded = pending.loaded
        result = ItemResult(
            sha256=pending.sha256,
            path=pending.source.location,
            width=loaded.width,
            height=loaded.height,
            format=loaded.format,
            n_bytes=loaded.n_bytes,
            thumbnail=pending.thumbnail,
            raw_output=answer.text,
            latency_ms=answer.latency_ms,
            error=answer.error,
            truth=truth,
        )
        try:
            if answer.text is not None:
                read = read_answer(answer.text, self.fields)
                result.parsed, result.unrepresentable = read.fields, read.unrepresentable
            result.field_results = self.score(result.parsed, truth)
            if answer.generation is not None and result.parsed is not None and result.field_results:
                with_confidence(result.field_results, field_confidences(answer.generation, result.parsed, self.fields))
        except Exception as error:  # noqa: BLE001 - recorded on the image and counted, never the run's end
            result.parsed, result.unrepresentable = None, ()
            result.error = f"internal error while reading the answer (please report it): {_describe_error(error)}"
            result.internal_error = result.retryable = True
            try:
                result.field_results = self.score(None, truth)
            except Exception:  # noqa: BLE001 - the scorer itself failed: the image keeps no outcomes
                result.field_results = []
        return result

    def failure(self, item: ItemResult, truth: TruthRecord | None) -> ItemResult:
        """An image that could not be read, with its catalogue row and its (all missed) outcomes."""
        item.truth = truth
        item.field_results = self.score(None, truth)
        return item

    def score(self, parsed: ProductFields | None, truth: TruthRecord | None) -> list[FieldResult]:
        """Per-field outcomes against the catalogue row; an image that got no answer (it could not be read or the
        model failed on it) counts as having said nothing, so its catalogue values are "missed", not ignored."""
        if truth is None:
            return []
        unreadable = {name: cell.value for name, cell in truth.unreadable().items()}
        return score_answer(
            parsed or ProductFields(), truth.fields, self.tolerance, self.title_threshold, self.fields, unreadable
        )


def commit_batch(
    store: Store, run_id: int, items: list[ItemResult], counts: dict, progress: ScanProgress
) -> None:
    """Stage 4 of a scan (local and Ray alike): store a finished batch in one transaction, then count it."""
    store.add_batch(run_id, items)
    failed = sum(1 for item in items if item.error)
    counts["processed"] += len(items)
    counts["failed"] += failed
    counts["internal_errors"] += sum(1 for item in items if item.internal_error)
    counts["unrepresentable_values"] += sum(len(item.unrepresentable) for item in items)
    progress.advance(len(items), failed)


@dataclass
class RunOutcome:
    """How a scan session ended (see `finishing_run`): its status and the session stats stored with it."""

    status: str = "failed"
    stats: dict = field(default_factory=dict)


@contextmanager
def finishing_run(
    store: Store, run_id: int, stats: Callable[[], dict], *, finalize: bool = True
) -> Iterator[RunOutcome]:
    """The body of a scan session (local, shard or Ray); however it ends, the run is then closed with the status
    that says how: `completed`, `interrupted` (Ctrl-C, SIGTERM) or `failed` (any other exception, e.g. a full
    disk), with `stats()`. `finalize=False`: a completed session leaves closing the run to a parent.

    The body is `interruptible`; enter this inside `interrupts.deferred()` right after `start_run`, so that a stop
    signal can neither fall between creating the run and this block nor cut the closing short."""
    outcome = RunOutcome()
    try:
        with interruptible():
            yield outcome
        outcome.status = "completed"
    except KeyboardInterrupt:
        outcome.status = "interrupted"
        raise
    finally:
        outcome.stats = stats()
        if finalize or outcome.status != "completed":
            _close_run(store, run_id, outcome)


def _close_run(store: Store, run_id: int, outcome: RunOutcome) -> None:
    """`store.finish_run`; where even that cannot be written (a full disk: the failed commit's room is not always
    enough for it), the error says what the run holds and how to close it, instead of leaving it to look as if
    it were still running."""
    try:
        store.finish_run(run_id, outcome.status, outcome.stats)
    except StoreError as error:
        try:
            held = f"; it holds {store.get_run(run_id).n_images} images"
        except InspectorError:
            held = ""
        raise StoreError(
            f"{error}; run {run_id} could not be marked {outcome.status} either, so it still says running{held}: "
            "make room (or fix the database) and rerun the same command, which resumes it"
        ) from error


def start_run(
    store: Store, config: ScanConfig, prompt: Prompt, backend: Backend | None, batch_size: int
) -> int:
    """Create the run for this scan, or resume the run an identical earlier scan created."""
    settings = {
        k: v for k, v in asdict(config).items() if k not in ("inputs", "db", "report", "truth", "run_name")
    }
    settings["batch_size"] = batch_size
    settings["fields"] = config.fieldset().to_json()  # so that a report on this run knows its fields
    return store.start_run(
        config.run_key(prompt),
        name=config.run_name,
        model=config.model,
        backend=backend.describe().get("backend", "unknown") if backend else backend_name(config.model),
        prompt_name=prompt.name,
        prompt_text=prompt.text,
        settings=settings,
        versions=_versions(backend) if backend else {},
        inputs=list(config.inputs),
        truth_path=config.truth,
    )


def _prefetch(
    pool: ThreadPoolExecutor, sources: Sequence[ImageSource], ahead: int, load: Callable = load_image
) -> Iterator:
    """Results of `load` in order, with up to `ahead` images being read and decoded in the background."""
    pending = []
    iterator = iter(sources)
    for source in iterator:
        pending.append(pool.submit(load, source))
        if len(pending) >= ahead:
            break
    while pending:
        result = pending.pop(0).result()
        for source in iterator:
            pending.append(pool.submit(load, source))
            break
        yield result


def _on_gpu(backend: Backend) -> bool:
    try:
        return str(backend.describe().get("device", "cpu")).startswith("cuda")
    except Exception:  # noqa: BLE001 - a backend that cannot say is treated as CPU
        return False


class _LoaderThreadsOnly:
    """While a GPU model runs, the CPU's work is the loader threads' preprocessing: give torch's CPU operations one
    intra-op thread each, or N loader threads each fan out to every core and oversubscribe the machine."""

    def __init__(self, enabled: bool) -> None:
        self.previous: int | None = None
        if enabled:
            import torch

            self.previous = torch.get_num_threads()
            torch.set_num_threads(1)

    def restore(self) -> None:
        if self.previous is not None:
            import torch

            torch.set_num_threads(self.previous)
            self.previous = None


def _is_out_of_memory(error: BaseException) -> bool:
    try:
        import torch

        if isinstance(error, torch.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return "out of memory" in str(error).lower()


def _free_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _describe_error(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:500] if text else type(error).__name__


#: Largest batch `--batch-size auto` picks: 128 is the fastest measured for Phi-3.5-vision with the compiled
#: decoder on an H200 (BENCHMARKS.md); larger batches only add memory.
AUTO_BATCH_LIMIT = 128


def auto_batch_size(backend: Backend, settings: GenerationSettings | None = None) -> int:
    """A batch size from free GPU memory; 8 on CPU.

    Backends that know their memory per image (`memory_per_image(settings)`: KV cache for the longest prompt and
    answer plus prefill activations) are sized from it; otherwise a model of P parameters gets room for ~1 GB per
    image at Phi-3.5-vision scale, scaled down for smaller models."""
    info = backend.describe()
    device = str(info.get("device", "cpu"))
    if not device.startswith("cuda"):
        return 8
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    per_image = None
    estimate = getattr(backend, "memory_per_image", None)
    if callable(estimate):
        per_image = estimate(settings or GenerationSettings())
    if not per_image:
        parameters = info.get("parameters") or 4_000_000_000
        per_image = max(64 * 2**20, int(2**30 * parameters / 4.15e9))
    return int(max(1, min(AUTO_BATCH_LIMIT, (free * 0.85) // per_image)))


def _versions(backend: Backend) -> dict:
    import platform

    from inspector import __version__

    versions = {"inspector": __version__, "python": platform.python_version()}
    info = backend.describe()
    for key in ("torch", "transformers"):
        if key in info:
            versions[key] = info[key]
    versions["backend"] = info
    return versions
