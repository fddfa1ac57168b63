"""Data-parallel scans: one process per GPU, each scanning a shard of the images into the same run."""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from typing import TYPE_CHECKING

from inspector.errors import InputError, InspectorError, ShardError
from inspector.interrupts import deferred, stop_signals_as_interrupts
from inspector.scan import ScanConfig, ScanProgress, ScanSummary, SilentProgress, new_counts, session_stats

if TYPE_CHECKING:
    from inspector.store import Store


def parse_gpus(value: str | int, available: int) -> list[int]:
    """'all' → every visible GPU; N → the first N; '0,2' → those devices."""
    text = str(value).strip().lower()
    if available < 1:
        raise InputError("--gpus needs CUDA GPUs, and none is visible (check nvidia-smi / CUDA_VISIBLE_DEVICES)")
    if text == "all":
        return list(range(available))
    if "," in text:
        devices = [int(part) for part in text.split(",") if part.strip()]
    else:
        try:
            devices = list(range(int(text)))
        except ValueError:
            raise InputError(f"--gpus takes 'all', a number or a list like 0,1; got {value!r}") from None
    if not devices or max(devices) >= available or min(devices) < 0:
        raise InputError(f"--gpus {value}: only {available} GPU(s) visible")
    return devices


class _QueueProgress:
    """Forwards a shard's progress to the parent process."""

    def __init__(self, events: mp.Queue, shard: int) -> None:
        self.events = events
        self.shard = shard

    def start(self, total: int, already_done: int) -> None:
        self.events.put(("start", self.shard, total, already_done))

    def advance(self, n_images: int, n_failed: int) -> None:
        self.events.put(("advance", self.shard, n_images, n_failed))

    def message(self, text: str) -> None:
        self.events.put(("message", self.shard, text, 0))


def _shard_main(config: ScanConfig, events: mp.Queue) -> None:
    progress = _QueueProgress(events, config.shard[0])
    try:
        with stop_signals_as_interrupts():  # the parent stops its shards with SIGTERM: end like Ctrl-C
            _scan_shard(config, progress, events)
    except BaseException as error:  # report, don't hang the parent
        events.put(("error", config.shard[0], f"{type(error).__name__}: {error}", 0))
        if isinstance(error, (InspectorError, KeyboardInterrupt)):  # the parent says it in one line
            raise SystemExit(1) from None
        raise


def _scan_shard(config: ScanConfig, progress: _QueueProgress, events: mp.Queue) -> None:
    from inspector.scan import Scanner
    from inspector.store import open_store

    if config.device.startswith("cuda"):
        import torch

        torch.cuda.set_device(config.device)
    backend = config.load_backend()
    summary = Scanner(config, backend, open_store(config.db), progress).run(finalize=False)
    events.put(("skipped", config.shard[0], summary.already_done, summary.duplicates))
    events.put(("unread", config.shard[0], summary.internal_errors, summary.unrepresentable_values))
    events.put(("done", config.shard[0], summary.processed, summary.failed))


def scan_on_gpus(
    config: ScanConfig, gpus: str | int, progress: ScanProgress | None = None, store: Store | None = None
) -> ScanSummary:
    """Run one shard per GPU in spawned processes, then close the run and write the report once."""
    import torch

    devices = parse_gpus(gpus, torch.cuda.device_count())
    return scan_on_devices(config, [f"cuda:{device}" for device in devices], progress, store)


def scan_on_devices(
    config: ScanConfig, devices: list[str], progress: ScanProgress | None = None, store: Store | None = None
) -> ScanSummary:
    """One spawned process per entry of `devices` ("cuda:0", "cuda:1", … — or "cpu", which tests use), each
    scanning shard i/N of the images into one run that this process creates first and closes last (in `store`,
    the caller's, or `config.db` opened here)."""
    from inspector.scan import start_run
    from inspector.store import open_store

    prompt = config.scan_prompt()
    store = store or open_store(config.db)
    # Created here, before the shards start, so that they all resume this one run instead of racing to create it.
    run_id = start_run(store, config, prompt, None, config.batch_size)
    started = time.perf_counter()
    context = mp.get_context("spawn")
    events = context.Queue()
    processes = []
    for index, device in enumerate(devices):
        shard = config.derive(device=device, shard=(index, len(devices)), report=None)
        process = context.Process(target=_shard_main, args=(shard, events), name=f"inspector-shard{index}")
        process.start()
        processes.append(process)
    errors: list[str] = []
    reported: set[int] = set()
    totals = new_counts()
    progress = progress or SilentProgress()
    found = 0
    finished = 0
    all_dead = False
    try:
        while finished < len(processes):
            try:
                kind, shard, a, b = events.get(timeout=1.0)
            except queue.Empty:
                if all(not p.is_alive() for p in processes):
                    if all_dead:
                        break
                    all_dead = True  # one more look: a shard's last events may still be in the pipe
                continue
            if kind == "start":
                found += a
                progress.start(found, 0)  # again with the new total as each shard starts
            elif kind == "advance":
                progress.advance(a, b)
            elif kind == "message":
                progress.message(f"shard {shard}: {a}")
            elif kind == "skipped":
                totals["already_done"] += a
                totals["duplicates"] += b
            elif kind == "unread":
                totals["internal_errors"] += a
                totals["unrepresentable_values"] += b
            elif kind == "done":
                totals["processed"] += a
                totals["failed"] += b
                finished += 1
                reported.add(shard)
            elif kind == "error":
                errors.append(f"shard {shard}: {a}")
                finished += 1
                reported.add(shard)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the shards the same way, and close the run as interrupted
        with deferred():  # a second stop does not keep the run from being closed
            for process in processes:
                if process.is_alive():
                    process.terminate()
            for process in processes:
                process.join()
            store.finish_run(run_id, "interrupted", {"elapsed_s": round(time.perf_counter() - started, 3)})
        raise
    with deferred():  # the shards are done: a stop now waits until the run is closed
        for index, process in enumerate(processes):
            process.join()
            if index not in reported:  # killed (out of memory, a signal) before it could say so
                errors.append(f"shard {index}: its process died (exit code {process.exitcode}) before finishing")
        status = "failed" if errors else "completed"
        # The shards matched the catalogue and stored their own summaries of it; the parent has none.
        stats = session_stats(totals, time.perf_counter() - started, None, gpus=len(devices))
        store.finish_run(run_id, status, stats)
    if errors:
        raise ShardError("; ".join(errors))
    # The report and metrics are added by the caller (`scan.with_report_and_metrics`), as for every engine.
    return ScanSummary.of_session(run_id, config.run_key(prompt), status, found, totals, stats)
