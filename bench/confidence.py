"""Proof that per-field confidence means something: it ranks deliberately corrupted catalogue rows first.

1. A model trained by bench/train_learning.py (its OUT/run-real/final, or --model DIR), or one trained here for
   --train-minutes (train_learning's real run, same data and settings).
2. The held-out cards it never trained on (OUT/data/heldout.csv), with 10% of the catalogue rows corrupted at
   random (seeded): half get another category, half a price changed by a factor far outside the tolerance.
3. `inspector scan` of those cards against the corrupted catalogue (the scan's own code path: fast decoder, parser,
   per-field confidence, store).
4. Each row's suspicion = the highest confidence among its category and price values that disagree with the
   catalogue (0 where the model agrees, or gave no value). Ranked by it, how early do the corrupted rows come?
   Precision at 10% (the top tenth of rows) and AUROC, against random ranking (expected: precision = the
   corruption rate, AUROC = 0.5; and one seeded shuffle) and against "disagreement flag only" (rows that disagree
   first, in random order: what a report without confidence gives).

    python bench/train_learning.py --out $OUT --run real --minutes 8          # GPU: train (the lead's command)
    python bench/confidence.py --from $OUT --out $OUT/confidence              # GPU: this benchmark, ~1-2 min
    python bench/confidence.py --tiny --out /tmp/conf                         # CPU smoke test (trains 0.3 min)
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Fields whose corruption the benchmark plants, and whose disagreements rank the rows.
FIELDS = ("category", "price")
CATEGORY_COLUMN, PRICE_COLUMN = "category3_code", "full_price"
#: Price corruptions: multiply by one of these (never within a 0.5% tolerance of the true price).
PRICE_FACTORS = (0.5, 0.7, 1.4, 2.0)


def corrupt(rows: list[dict], rate: float, seed: int) -> tuple[list[dict], dict[str, str]]:
    """A copy of the catalogue rows with `rate` of them corrupted (half category, half price, seeded); returns
    the rows and {image path: what was corrupted}."""
    rng = random.Random(f"corrupt:{seed}")
    count = max(1, round(len(rows) * rate))
    chosen = rng.sample(range(len(rows)), count)
    categories = sorted({row[CATEGORY_COLUMN] for row in rows if row[CATEGORY_COLUMN]})
    out = [dict(row) for row in rows]
    corrupted: dict[str, str] = {}
    for order, index in enumerate(chosen):
        row = out[index]
        others = [c for c in categories if c != row[CATEGORY_COLUMN]]
        if order % 2 == 0 and others:
            row[CATEGORY_COLUMN] = rng.choice(others)
            corrupted[row["local_image_path"]] = "category"
        else:
            price = float(row[PRICE_COLUMN])
            row[PRICE_COLUMN] = f"{price * rng.choice(PRICE_FACTORS):.2f}"
            corrupted[row["local_image_path"]] = "price"
    return out, corrupted


def auroc(scores: list[float], labels: list[bool]) -> float:
    """Probability that a corrupted row scores above a clean one (ties count half): Mann-Whitney U / (n1 n0)."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not positives or not negatives:
        return float("nan")
    ordered = sorted((s, i) for i, s in enumerate(scores))
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(ordered):  # average ranks over ties
        end = start
        while end + 1 < len(ordered) and ordered[end + 1][0] == ordered[start][0]:
            end += 1
        for k in range(start, end + 1):
            ranks[ordered[k][1]] = (start + end) / 2 + 1
        start = end + 1
    positive_ranks = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    n1, n0 = len(positives), len(negatives)
    return (positive_ranks - n1 * (n1 + 1) / 2) / (n1 * n0)


def precision_at(scores: list[float], labels: list[bool], share: float, seed: int) -> float:
    """Share of corrupted rows among the top `share` of rows by score (ties in a seeded random order)."""
    rng = random.Random(f"ties:{seed}")
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], rng.random()))
    top = order[: max(1, round(len(scores) * share))]
    return sum(labels[i] for i in top) / len(top)


def suspicion(store, run_id: int) -> dict[str, tuple[float, bool, dict]]:
    """image file name -> (suspicion score, any disagreement, per-field outcome and confidence)."""
    scores = {}
    for row in store.run_rows(run_id, with_thumbnails=False):
        results = {r["field"]: r for r in row["field_results"] if r["field"] in FIELDS}
        score, disagrees = 0.0, False
        for result in results.values():
            if result["outcome"] in ("wrong", "spurious"):
                disagrees = True
                score = max(score, result["confidence"] or 0.0)
        detail = {name: [r["outcome"], r["confidence"]] for name, r in results.items()}
        scores[Path(row["path"]).name] = (score, disagrees, detail)
    return scores


