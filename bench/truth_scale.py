"""How long and how much memory does matching a big catalogue to a few images take? (issue 8 §2)

    .venv/bin/python bench/truth_scale.py [--rows 1000001] [--images 3] [--baseline COMMIT] [--out out/]

Writes a catalogue CSV of ROWS data rows in the original Burberry columns (path, product code, brand, title,
category, full price, currency, item URL), then, in a fresh Python process per code version (so that the peak
resident memory is the run's own), times `load_truth(csv)` and `table.match(images)` for IMAGES images named
after rows spread through the file, and reads the process's peak RSS. With `--baseline COMMIT` the same CSV is
also matched by that commit's `inspector/` (exported with `git archive` into a temporary folder), in the same run.
Prints a Markdown table and writes it with the raw numbers (JSON) into `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BRANDS = ["BURBERRY", "Nike", "Adidas", "Hermès", "Levi's", "Maison Lune", "Kiyo", "Puma"]
CATEGORIES = ["SCARVES", "COATS", "SNEAKERS", "BAGS", "HATS", "T-SHIRTS", "DRESSES", "BELTS"]


def write_catalogue(path: Path, rows: int, seed: int = 0) -> None:
    """ROWS rows, written in chunks; product codes are 8 digits from 10000000 on."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(
            "local_image_path,product_code,brand,title,category3_code,full_price,currency_code,itemurl\n"
        )
        chunk: list[str] = []
        for index in range(rows):
            code = 10_000_000 + index
            price = f"{rng.randrange(20, 5000)}.{rng.randrange(100):02d}"
            title = (
                f'"{rng.choice(CATEGORIES).title()} no. {index}, {rng.choice(["Long", "Short", "Check"])}"'
            )
            chunk.append(
                f"images/{code}.jpg,{code},{rng.choice(BRANDS)},{title},{rng.choice(CATEGORIES)},{price},USD,"
                f"https://example.com/p/{code}\n"
            )
            if len(chunk) == 10_000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))


def image_paths(folder: Path, rows: int, count: int) -> list[str]:
    """COUNT images named after rows spread evenly through the catalogue (first, ..., last)."""
    picks = sorted({round(i * (rows - 1) / max(1, count - 1)) for i in range(count)})
    return [str(folder / "images" / f"{10_000_000 + index}.jpg") for index in picks]


def child(csv_path: str, images: list[str]) -> None:
    """Runs in a fresh process whose sys.path starts with the code to measure; prints one JSON line."""
    from inspector.truth import load_truth

    started = time.perf_counter()
    table = load_truth(csv_path)
    loaded = time.perf_counter()
    match = table.match([Path(image) for image in images], [Path(csv_path).parent])
    matched = time.perf_counter()
    summary = match.summary()
    prices = sorted(record.fields.price for record in match.records.values())
    result = {
        "load_s": round(loaded - started, 2),
        "match_s": round(matched - loaded, 2),
        "total_s": round(matched - started, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "matched_images": summary["matched_images"],
        "rows": summary["rows"],
        "unmatched_rows": summary["unmatched_rows"],
        "prices": prices,
    }
    print(json.dumps(result))


def measure(code_dir: Path, csv_path: Path, images: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code_dir))
    command = [sys.executable, __file__, "--child", str(csv_path), *images]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measuring {code_dir} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def export_commit(commit: str, target: Path) -> Path:
    """`inspector/` as it was at COMMIT, in TARGET (git archive: no work tree or checkout needed)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "inspector"], capture_output=True, check=True
    ).stdout
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_001)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument(
        "--baseline", help="commit whose inspector/ is measured too (e.g. the one before a fix)"
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1:])
        return

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="truth-scale-") as tmp:
        folder = Path(tmp)
        csv_path = folder / "catalogue.csv"
        started = time.perf_counter()
        write_catalogue(csv_path, args.rows)
        print(f"wrote {args.rows:,} rows ({csv_path.stat().st_size / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
        images = image_paths(folder, args.rows, args.images)
        versions: dict[str, Path] = {}
        if args.baseline:
            versions[f"baseline {args.baseline}"] = export_commit(args.baseline, Path(tmp) / "baseline")
        versions["working tree"] = REPO
        results = {}
        for name, code_dir in versions.items():
            results[name] = measure(code_dir, csv_path, images)
            print(f"{name}: {results[name]}", flush=True)

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    machine = (
        f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"load average {load} at the end)"
    )
    lines = [
        f"Matching {args.images} images to a {args.rows:,}-row catalogue, {machine}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        "| code | load_truth | match | total | peak RSS | images matched |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['load_s']:.2f} s | {r['match_s']:.2f} s | {r['total_s']:.2f} s | "
            f"{r['peak_rss_mib']:,.0f} MiB | {r['matched_images']} of {args.images} |"
        )
    table = "\n".join(lines)
    print(table)
    (args.out / "truth_scale.md").write_text(table + "\n", encoding="utf-8")
    (args.out / "truth_scale.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
