"""The closed loop, measured: inspectors' decisions on a model's disagreements teach it a card world it was wrong on.

1. A shifted card world (`inspector.samples.World.shifted()`: brands and colours the sample-trained model never
   saw): a pool of --pool cards to scan and review, and --heldout other cards to measure on. The pool's catalogue
   is corrupted as a real one would be: --rate of its rows get one wrong field (brand, colour, category or price,
   in turn; seeded).
2. `inspector scan` of the pool against that catalogue with --model (default: the demo model folder,
   inspector/demo_model, asked its own question: the fields.toml and crops of its train_config.json), and of the
   held-out cards against their clean catalogue (the "before" figures).
3. Simulated inspectors decide on the review view's top --decisions disagreements, in the order the report lists
   them (`inspector.review.disagreements_in_review_order`), with the ground truth as the oracle: a field the
   corruption changed is `catalogue_wrong` with the right value typed in; any other is `model_wrong`. The decisions
   CSV is imported with `inspector review import`.
4. The same fine-tune, --steps optimizer steps from the same model and seed, twice (and a third time with
   --arms ...,clean): from the decisions (`inspector train --reviews DB --run pool`), and from the catalogue only
   (`inspector train --truth catalogue.csv`: the same images and catalogue values, no decisions); `clean` trains on
   the uncorrupted catalogue (the ceiling a perfect review would reach).
5. `inspector scan` of the held-out cards with each fine-tuned model, `inspector report --compare` of each against
   the "before" run, and per-field accuracy before / after.

Writes OUT/review_loop.json and OUT/review_loop.md (the table is printed last), the decisions CSV, the database,
the reports (OUT/reports/) and the fine-tuned models (OUT/train-<arm>/final):

    python bench/review_loop.py --out $OUT                               # GPU: the demo model (one command)
    python bench/review_loop.py --out $OUT --model DIR --steps 300      # another model
    python bench/review_loop.py --tiny --out /tmp/loop                   # CPU smoke test (tiny random model)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Fields the corruption changes, in turn, and their catalogue columns (inspector.samples.CSV_COLUMNS).
CORRUPTED_FIELDS = ("brand", "colour", "category", "price")
COLUMNS = {"brand": "brand", "colour": "colour", "category": "category3_code", "price": "full_price",
           "currency": "currency_code", "title": "title"}  # fmt: skip
PRICE_FACTORS = (0.5, 0.7, 1.4, 2.0)
#: Fields in the table, in order (size_price: every size's price together).
TABLE_FIELDS = ("brand", "title", "category", "price", "currency", "size_price", "colour")
ARMS = ("decisions", "catalogue", "clean")
#: The demo model's folder (issue 16), the default --model.
DEMO_MODEL = REPO / "inspector" / "demo_model"


# ------------------------------------------------------------------------------------------------ the world


def _read_rows(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _write_rows(path: Path, columns: list[str], rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def corrupt(rows: list[dict], rate: float, seed: int, world) -> tuple[list[dict], dict[str, str]]:
    """A copy of the catalogue rows with `rate` of them given one wrong field (brand, colour, category, price in
    turn; seeded); returns the rows and {image path: the field changed}."""
    from inspector.samples import CATEGORIES

    rng = random.Random(f"review-loop-corrupt:{seed}")
    chosen = rng.sample(range(len(rows)), max(1, round(len(rows) * rate))) if rows else []
    out = [dict(row) for row in rows]
    changed: dict[str, str] = {}
    choices = {"brand": world.brands, "colour": world.colours, "category": CATEGORIES}
    for order, index in enumerate(chosen):
        row, name = out[index], CORRUPTED_FIELDS[order % len(CORRUPTED_FIELDS)]
        column = COLUMNS[name]
        if name == "price":
            row[column] = f"{float(row[column]) * rng.choice(PRICE_FACTORS):.2f}"
        else:
            row[column] = rng.choice([value for value in choices[name] if value != row[column]])
        changed[row["local_image_path"]] = name
    return out, changed


def make_world(out: Path, pool: int, heldout: int, rate: float, seed: int, workers: int) -> dict:
    """The shifted world's pool (clean truth + corrupted catalogue) and held-out cards (clean truth)."""
    from inspector.samples import World, generate_dataset

    world = World.shifted()
    folder = out / "world"
    shutil.rmtree(folder, ignore_errors=True)
    # Seeds far from the ones sample cards are usually drawn with; the pool and the held-out cards differ.
    pool_truth = generate_dataset(folder / "pool", pool, 17_000 + seed, world=world, workers=workers)
    heldout_truth = generate_dataset(folder / "heldout", heldout, 27_000 + seed, world=world, workers=workers)
    columns, rows = _read_rows(pool_truth)
    catalogue, changed = corrupt(rows, rate, seed, world)
    _write_rows(folder / "pool" / "catalogue.csv", columns, catalogue)
    return {
        "pool": folder / "pool",
        "heldout": folder / "heldout",
        "catalogue": folder / "pool" / "catalogue.csv",
        "clean": pool_truth,
        "heldout_truth": heldout_truth,
        "fields": folder / "pool" / "fields.toml",
        "rows": {Path(row["local_image_path"]).name: row for row in rows},
        "corrupted": {Path(path).name: name for path, name in changed.items()},
    }


