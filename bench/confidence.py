"""Proof that per-field confidence means something: it ranks deliberately corrupted catalogue rows first.

1. A trained model: bench/train_demo.py's demo folder (OUT/demo_model, or --model DIR: any folder `inspector
   train` wrote, asked the question it was trained on, as `inspector scan` asks it).
2. Held-out cards it never trained on (train_demo's OUT/data/heldout/truth.csv, or --data DIR with truth.csv),
   with --rate of the catalogue rows corrupted at random (seeded), cycling through category, colour (where the
   catalogue has a colour column) and price (a factor far outside the tolerance).
3. `inspector scan` of those cards against the corrupted catalogue (the scan's own code path: fast decoder, parser,
   per-field confidence, store).
4. Each row's suspicion = the highest confidence among its corruptible values that disagree with the catalogue (0
   where the model agrees, or gave no value). Ranked by it, how early do the corrupted rows come? Precision at
   --rate (the top share of rows) and AUROC, against random ranking and against "disagreement flag only" (rows
   that disagree first, in random order: what a report without confidence gives).
5. Calibration: on the rows nobody corrupted, per field, the model's accuracy in bins of its confidence.

    python bench/train_demo.py --out $OUT                                     # GPU: the demo model and cards
    python bench/confidence.py --from $OUT --out $OUT/confidence              # GPU: this benchmark, ~1-2 min
    python bench/confidence.py --model DIR --data CARDS --out /tmp/conf       # any trained folder, any cards
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

#: Fields whose corruption the benchmark plants (where the catalogue has the column), and whose disagreements rank
#: the rows: field -> catalogue column.
COLUMNS = {"category": "category3_code", "colour": "colour", "price": "full_price"}
FIELDS = tuple(COLUMNS)
CATEGORY_COLUMN, PRICE_COLUMN = COLUMNS["category"], COLUMNS["price"]
#: Upper edges of the confidence bins of the reliability table.
BINS = (0.5, 0.8, 0.9, 0.95, 0.99, 1.0)
#: Price corruptions: multiply by one of these (never within a 0.5% tolerance of the true price).
PRICE_FACTORS = (0.5, 0.7, 1.4, 2.0)


def corrupt(rows: list[dict], rate: float, seed: int) -> tuple[list[dict], dict[str, str]]:
    """A copy of the catalogue rows with `rate` of them corrupted (seeded), cycling through the corruptible fields
    the catalogue has (category, colour, price); returns the rows and {image path: what was corrupted}."""
    rng = random.Random(f"corrupt:{seed}")
    count = max(1, round(len(rows) * rate))
    chosen = rng.sample(range(len(rows)), count)
    fields = [field for field, column in COLUMNS.items() if rows and column in rows[0]]
    values = {field: sorted({row[COLUMNS[field]] for row in rows if row[COLUMNS[field]]}) for field in fields}
    out = [dict(row) for row in rows]
    corrupted: dict[str, str] = {}
    for order, index in enumerate(chosen):
        row, field = out[index], fields[order % len(fields)]
        column = COLUMNS[field]
        if field == "price":
            row[column] = f"{float(row[column]) * rng.choice(PRICE_FACTORS):.2f}"
        else:
            others = [value for value in values[field] if value != row[column]]
            if not others:
                continue
            row[column] = rng.choice(others)
        corrupted[row["local_image_path"]] = field
    return out, corrupted


def reliability(by_image: dict, clean: list[str]) -> dict[str, list[dict]]:
    """Per field, on rows nobody corrupted: for each confidence bin, how many values and how many were right."""
    table: dict[str, list[dict]] = {}
    for field in FIELDS:
        rows = [{"upper": upper, "n": 0, "right": 0} for upper in BINS]
        for name in clean:
            outcome, confidence = by_image[name][2].get(field, [None, None])
            if confidence is None or outcome not in ("correct", "wrong", "spurious"):
                continue
            slot = next(row for row in rows if confidence <= row["upper"])
            slot["n"] += 1
            slot["right"] += outcome == "correct"
        if any(row["n"] for row in rows):
            table[field] = rows
    return table


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", required=True, help="folder for the corrupted catalogue, database and results"
    )
    parser.add_argument("--from", dest="source", help="bench/train_demo.py's --out folder (model and cards)")
    parser.add_argument("--model", help="trained model folder (default: FROM/demo_model)")
    parser.add_argument("--data", help="card folder with truth.csv (default: FROM/data/heldout)")
    parser.add_argument("--rate", type=float, default=0.10, help="share of catalogue rows corrupted")
    parser.add_argument("--limit", type=int, help="scan only the first N cards")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, help="default: the model's training setting, else 160")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source = Path(args.source) if args.source else None
    model = Path(args.model) if args.model else (source / "demo_model" if source else None)
    data = Path(args.data) if args.data else (source / "data" / "heldout" if source else None)
    if model is None or not (model / "config.json").is_file():
        raise SystemExit(f"{model}: no trained model there: pass --from (train_demo's OUT) or --model DIR")
    if data is None or not (data / "truth.csv").is_file():
        raise SystemExit(f"{data}: no cards there (truth.csv missing): pass --from or --data DIR")

    with (data / "truth.csv").open(newline="", encoding="utf-8") as handle:
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

    from inspector.scan import ScanConfig, Scanner, ask_as_trained
    from inspector.store import open_store

    db = out / "confidence.db"
    db.unlink(missing_ok=True)
    # Asked as `inspector scan --model DIR` asks it: the question (fields, prompt, sizes, crops) it was trained on.
    trained = (
        json.loads((model / "train_config.json").read_text())
        if (model / "train_config.json").is_file()
        else {}
    )
    config = ScanConfig(
        inputs=[str(data / row["local_image_path"]) for row in rows],
        model=str(model),
        db=str(db),
        report=None,
        truth=str(truth),
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens or trained.get("max_new_tokens") or 160,
        workers=4,
    )
    config, _question = ask_as_trained(config)
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
    calibration = reliability(by_image, [n for n in names if n not in corrupted_by_name])
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
        "reliability": calibration,
        "corrupted_rows": [[name, field, score] for score, name, field in caught],
        "rows": {name: {"corrupted": label, "score": by_image[name][0], "fields": by_image[name][2]}
                 for name, label in zip(names, labels, strict=True)},
    }  # fmt: skip
    (out / "confidence.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Confidence ranks corrupted catalogue rows: {len(names)} held-out cards, {sum(labels)} corrupted "
        f"({', '.join(f'{count} {field}' for field, count in result['corrupted_fields'].items() if count)})",
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
    lines += ["", "Calibration on the rows nobody corrupted: the model's accuracy by its confidence in the value.", "",
              "| field | " + " | ".join(f"≤ {upper:g}" for upper in BINS) + " |",
              "| --- | " + " | ".join("---:" for _ in BINS) + " |"]  # fmt: skip
    for field, bins in calibration.items():
        cells = [f"{100 * b['right'] / b['n']:.0f}% of {b['n']}" if b["n"] else "-" for b in bins]
        lines.append(f"| {field} | " + " | ".join(cells) + " |")
    (out / "confidence.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
