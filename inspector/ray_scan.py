"""`inspector scan --ray`: the scan's own stages on Ray Data, so that one run spans many machines.

The canonical Ray Data batch-inference shape, with the local scan's functions in every stage:

1. the driver creates or resumes the run (same run key as a local scan), discovers the images and matches the
   catalogue, exactly as `Scanner` does;
2. CPU tasks read, hash and decode images (`scan.load_image`); images the run already holds are dropped here, by
   sha256; unreadable images become error rows;
3. GPU actors, one loaded backend each (`num_gpus=1`, one per GPU), make the model inputs in threads where the
   backend makes them per image (`backend.prepare_item`, as the local loader threads do) and answer batches of
   images grouped by the backend's batch key (`scan.BatchAnswerer`: out-of-memory halving, per-image isolation
   of failures). Without GPUs, Ray fuses stage 2 into these actors (same resources, so no transfer between);
   with GPUs the stages stay apart and decoding scales over every node's CPUs;
4. CPU tasks parse and score the answers (`scan.ItemFinisher`);
5. the results stream back to the driver, which commits them batch by batch (`scan.commit_batch`, i.e.
   `Store.add_batch`): SQLite on one machine, Postgres across many.

Fault tolerance is Ray Data's (its defaults for actor pools: actors restarted without limit, a batch retried
without limit): an actor that dies is restarted and the batch it held is run again (nothing is emitted for a
batch until it is finished, so nothing is lost); the store's UNIQUE(run, image) keeps a retried or
duplicated image from being stored twice; a driver that dies loses at most the batches in flight, and rerunning
the same command resumes the run.

This is the only module that imports ray (`pip install 'inspector[ray]'`); `import inspector` never does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from inspector.discovery import ImageSource, read_source
from inspector.errors import ImageLoadError, InspectorError, RayError, RunNotFoundError
from inspector.fields import FieldSet, TruthRecord
from inspector.images import sha256_hex
from inspector.interrupts import deferred, handlers_kept
from inspector.scan import (
    AUTO_BATCH_LIMIT,
    Answer,
    BatchAnswerer,
    ItemFinisher,
    PendingImage,
    ScanConfig,
    ScanInputs,
    ScanProgress,
    ScanSummary,
    SilentProgress,
    auto_batch_size,
    commit_batch,
    finishing_run,
    load_image,
    match_truth,
    new_counts,
    read_scan_inputs,
    session_stats,
    start_run,
    unreadable_sha,
)
from inspector.scoring import PriceTolerance
from inspector.store import ItemResult, Store, open_store

INSTALL_HINT = "pip install 'inspector[ray]'"

#: Ray Data rows hold one pickled `_Row` each: our dataclasses (PIL images, catalogue rows, parsed fields) pass
#: between stages as they are, instead of being flattened into Arrow columns and rebuilt.
_COLUMN = "row"


@dataclass
class _Row:
    """One image on its way through the stages."""

    #: "todo" (a source to read), "done" (already in the run), "image" (decoded, payload: PendingImage),
    #: "answer" (payload: Answer) or "result" (payload: ItemResult, ready to store).
    stage: str
    payload: Any
    truth: TruthRecord | None


def import_ray():
    """The ray module, or a one-line error saying what to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - the extra is ray[data]: fail here, not halfway through a scan
    except ImportError:
        raise RayError(f"--ray needs Ray Data, which is not installed: {INSTALL_HINT}") from None
    return ray


def is_address(value: str) -> bool:
    """Whether `value` is a Ray address: "auto", HOST:PORT or ray://HOST:PORT (else, after `--ray`, a path)."""
    return value == "auto" or value.startswith("ray://") or bool(re.fullmatch(r"[\w.\-\[\]:]+:\d+", value))


def parse_address(value: str | None) -> str | None:
    """`--ray`'s value: "local" (the flag alone) → None (start or join a Ray instance here); "auto", HOST:PORT or
    ray://HOST:PORT as given. Anything else is most likely a scan path that followed `--ray`."""
    if value in (None, "", "local"):
        return None
    if is_address(value):
        return value
    raise RayError(
        f"--ray takes no value, 'auto', HOST:PORT or ray://HOST:PORT; got {value!r} "
        "(put --ray after the paths to scan, or write --ray=ADDRESS)"
    )