# ------------------------------------------------------------------------------------------------ commands


class Commands:
    """`inspector` subcommands in a subprocess (the real command lines), logged with their wall time."""

    def __init__(self, out: Path) -> None:
        self.log: list[dict] = []
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        self.out = out

    def __call__(self, *args: str) -> str:
        command = [sys.executable, "-m", "inspector", *map(str, args)]
        shown = "inspector " + " ".join(str(a) for a in args)
        print(f"$ {shown}", flush=True)
        started = time.perf_counter()
        result = subprocess.run(command, env=self.env, cwd=REPO, capture_output=True, text=True)
        seconds = round(time.perf_counter() - started, 1)
        self.log.append({"command": shown, "seconds": seconds, "exit": result.returncode})
        tail = (result.stdout + result.stderr).strip().splitlines()[-12:]
        print("\n".join(f"  {line}" for line in tail), flush=True)
        if result.returncode != 0:
            raise SystemExit(f"`{shown}` failed (exit {result.returncode}); its output is above")
        return result.stdout


def scan_settings(args) -> list[str]:
    settings = ["--fields", str(args.fields), "--db", str(args.db), "--no-report"]
    for option, value in (("--batch-size", args.batch_size), ("--max-new-tokens", args.max_new_tokens),
                          ("--num-crops", args.num_crops), ("--prompt", args.prompt)):  # fmt: skip
        if value is not None:
            settings += [option, str(value)]
    return settings


def train_settings(args, output: Path) -> list[str]:
    settings = ["--model", args.model, "--output", str(output), "--fields", str(args.fields), "--max-steps",
                str(args.steps), "--seed", str(args.seed), "--lr", str(args.lr), "--batch-size", str(args.train_batch),
                "--warmup-steps", str(args.warmup), "--schedule", "constant", "--method", args.method,
                "--val-fraction", "0", "--eval-samples", "0", "--best-metric", "loss", "--save-total-limit", "1",
                "--eval-every", str(args.steps)]  # fmt: skip
    for option, value in (("--num-crops", args.num_crops), ("--prompt", args.prompt)):
        if value is not None:
            settings += [option, str(value)]
    return settings


# ------------------------------------------------------------------------------------------------ decisions


def simulate_decisions(db: Path, run: str, world: dict, limit: int) -> tuple[list[list[str]], dict]:
    """The oracle's decisions on the review view's first `limit` disagreements of `run`."""
    from inspector.review import disagreements_in_review_order, review_view_data
    from inspector.store import open_store

    with open_store(db, read_only=True) as store:
        info = store.get_run(run)
        items = review_view_data(store, info.id, store.run_rows(info.id, with_thumbnails=False), str(db))["items"]
    ordered = disagreements_in_review_order(items)
    decisions, counts = [], {"catalogue_wrong": 0, "model_wrong": 0, "disagreements": len(ordered)}
    caught: set[str] = set()
    for sha, path, field, _outcome, _model, _catalogue, _confidence, _key in ordered[:limit]:
        name = Path(path).name
        if world["corrupted"].get(name) == field:
            decisions.append([str(info.id), sha, field, "catalogue_wrong", world["rows"][name][COLUMNS[field]]])
            caught.add(name)
        else:
            decisions.append([str(info.id), sha, field, "model_wrong", ""])
        counts[decisions[-1][3]] += 1
    counts["decisions"] = len(decisions)
    counts["corrupted_rows"] = len(world["corrupted"])
    counts["corrupted_rows_caught"] = len(caught)
    return decisions, counts


# ------------------------------------------------------------------------------------------------ figures


def run_figures(db: Path, run: str) -> dict:
    from inspector.store import open_store

    with open_store(db, read_only=True) as store:
        info = store.get_run(run)
        metrics = store.run_metrics(info.id)
        return {
            "run": info.id,
            "model": info.model,
            "images": info.n_images,
            "images_per_s": info.images_per_s,
            "accuracy": {name: figures.accuracy for name, figures in metrics.items()},
            "n": {name: figures.n for name, figures in metrics.items()},
        }


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _mean(accuracy: dict) -> float | None:
    values = [accuracy[name] for name in TABLE_FIELDS if accuracy.get(name) is not None]
    return sum(values) / len(values) if values else None


