"""What the scan machinery and the store sustain without a model: the fake backend, many small images.

Three measurements, each the scan's own code:
  local   `read_scan_inputs` + `Scanner.run`: discovery → read/hash/decode (loader threads) → fake answer → parse →
          score → `Store.add_batch`, images/s from discovery to the last commit;
  ray     the same scan through `scan_on_ray` on a local Ray instance (`ray.init(num_cpus=...)`): CPU tasks, one
          model actor, parse/score tasks, commits on the driver; Ray's own start-up is timed apart;
  store   `Store.add_batch` alone on realistic finished items (parsed answer, catalogue row, 3 field results), the
          sustained committed images/s, on SQLite and on Postgres.

Postgres: --postgres URL, or a throwaway local server (initdb + pg_ctl, as tests/test_store.py starts one).
The store part also reports CPU time per image: this process's, and (throwaway server only) the Postgres backend's,
read from /proc: on a shared, loaded machine those say more than the wall-clock rate.

    nice .venv/bin/python bench/ray_throughput.py --images 2000 --out bench/results/ray_throughput.json

The store part alone, before and after a change in one session (`--code`: import inspector from another checkout,
e.g. `git archive main | tar -x -C /tmp/base`; `--only store` updates only the store entries of --out):

    nice .venv/bin/python bench/ray_throughput.py --only store --code /tmp/base --key store_before
    nice .venv/bin/python bench/ray_throughput.py --only store
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# --code PATH: the inspector package of another checkout (a baseline), before anything imports it.
CODE = Path(sys.argv[sys.argv.index("--code") + 1]).resolve() if "--code" in sys.argv[:-1] else REPO
sys.path.insert(0, str(CODE))

from PIL import Image  # noqa: E402

from inspector.fields import FieldResult, Outcome, ProductFields, TruthRecord  # noqa: E402
from inspector.scan import ScanConfig, Scanner, read_scan_inputs  # noqa: E402
from inspector.store import ItemResult, open_store  # noqa: E402


def make_images(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` distinct 64×64 JPEGs (noise, so every sha256 differs) and a catalogue row for each."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        name = f"{index:06d}.jpg"
        Image.frombytes("RGB", (64, 64), rng.randbytes(64 * 64 * 3)).save(folder / name, quality=80)
        rows.append([name, f"Item {index}", "Acme", "shoes", f"{10 + index % 90}.00", "EUR"])
    with open(folder / "truth.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["local_image_path", "title", "brand", "category3_code", "full_price", "currency_code"])
        writer.writerows(rows)
    return folder / "truth.csv"


def answers_file(path: Path, count: int) -> str:
    answers = [
        json.dumps({"brand": "Acme", "title": f"Item {i}", "category": "shoes", "price": 10 + i % 7, "currency": "EUR"})
        for i in range(count)
    ]
    path.write_text(json.dumps(answers))
    return f"fake:{path}"


def scan_config(images: Path, truth: Path, model: str, db: str, batch_size: int, name: str) -> ScanConfig:
    """A scan of its own (`name` is part of the run key): a Ray scan of the images a local scan stored in the same
    database would otherwise resume that run and find nothing left to do."""
    return ScanConfig(
        inputs=[str(images)], model=model, db=db, report=None, truth=str(truth), batch_size=batch_size,
        run_name=name,
    )


def bench_local(config: ScanConfig) -> dict:
    started = time.perf_counter()
    inputs = read_scan_inputs(config)
    with open_store(config.db) as store:
        summary = Scanner(config, config.load_backend(), store, inputs=inputs).run()
    elapsed = time.perf_counter() - started
    return {"images": summary.processed, "seconds": round(elapsed, 2), "images_per_s": round(summary.processed / elapsed, 1)}


def bench_ray(config: ScanConfig, num_cpus: int, actors: int) -> dict:
    import ray

    from inspector.ray_scan import scan_on_ray

    started = time.perf_counter()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING")  # a new one
    ray_start = time.perf_counter() - started
    try:
        started = time.perf_counter()
        summary = scan_on_ray(config, actors=actors)
        elapsed = time.perf_counter() - started
    finally:
        ray.shutdown()
    return {
        "images": summary.processed,
        "seconds": round(elapsed, 2),
        "images_per_s": round(summary.processed / elapsed, 1),
        "ray_start_s": round(ray_start, 2),
        "num_cpus": num_cpus,
        "actors": actors,
    }


def finished_item(n: int) -> ItemResult:
    """What a scan commits for one image: facts, a small thumbnail, the answer parsed, its catalogue row and
    per-field outcomes."""
    truth = TruthRecord(
        row_number=n + 1,
        key=f"SKU-{n}",
        fields=ProductFields(brand="Acme", title=f"Item {n}", category="shoes", price=19.0, currency="EUR"),
        image_ref=f"{n:06d}.jpg",
    )
    parsed = ProductFields(brand="Acme", title=f"Item {n}", category="shoes", price=19.5, currency="EUR")
    return ItemResult(
        sha256=f"{n:064x}",
        path=f"images/{n:06d}.jpg",
        width=640,
        height=480,
        format="JPEG",
        n_bytes=40_000 + n,
        thumbnail=bytes(3_000),
        raw_output=json.dumps({"brand": "Acme", "title": f"Item {n}", "price": 19.5}),
        parsed=parsed,
        latency_ms=12.5,
        truth=truth,
        field_results=[
            FieldResult("brand", Outcome.CORRECT, "acme", "acme"),
            FieldResult("title", Outcome.CORRECT, f"item {n}", f"item {n}", score=1.0),
            FieldResult("price", Outcome.WRONG, "19.5", "19.0", score=0.5),
        ],
    )


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process on this machine (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backend_pid(store) -> int | None:
    """The pid of the Postgres backend serving the store's (pooled) connection, when it runs on this machine."""
    if store.engine.dialect.name != "postgresql":
        return None
    from sqlalchemy import text

    with store.engine.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
    return pid if Path(f"/proc/{pid}/stat").exists() else None