#: Seconds the address of a cluster to join has to answer. Ray itself retries an address where nothing answers
#: for minutes (20 attempts of ~36 s each, which Ctrl-C cannot cut short), so `connect` asks first.
ANSWER_TIMEOUT_S = 5


def ray_log_file() -> Path:
    """Where the driver's Ray log lines go (Ray's own for its processes: /tmp/ray/session_latest/logs)."""
    return Path(tempfile.gettempdir()) / "ray" / "inspector-driver.log"


def _log_to_file(path: Path) -> None:
    """Ray's and Ray Data's log lines of this process (token authentication, "Starting execution of Dataset",
    ...) into `path` instead of onto the terminal, where the scan's progress bar is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)  # Ray Data's debug lines stay in its own log file
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d -- %(message)s"))
    for name in ("ray", "ray.data"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if isinstance(old, logging.StreamHandler) and not isinstance(old, logging.FileHandler):
                logger.removeHandler(old)  # the console; Ray Data's own log file stays
        if not any(getattr(old, "baseFilename", None) == handler.baseFilename for old in logger.handlers):
            logger.addHandler(handler)
        logger.propagate = False


def connect(address: str | None) -> None:
    """Join the Ray cluster at `address` ("auto": the one in RAY_ADDRESS or started with `ray start` here), or
    with None start or join a local one. A cluster this process already joined is used as it is. Ray's log lines
    go to `ray_log_file()`."""
    ray = import_ray()
    _log_to_file(ray_log_file())
    if ray.is_initialized():
        return
    _check_answers(ray, address)
    try:
        with handlers_kept():  # ray.init's SIGTERM handler exits with status 15: keep ours (a stop ends the run)
            # log_to_driver=False: the workers' and raylets' lines stay in their log files (/tmp/ray/session_latest/logs)
            # instead of being printed over the progress bar (and after the last line of a stopped scan)
            ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"at {address}" if address else "here"
        raise RayError(f"cannot start or join a Ray cluster {where}: {str(error).splitlines()[0]}") from None


def _check_answers(ray, address: str | None) -> None:
    """A one-line error, within seconds, when nothing listens at the HOST:PORT that `ray.init` would join (the
    address given, or RAY_ADDRESS, which ray.init joins when given none or "auto"). Ray joins a loopback address
    at this machine's own IP, so both are asked."""
    target = address if address not in (None, "auto") else os.environ.get("RAY_ADDRESS")
    if not target or target == "auto":
        return  # start a cluster here, or join the one `ray start` recorded on this machine
    host, _, port = target.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        return  # not HOST:PORT: ray.init says what is wrong with it
    hosts = [host]
    if host in ("localhost", "::1") or host.startswith("127."):
        hosts.append(ray.util.get_node_ip_address())
    problems = []
    for candidate in hosts:
        try:
            with socket.create_connection((candidate, int(port)), timeout=ANSWER_TIMEOUT_S):
                return
        except TimeoutError:
            problems.append(f"no answer within {ANSWER_TIMEOUT_S} s")
        except OSError as error:
            problems.append((error.strerror or str(error)).lower())
    raise RayError(
        f"cannot join a Ray cluster at {target}: nothing answers there ({problems[0]}); "
        "start one there (`ray start --head`) or check the address"
    )


# --------------------------------------------------------------------------------------------------- stages


def _pack(rows: list[_Row]) -> dict:
    import numpy as np

    packed = np.empty(len(rows), dtype=object)
    packed[:] = [pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL) for row in rows]
    return {_COLUMN: packed}


def _unpack(batch: dict) -> list[_Row]:
    return [pickle.loads(blob) for blob in batch[_COLUMN]]


#: Per worker process: the run's stored sha256s, fetched once from the object store (see `read_stage`).
_DONE_CACHE: dict[str, frozenset[str]] = {}