def write_results(out: Path, result: dict) -> str:
    (out / "review_loop.json").write_text(json.dumps(result, indent=2) + "\n")
    arms = list(result["after"])
    before = result["before"]["accuracy"]
    decided = result["decisions"]
    lines = [
        f"# The closed loop: {result['pool']} shifted-world cards reviewed, {result['heldout']} held-out cards",
        "",
        f"Model: {result['model']}; device: {result['device'].get('gpu') or str(result['device']['cpus']) + ' CPUs'}; "
        f"fine-tune: {result['steps']} steps, batch {result['train_batch']}, lr {result['lr']}, "
        f"{result['method']}, seed {result['seed']}.",
        f"Catalogue: {decided['corrupted_rows']} of {result['pool']} pool rows corrupted ({result['rate']:.0%}); "
        f"{decided['decisions']} decisions on the top of {decided['disagreements']} disagreements: "
        f"{decided['catalogue_wrong']} catalogue_wrong with the right value, {decided['model_wrong']} model_wrong; "
        f"{decided['corrupted_rows_caught']} corrupted rows caught.",
        "",
        "| field (held-out accuracy) | before | " + " | ".join(f"after, {arm}" for arm in arms) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in arms) + " |",
    ]
    for name in TABLE_FIELDS:
        if before.get(name) is None and all(result["after"][arm]["accuracy"].get(name) is None for arm in arms):
            continue
        cells = [_pct(result["after"][arm]["accuracy"].get(name)) for arm in arms]
        lines.append(f"| {name} | {_pct(before.get(name))} | " + " | ".join(cells) + " |")
    cells = [_pct(_mean(result["after"][arm]["accuracy"])) for arm in arms]
    lines.append(f"| mean | {_pct(_mean(before))} | " + " | ".join(cells) + " |")
    lines += ["", "Reports (`inspector report --compare`): " + ", ".join(result["reports"]), "",
              f"Rerun: `{result['command']}`", ""]  # fmt: skip
    text = "\n".join(lines)
    (out / "review_loop.md").write_text(text)
    return text


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "out"), help="folder for everything (default $OUT)")
    parser.add_argument("--model", help="model folder to start from (default: inspector/demo_model; --tiny: a tiny "
                        "random LLaVA)")
    parser.add_argument("--pool", type=int, help="shifted-world cards scanned and reviewed (default 400; --tiny 8)")
    parser.add_argument("--heldout", type=int, help="held-out cards measured on (default 300; --tiny 4)")
    parser.add_argument("--rate", type=float, default=0.2, help="share of pool catalogue rows corrupted")
    parser.add_argument("--decisions", type=int, help="disagreements decided, top first (default 150; --tiny 100)")
    parser.add_argument("--arms", default="decisions,catalogue", help=f"fine-tunes to run: {', '.join(ARMS)}")
    parser.add_argument("--steps", type=int, help="optimizer steps of each fine-tune (default 200; --tiny 2)")
    parser.add_argument("--train-batch", type=int, help="training batch (default 16; --tiny 2)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, help="warmup steps (default 20; --tiny 0)")
    parser.add_argument("--method", default="full", choices=("full", "lora", "frozen-vision"))
    parser.add_argument("--fields", help="fields file scans and training use (default: the model's own, else the "
                        "sample world's, written beside the cards)")
    parser.add_argument("--prompt", help="built-in prompt (default: the model's train_config.json, else extract)")
    parser.add_argument("--num-crops", type=int, help="default: the model's train_config.json, else its own")
    parser.add_argument("--batch-size", help="scan batch size (default auto; --tiny 4)")
    parser.add_argument("--max-new-tokens", type=int, help="default: the model's train_config.json; --tiny 24")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="card drawing processes")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny random model, a few cards")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    tiny = args.tiny
    args.pool = args.pool or (8 if tiny else 400)
    args.heldout = args.heldout or (4 if tiny else 300)
    args.decisions = args.decisions if args.decisions is not None else (100 if tiny else 150)
    args.steps = args.steps or (2 if tiny else 200)
    args.train_batch = args.train_batch or (2 if tiny else 16)
    args.warmup = args.warmup if args.warmup is not None else (0 if tiny else 20)
    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    if not arms or set(arms) - set(ARMS):
        raise SystemExit(f"--arms: choose from {', '.join(ARMS)}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if tiny:
        args.batch_size = args.batch_size or "4"
        args.max_new_tokens = args.max_new_tokens or 24
    model_flag = f" --model {args.model}" if args.model else ""
    if args.model is None:
        if tiny:
            from inspector.tiny import build_tiny_model

            args.model = str(build_tiny_model("llava", out / "tiny-model", seed=args.seed))
        elif (DEMO_MODEL / "config.json").is_file():
            args.model = str(DEMO_MODEL)
        else:
            raise SystemExit(f"no demo model in {DEMO_MODEL} (issue 16) in this checkout: pass --model DIR")
    model_dir = Path(args.model)
    trained = model_dir / "train_config.json"
    if trained.is_file():  # ask as the model was trained (fields, crops, prompt, answer length)
        recorded = json.loads(trained.read_text())
        args.num_crops = args.num_crops or recorded.get("num_crops")
        args.prompt = args.prompt or recorded.get("prompt")
        args.max_new_tokens = args.max_new_tokens or recorded.get("max_new_tokens")
        fields = recorded.get("fields_file")
        if not args.fields and fields and (model_dir / fields).is_file():  # the demo folder keeps its own
            args.fields = str(model_dir / fields)

    started = time.perf_counter()
    world = make_world(out, args.pool, args.heldout, args.rate, args.seed, args.workers)
    args.fields = Path(args.fields) if args.fields else world["fields"]
    args.db = out / "loop.db"
    args.db.unlink(missing_ok=True)
    inspector = Commands(out)

    # Before: the pool against its (corrupted) catalogue, the held-out cards against theirs.
    inspector("scan", world["pool"], "--truth", world["catalogue"], "--model", args.model, "--run-name", "pool",
              *scan_settings(args))  # fmt: skip
    inspector("scan", world["heldout"], "--truth", world["heldout_truth"], "--model", args.model, "--run-name",
              "before", *scan_settings(args))  # fmt: skip

    decisions, counts = simulate_decisions(args.db, "pool", world, args.decisions)
    decisions_csv = out / "decisions.csv"
    _write_rows(decisions_csv, ["run_id", "sha256", "field", "decision", "corrected_value"],
                [dict(zip(["run_id", "sha256", "field", "decision", "corrected_value"], row, strict=True))
                 for row in decisions])  # fmt: skip
    inspector("review", "import", decisions_csv, "--db", args.db, "--reviewer", "oracle")

    sources = {
        "decisions": ["--reviews", args.db, "--run", "pool"],
        "catalogue": ["--truth", world["catalogue"], "--images", world["pool"]],
        "clean": ["--truth", world["clean"], "--images", world["pool"]],
    }
    after, reports, trainings = {}, [], {}
    (out / "reports").mkdir(exist_ok=True)
    for arm in arms:
        output = out / f"train-{arm}"
        shutil.rmtree(output, ignore_errors=True)
        if arm == "decisions":  # what the model will learn, for the record
            inspector("train", *sources[arm], "--fields", args.fields, "--write-dataset", out / "decisions.jsonl")
        trained_at = time.perf_counter()
        inspector("train", *sources[arm], *train_settings(args, output))
        trainings[arm] = {"seconds": round(time.perf_counter() - trained_at, 1),
                          "data": json.loads((output / "data_summary.json").read_text())}  # fmt: skip
        inspector("scan", world["heldout"], "--truth", world["heldout_truth"], "--model", output / "final",
                  "--run-name", f"after-{arm}", *scan_settings(args))  # fmt: skip
        report = out / "reports" / f"after-{arm}-vs-before.html"
        inspector("report", f"after-{arm}", "--compare", "before", "--db", args.db, "--out", report)
        reports.append(str(report.relative_to(out)))
        after[arm] = run_figures(args.db, f"after-{arm}")

    from phi3v_fullsize import device_facts

    size_flag = " --tiny" if tiny else ""
    result = {
        "device": device_facts(),
        "model": args.model,
        "pool": args.pool,
        "heldout": args.heldout,
        "rate": args.rate,
        "steps": args.steps,
        "train_batch": args.train_batch,
        "lr": args.lr,
        "method": args.method,
        "seed": args.seed,
        "decisions": counts,
        "before": run_figures(args.db, "before"),
        "pool_before": run_figures(args.db, "pool"),
        "after": after,
        "training": trainings,
        "reports": reports,
        "commands": inspector.log,
        "seconds": round(time.perf_counter() - started, 1),
        "command": f"python bench/review_loop.py --out OUT{size_flag}{model_flag} --pool {args.pool} "
        f"--heldout {args.heldout} --rate {args.rate:g} --decisions {args.decisions} --steps {args.steps} "
        f"--arms {','.join(arms)} --seed {args.seed}",
    }
    print(write_results(out, result), flush=True)


if __name__ == "__main__":
    main()