def bench_commits(db: str, count: int, batch_size: int, writers: int = 1) -> dict:
    """Commit `count` new items in batches into one run, from `writers` processes at once (each its own share and
    its own Store, as several scan processes would); each writer's first batch (connection, prepared statements)
    is not timed. Wall time runs from the common start to the last writer's end."""
    run_key = f"bench-{time.time_ns()}"
    with open_store(db) as store:  # the schema and the run, before the writers start
        store.start_run(run_key, **_BENCH_RUN)
    share = -(-count // writers)
    offset = batch_size * 100_000  # images no earlier call stored, as in a scan
    jobs = [(db, run_key, offset + w * (share + batch_size), share, batch_size) for w in range(writers)]
    if writers == 1:
        parts = [_commit_share(*jobs[0])]
    else:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        barrier = context.Barrier(writers)
        with context.Pool(writers, initializer=_set_barrier, initargs=(barrier,)) as pool:
            parts = pool.starmap(_commit_share, jobs)
    elapsed = max(part["end"] for part in parts) - min(part["start"] for part in parts)
    client_cpu = sum(part["client_cpu"] for part in parts)
    total = share * writers
    result = {
        "images": total,
        "batch_size": batch_size,
        "writers": writers,
        "seconds": round(elapsed, 2),
        "images_per_s": round(total / elapsed, 1),
        "ms_per_batch": round(1000 * elapsed * writers / -(-total // batch_size), 2),
        "client_cpu_us_per_image": round(1e6 * client_cpu / total),
    }
    if all(part["server_cpu"] is not None for part in parts):
        server_cpu = sum(part["server_cpu"] for part in parts)
        result["server_cpu_us_per_image"] = round(1e6 * server_cpu / total)
        result["images_per_cpu_s"] = round(total / (client_cpu + server_cpu))
    return result


_BENCH_RUN = dict(
    name=None, model="fake", backend="fake", prompt_name="extract", prompt_text="bench", settings={}, versions={},
    inputs=["images/"], truth_path="truth.csv",
)  # fmt: skip
_BARRIER = None


def _set_barrier(barrier) -> None:
    global _BARRIER
    _BARRIER = barrier


def _commit_share(db: str, run_key: str, first: int, count: int, batch_size: int) -> dict:
    with open_store(db) as store:
        run_id = store.start_run(run_key, **_BENCH_RUN)  # resumes the run made above
        items = [finished_item(first + n) for n in range(batch_size + count)]
        store.add_batch(run_id, items[:batch_size])
        backend = _backend_pid(store)
        if _BARRIER is not None:
            _BARRIER.wait()
        server_started = _process_cpu_s(backend) if backend else None
        cpu_started = time.process_time()
        started = time.perf_counter()
        for start in range(batch_size, batch_size + count, batch_size):
            store.add_batch(run_id, items[start : start + batch_size])
        end = time.perf_counter()
        return {
            "start": started,
            "end": end,
            "client_cpu": time.process_time() - cpu_started,
            "server_cpu": _process_cpu_s(backend) - server_started if backend else None,
        }


def throwaway_postgres() -> tuple[str, Callable[[], None]]:
    """A local server in a new temporary folder (as the postgres system user when run as root); (URL, stop)."""
    workdir = Path(tempfile.mkdtemp(prefix="inspector-pg-"))
    initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    if initdb is None:
        raise SystemExit("no initdb here: pass --postgres URL")
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
        os.chown(workdir, user.pw_uid, user.pw_gid)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bindir, data = Path(initdb).parent, workdir / "data"
    subprocess.run([*prefix, initdb, "-D", data, "-A", "trust", "-U", "inspector", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([*prefix, bindir / "pg_ctl", "-D", data, "-l", workdir / "log", "-w", "-o",
                    f"-k {workdir} -p {port} -c listen_addresses=''", "start"], check=True, capture_output=True)  # fmt: skip

    def stop() -> None:
        subprocess.run([*prefix, bindir / "pg_ctl", "-D", data, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)

    return f"postgresql+psycopg://inspector@/postgres?host={workdir}&port={port}", stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--commits", type=int, default=20_000, help="items committed in the store benchmark")
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--postgres", help="SQLAlchemy URL of an empty Postgres database (default: a throwaway)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ray_throughput.json")
    parser.add_argument("--only", choices=["all", "store"], default="all",
                        help="store: only the store part, updating its entries in --out and keeping the rest")
    parser.add_argument("--code", type=Path, default=REPO, help="import inspector from this checkout (a baseline)")
    parser.add_argument("--key", default="store", help="store part: the entries' name prefix in --out")
    parser.add_argument("--writers", type=int, nargs="+", default=[1],
                        help="store part: also commit from this many processes at once (e.g. 1 2)")
    args = parser.parse_args()
    if args.only == "store":
        return bench_store_only(args)

    work = Path(tempfile.mkdtemp(prefix="inspector-ray-bench-"))
    stop_postgres = None
    try:
        images = work / "images"
        truth = make_images(images, args.images)
        model = answers_file(work / "answers.json", args.images)
        if args.postgres:
            postgres = args.postgres
        else:
            postgres, stop_postgres = throwaway_postgres()
        results: dict = {
            "machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()})",
            "load_average_at_start": os.getloadavg(),
            "images": args.images,
            "batch_size": args.batch_size,
        }
        for name, run in [
            ("local_sqlite", lambda: bench_local(scan_config(images, truth, model, str(work / "l.db"), args.batch_size, "local"))),
            ("local_postgres", lambda: bench_local(scan_config(images, truth, model, postgres, args.batch_size, "local"))),
            ("ray_sqlite", lambda: bench_ray(scan_config(images, truth, model, str(work / "r.db"), args.batch_size, "ray"),
                                             args.ray_cpus, args.actors)),
            ("ray_postgres", lambda: bench_ray(scan_config(images, truth, model, postgres, args.batch_size, "ray"),
                                               args.ray_cpus, args.actors)),
        ]:  # fmt: skip
            results[name] = run()
            print(name, results[name], flush=True)
        for name, db in [("store_sqlite", str(work / "s.db")), ("store_postgres", postgres)]:
            results[name] = [bench_commits(db, args.commits, size) for size in (64, 256)]
            print(name, results[name], flush=True)
        results["load_average_at_end"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"written to {args.out}")
    finally:
        if stop_postgres is not None:
            stop_postgres()
        shutil.rmtree(work, ignore_errors=True)


def bench_store_only(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="inspector-store-bench-"))
    stop_postgres = None
    try:
        postgres = args.postgres
        if not postgres:
            postgres, stop_postgres = throwaway_postgres()
        commit = subprocess.run(["git", "-C", CODE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        results: dict = {
            "machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()})",
            "code": str(CODE) if CODE != REPO else "this checkout",
            "commit": commit.stdout.strip() or None,
            "load_average_at_start": os.getloadavg(),
        }
        for name, db in [("sqlite", str(work / "s.db")), ("postgres", postgres)]:
            results[name] = [
                bench_commits(db, args.commits, size, writers) for writers in args.writers for size in (64, 256)
            ]
            print(args.key, name, results[name], flush=True)
        results["load_average_at_end"] = os.getloadavg()
        existing = json.loads(args.out.read_text()) if args.out.exists() else {}
        existing[args.key] = results
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(existing, indent=2) + "\n")
        print(f"written to {args.out} ({args.key})")
    finally:
        if stop_postgres is not None:
            stop_postgres()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