def _done_shas(done_ref: list) -> frozenset[str]:
    import ray

    (ref,) = done_ref  # wrapped in a list so that Ray passes the reference, not a copy per task
    key = ref.hex()
    if key not in _DONE_CACHE:
        _DONE_CACHE.clear()
        _DONE_CACHE[key] = ray.get(ref)
    return _DONE_CACHE[key]


def read_stage(batch: dict, *, done_ref: list, workers: int) -> dict:
    """Stage 2 (CPU): read, hash and decode each image with `load_image`, in `workers` threads (reads of URLs
    and network file systems wait more than they compute); drop those the run already holds."""
    rows = _unpack(batch)
    done = _done_shas(done_ref)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
        loaded = list(pool.map(load_image, [row.payload for row in rows]))
    out = []
    for row, item in zip(rows, loaded, strict=True):
        if item.sha256 in done:
            out.append(_Row("done", item.sha256, None))
        elif isinstance(item, PendingImage):
            out.append(_Row("image", item, row.truth))
        else:
            out.append(_Row("result", item, row.truth))
    return _pack(out)


class AnswerStage:
    """Stage 3 (GPU): one loaded backend per actor, answering Ray's batches grouped by the backend's batch key.

    Every image of a batch is answered before the call returns (none is held back for a fuller group): Ray
    retries a batch whose actor died, and an image held over to a later call would be lost with its actor."""

    def __init__(self, config: ScanConfig) -> None:
        self.backend = config.load_backend()
        settings = config.generation_settings()
        prompt = config.scan_prompt()
        self.batch_size = config.batch_size or auto_batch_size(self.backend, settings)
        self.answerer = BatchAnswerer(self.backend, prompt, settings, logging.getLogger(__name__).warning)
        self.prepare = self.answerer.prepare()
        self.workers = max(1, config.workers)

    def __call__(self, batch: dict) -> dict:
        rows = _unpack(batch)
        if self.prepare is not None:
            self._prepare([row.payload for row in rows if row.stage == "image"])
        groups: dict[object, list[int]] = {}
        for index, row in enumerate(rows):
            if row.stage == "image":
                groups.setdefault(self.backend.batch_key(row.payload.loaded.image), []).append(index)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                answers = self.answerer.answer([rows[i].payload for i in chunk])
                for index, answer in zip(chunk, answers, strict=True):
                    rows[index] = _Row("answer", _without_pixels(answer), rows[index].truth)
        return _pack(rows)


    def _prepare(self, images: list[PendingImage]) -> None:
        """Model inputs for backends that make them per image (Phi-3.5-vision), in threads, as the local scan's
        loader threads do. Made here rather than in the CPU stage: they are the model's own tensors (pinned
        memory, the model's dtype) and need its processor; a failure leaves the image to the plain path."""

        def prepare(pending: PendingImage) -> None:
            try:
                pending.prepared = self.prepare(pending.loaded.image)
            except Exception:  # noqa: BLE001 - the plain path reports the error per image
                pending.prepared = None

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="prepare") as pool:
            list(pool.map(prepare, images))


def _without_pixels(answer: Answer) -> Answer:
    """What the later stages need of an answered image: its facts, not its pixels or model inputs."""
    pending = answer.pending
    return replace(answer, pending=replace(pending, loaded=replace(pending.loaded, image=None), prepared=None))


def finish_stage(batch: dict, *, price_tolerance: str, title_threshold: float, fields: list[dict]) -> dict:
    """Stage 4 (CPU): parse and score each answer; unreadable images get their (all missed) outcomes. `fields`:
    the declarations as JSON (`FieldSet.to_json`), so that tasks need no fields file."""
    finisher = ItemFinisher(PriceTolerance.parse(price_tolerance), title_threshold, FieldSet.from_json(fields))
    rows = _unpack(batch)
    for index, row in enumerate(rows):
        if row.stage == "answer":
            rows[index] = _Row("result", finisher.item(row.payload, row.truth), None)
        elif row.stage == "result":
            rows[index] = _Row("result", finisher.failure(row.payload, row.truth), None)
    return _pack(rows)