def _accuracy(by_image: dict, names: list[str], field: str) -> float | None:
    outcomes = [by_image[n][2].get(field, [None])[0] for n in names]
    scored = [o for o in outcomes if o is not None]
    return sum(o == "correct" for o in scored) / len(scored) if scored else None


def train_model(args, out: Path) -> Path:
    """train_learning's real run (same data and defaults), into OUT; returns the final model folder."""
    import train_learning

    argv = [
        "--out",
        str(out),
        "--run",
        "real",
        "--minutes",
        str(args.train_minutes),
        "--seed",
        str(args.seed),
    ]
    if args.tiny:
        argv.append("--tiny")
    if args.tokenizer_dir:
        argv += ["--tokenizer-dir", args.tokenizer_dir]
    train_learning.main(argv)
    return out / "run-real" / "final"


def _fields_file(trained: dict, data: Path) -> str | None:
    """The fields file the model was trained with: its recorded path, else the one beside the cards."""
    recorded = trained.get("fields_file")
    if recorded and Path(recorded).is_file():
        return recorded
    beside = data / "fields.toml"
    return str(beside) if recorded and beside.is_file() else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", required=True, help="folder for the corrupted catalogue, database and results"
    )
    parser.add_argument("--from", dest="source", help="train_learning.py's --out folder (model and data)")
    parser.add_argument("--model", help="trained checkpoint folder (default: FROM/run-real/final)")
    parser.add_argument("--data", help="card folder with heldout.csv (default: FROM/data)")
    parser.add_argument("--train-minutes", type=float, help="no trained model: train one for this long first")
    parser.add_argument("--tokenizer-dir", help="Phi-3.5-vision tokenizer files, when training here")
    parser.add_argument("--rate", type=float, default=0.10, help="share of catalogue rows corrupted")
    parser.add_argument("--limit", type=int, help="scan only the first N held-out cards")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, help="default 160; --tiny 48 (as train_learning)")
    parser.add_argument(
        "--num-crops", type=int, help="default: the checkpoint's (train_learning: 4; --tiny 1)"
    )
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: trains a tiny model for 0.3 min")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.tiny and args.train_minutes is None and not (args.model or args.source):
        args.train_minutes = 0.3
    source = Path(args.source) if args.source else None
    if args.train_minutes is not None and not args.model:
        source = source or out / "learning"
        model = train_model(args, source)
    elif args.model:
        model = Path(args.model)
    elif source is not None:
        model = source / "run-real" / "final"
        if not (model / "config.json").is_file():
            model = source / "run-real" / "best"
    else:
        raise SystemExit(
            "pass --from OUT (train_learning's output), --model DIR with --data DIR, or --train-minutes"
        )
    data = Path(args.data) if args.data else (source / "data" if source else None)
    if data is None or not (data / "heldout.csv").is_file():
        raise SystemExit("no held-out cards: pass --data (a train_learning data folder with heldout.csv)")
    if not (model / "config.json").is_file():
        raise SystemExit(f"{model}: no trained model there (config.json missing)")

    with (data / "heldout.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames or []), list(reader)
    if args.limit:
        rows = rows[: args.limit]
    catalogue, corrupted = corrupt(rows, args.rate, args.seed)
    truth = out / "corrupted_catalogue.csv"
    with truth.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(catalogue)

    from phi3v_fullsize import device_facts

    from inspector.scan import ScanConfig, Scanner
    from inspector.store import open_store

    db = out / "confidence.db"
    db.unlink(missing_ok=True)
    # Ask as the model was trained: its train_config.json (saved with every checkpoint) has the crops, prompt and
    # answer length it learned with.
    trained = (
        json.loads((model / "train_config.json").read_text())
        if (model / "train_config.json").is_file()
        else {}
    )
    max_new = args.max_new_tokens or trained.get("max_new_tokens") or (48 if args.tiny else 160)
    num_crops = args.num_crops or trained.get("num_crops")
    config = ScanConfig(
        inputs=[str(data / row["local_image_path"]) for row in rows],
        model=str(model),
        db=str(db),
        report=None,
        truth=str(truth),
        batch_size=args.batch_size,
        max_new_tokens=max_new,
        num_crops=num_crops,
        prompt=trained.get("prompt"),
        prompt_file=trained.get("prompt_file"),
        # The fields it was trained to answer (train_learning adds colour): another field set is another prompt.
        fields_file=_fields_file(trained, data),
        workers=4,
    )
    started = time.perf_counter()
    store = open_store(config.db)
    backend = config.load_backend()
    summary = Scanner(config, backend, store).run()
    scan_seconds = time.perf_counter() - started

    by_image = suspicion(store, summary.run_id)
    names = sorted(by_image)
    corrupted_by_name = {Path(path).name: field for path, field in corrupted.items()}
    labels = [name in corrupted_by_name for name in names]
    scores = [by_image[name][0] for name in names]
    flags = [1.0 if by_image[name][1] else 0.0 for name in names]
    shuffled = random.Random(f"shuffle:{args.seed}").sample(range(len(names)), len(names))
    random_scores = [float(position) for position in shuffled]
    share = args.rate
    figures = {
        "confidence": {
            "precision": precision_at(scores, labels, share, args.seed),
            "auroc": auroc(scores, labels),
        },
        "disagreement flag only": {
            "precision": precision_at(flags, labels, share, args.seed),
            "auroc": auroc(flags, labels),
        },
        "random (seeded shuffle)": {
            "precision": precision_at(random_scores, labels, share, args.seed),
            "auroc": auroc(random_scores, labels),
        },
        "random (expected)": {"precision": sum(labels) / len(labels), "auroc": 0.5},
    }
    caught = sorted(
        ((by_image[name][0], name, corrupted_by_name[name]) for name in names if name in corrupted_by_name),
        reverse=True,
    )
    # Per field: rows corrupted in that field against the rows not corrupted at all, ranked by that field's
    # disagreement confidence alone (shows which field carries the signal, e.g. a model that cannot read prices).
    per_field = {}
    for field in FIELDS:
        subset = [n for n in names if corrupted_by_name.get(n) in (None, field)]
        field_labels = [corrupted_by_name.get(n) == field for n in subset]
        field_scores = []
        for name in subset:
            outcome, confidence = by_image[name][2].get(field, [None, None])
            field_scores.append((confidence or 0.0) if outcome in ("wrong", "spurious") else 0.0)
        per_field[field] = {
            "rows": len(subset),
            "corrupted": sum(field_labels),
            "auroc": auroc(field_scores, field_labels),
            "model_accuracy_on_clean_rows": _accuracy(
                by_image, [n for n in subset if n not in corrupted_by_name], field
            ),
        }
    result = {
        "device": device_facts(),
        "model": str(model),
        "backend": backend.describe(),
        "cards": len(names),
        "corrupted": sum(labels),
        "corrupted_fields": {f: list(corrupted.values()).count(f) for f in FIELDS},
        "rate": args.rate,
        "scan_seconds": round(scan_seconds, 1),
        "images_per_s": summary.images_per_s,
        "figures": figures,
        "per_field": per_field,
        "corrupted_rows": [[name, field, score] for score, name, field in caught],
        "rows": {name: {"corrupted": label, "score": by_image[name][0], "fields": by_image[name][2]}
                 for name, label in zip(names, labels, strict=True)},
    }  # fmt: skip
    (out / "confidence.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Confidence ranks corrupted catalogue rows: {len(names)} held-out cards, {sum(labels)} corrupted "
        f"({result['corrupted_fields']['category']} category, {result['corrupted_fields']['price']} price)",
        "",
        f"Model: {model} ({backend.describe().get('decoder', '?')} decoder); scan {scan_seconds:.1f} s.",
        "",
        f"| ranking | precision at {100 * share:g}% | AUROC |",
        "| --- | ---: | ---: |",
    ]
    for name, values in figures.items():
        lines.append(f"| {name} | {100 * values['precision']:.1f}% | {values['auroc']:.3f} |")
    lines += ["", "| field | corrupted rows | AUROC (that field's confidence alone) | model accuracy on clean rows |",
              "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for field, values in per_field.items():
        accuracy = values["model_accuracy_on_clean_rows"]
        lines.append(
            f"| {field} | {values['corrupted']} | {values['auroc']:.3f} | "
            f"{'-' if accuracy is None else f'{100 * accuracy:.1f}%'} |"
        )
    (out / "confidence.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