# --------------------------------------------------------------------------------------------------- driver


@dataclass
class RayPlan:
    """How a Ray scan uses the cluster."""

    #: Model copies (actors); one per GPU when `gpus_per_actor` is 1.
    actors: int
    gpus_per_actor: float
    #: Images per Ray batch handed to an actor, and per commit on the driver.
    batch_size: int


def plan(config: ScanConfig, gpus: str | int | None, actors: int | None = None) -> RayPlan:
    """`--gpus N` → N model actors of one GPU each; `--gpus all` or no `--gpus` → one per GPU in the cluster;
    a cluster without GPUs runs `actors` (default 1) model copies on CPUs."""
    import ray

    in_cluster = int(ray.cluster_resources().get("GPU", 0))
    batch_size = config.batch_size or AUTO_BATCH_LIMIT
    if in_cluster == 0:
        if gpus not in (None, "all"):
            raise RayError(f"--gpus {gpus}: the Ray cluster has no GPUs (check `ray status` on the head node)")
        return RayPlan(actors=actors or 1, gpus_per_actor=0, batch_size=batch_size)
    if gpus in (None, "all"):
        count = in_cluster
    else:
        try:
            count = int(gpus)
        except ValueError:
            raise RayError(f"--gpus with --ray takes 'all' or a number of GPUs; got {gpus!r}") from None
        if not 1 <= count <= in_cluster:
            raise RayError(f"--gpus {gpus}: the Ray cluster has {in_cluster} GPU(s)")
    return RayPlan(actors=count, gpus_per_actor=1, batch_size=batch_size)


def scan_on_ray(
    config: ScanConfig,
    address: str | None = None,
    *,
    gpus: str | int | None = None,
    actors: int | None = None,
    inputs: ScanInputs | None = None,
    progress: ScanProgress | None = None,
    store: Store | None = None,
    answer_stage: type = AnswerStage,
) -> ScanSummary:
    """Scan `config.inputs` into the same run a local scan of them would use, on the Ray cluster at `address`.

    `inputs`: what `read_scan_inputs(config)` returned, when the caller already read it. `answer_stage`: the
    stage-3 class (tests pass one that dies on purpose)."""
    ray = import_ray()
    inputs = inputs or read_scan_inputs(config)
    progress = progress or SilentProgress()
    prompt = config.scan_prompt()
    sources = inputs.sources[: config.limit] if config.limit is not None else inputs.sources
    truth_by_location, truth_summary = match_truth(inputs.truth, sources)
    store = store or open_store(config.db)
    if sources and all_stored(store, config.run_key(prompt), sources, config.workers):
        return _nothing_to_do(store, config, prompt, sources, truth_summary, progress)
    connect(address)
    layout = plan(config, gpus, actors)
    counts = new_counts()
    started = time.perf_counter()

    def stats() -> dict:
        ray_plan = {"actors": layout.actors, "gpus_per_actor": layout.gpus_per_actor}
        return session_stats(counts, time.perf_counter() - started, truth_summary, ray=ray_plan)

    try:
        with deferred():  # no stop signal falls between creating the run and closing it (see `finishing_run`)
            run_id = start_run(store, config, prompt, None, config.batch_size)
            with finishing_run(store, run_id, stats) as outcome:
                done = store.done_shas(run_id)
                progress.start(len(sources), 0)
                started = time.perf_counter()
                results = _results(ray, config, layout, sources, truth_by_location, done, answer_stage, counts, progress)
                # Closed on every way out, a stop included, so that Ray Data's executor stops now: left running, its
                # thread can touch Ray after Ray's exit-time shutdown, and Ray then ends the process with status 1
                # instead of ours (seen once in CI after a SIGTERM: "The core worker has already been shutdown").
                with contextlib.closing(results):
                    for items in results:
                        commit_batch(store, run_id, items, counts, progress)
    except Exception as error:
        cause = _user_error_in(error)
        if cause is not None:
            raise cause from None
        raise
    return ScanSummary.of_session(run_id, config.run_key(prompt), outcome.status, len(sources), counts, outcome.stats)


def all_stored(store: Store, run_key: str, sources: list[ImageSource], workers: int = 4) -> bool:
    """Whether the run already holds every one of `sources` (local files only), checked on the driver as a local
    rerun checks it: by the sha256 of each file's bytes. A rerun with nothing to do then needs no Ray at all
    (starting it costs tens of seconds). Cheap first: unless every path is stored in the run, no file is read."""
    if any(source.path is None for source in sources):
        return False  # URLs: the driver does not download them
    try:
        run_id = store.get_run(run_key).id
    except RunNotFoundError:
        return False
    if not store.stored_paths(run_id) >= {source.location for source in sources}:
        return False
    done = store.done_shas(run_id)

    def stored(source: ImageSource) -> bool:
        try:
            return sha256_hex(read_source(source)) in done
        except ImageLoadError:
            return unreadable_sha(source) in done  # as `load_image` names it

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="hash") as pool:
        return all(pool.map(stored, sources))


def _nothing_to_do(
    store: Store,
    config: ScanConfig,
    prompt,
    sources: list[ImageSource],
    truth_summary: dict | None,
    progress: ScanProgress,
) -> ScanSummary:
    """The summary of a rerun whose images are all stored: the run resumed and finished, Ray never started."""
    started = time.perf_counter()
    run_id = start_run(store, config, prompt, None, config.batch_size)
    counts = new_counts()
    counts["already_done"] = len(sources)
    progress.start(len(sources), 0)
    progress.advance(len(sources), 0)
    stats = session_stats(counts, time.perf_counter() - started, truth_summary, ray={"started": False})
    store.finish_run(run_id, "completed", stats)
    return ScanSummary.of_session(run_id, config.run_key(prompt), "completed", len(sources), counts, stats)


def _results(
    ray,
    config: ScanConfig,
    layout: RayPlan,
    sources: list[ImageSource],
    truth_by_location: dict[str, TruthRecord],
    done: set[str],
    answer_stage: type,
    counts: dict,
    progress: ScanProgress,
) -> Iterator[list[ItemResult]]:
    """Finished items in batches of `layout.batch_size`, as the cluster produces them; images already in the run
    and second copies of an image are counted, not returned."""
    if not sources:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI shows one bar for the whole scan
    context.execution_options.preserve_order = False
    rows = [_Row("todo", source, truth_by_location.get(source.location)) for source in sources]
    dataset = (
        ray.data.from_items([{_COLUMN: pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL)} for row in rows])
        .map_batches(
            read_stage,
            batch_size=layout.batch_size,
            batch_format="numpy",
            fn_kwargs={"done_ref": [ray.put(frozenset(done))], "workers": config.workers},
        )
        .map_batches(
            answer_stage,
            batch_size=layout.batch_size,
            batch_format="numpy",
            fn_constructor_kwargs={"config": config},
            compute=ray.data.ActorPoolStrategy(size=layout.actors),
            num_gpus=layout.gpus_per_actor,
        )
        .map_batches(
            finish_stage,
            batch_size=layout.batch_size,
            batch_format="numpy",
            fn_kwargs={
                "price_tolerance": config.price_tolerance,
                "title_threshold": config.title_threshold,
                "fields": config.fieldset().to_json(),
            },
        )
    )
    seen: set[str] = set()
    for batch in dataset.iter_batches(batch_size=layout.batch_size, batch_format="numpy"):
        items = []
        for row in _unpack(batch):
            if row.stage == "done":
                counts["already_done"] += 1
                progress.advance(1, 0)
            elif row.payload.sha256 in seen:
                counts["duplicates"] += 1
                progress.advance(1, 0)
            else:
                seen.add(row.payload.sha256)
                items.append(row.payload)
        if items:
            yield items


def _user_error_in(error: BaseException) -> InspectorError | None:
    """The InspectorError (a model that cannot load, ...) that a Ray task or actor failed with, if any: it is
    shown as the one-line error it is, not as Ray's wrapper around it."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, InspectorError):
            return current
        todo += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    return None
