"""Proof that `inspector train` learns, and learns from the images: a small VLM trained from random init.

1. A few thousand synthetic listing cards (`inspector.samples.generate_dataset`): the category is told only by
   the drawn product picture, the price only by the printed text, the colour (a custom field, declared in the
   fields.toml written with the cards and passed as `fields_file`) by the picture's paint (and half the titles). The first --heldout rows are held out
   (heldout.csv, passed as `val_truth`: never trained on); the rest make train.csv.
2. The control: train_shuffled.csv, the same training rows with their images shuffled across rows, so the
   answers no longer match the pictures. Anything the control "learns" comes from the answers alone (priors).
3. The same random initial model (a small Phi-3.5-vision when the tokenizer files and the native model are
   present, else a small LLaVA) is trained on each for the same wall-time budget with `inspector.training.train`,
   evaluated by generation (scan's parser and scorer) on the held-out cards before the first step and at the end.

Each run writes OUT/<run>.json; every invocation rewrites OUT/learning.json and OUT/learning.md (the before /
after / control table and the loss curves) from the runs present, so the two runs can be separate commands:

    python bench/train_learning.py --out $OUT --run real --minutes 8        # GPU, one command per run
    python bench/train_learning.py --out $OUT --run control --minutes 8     # (each under the 10-minute limit)
    python bench/train_learning.py --tiny --minutes 0.5 --out /tmp/learn    # CPU smoke test, both runs
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_TOKENIZER_DIRS = (
    REPO / ".carry" / "phi35v",
    REPO.parent / "shared" / "phi35v",
)
FIELDS = ("brand", "title", "category", "price", "currency", "size_price", "colour")
#: Fields that only the image can tell apart (the picture, the printed price, the paint); the control may guess.
IMAGE_FIELDS = ("category", "price", "colour")

#: Model sizes: (language model, vision tower) overrides of the tiny Phi-3.5-vision config.
PHI3V_SIZES = {
    "small": (
        {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6, "num_attention_heads": 6,
         "num_key_value_heads": 6},
        {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4},
    ),
    "tiny": ({}, {}),
}  # fmt: skip


def find_tokenizer_dir(given: str | None) -> Path | None:
    candidates = [Path(given)] if given else list(DEFAULT_TOKENIZER_DIRS)
    for folder in candidates:
        if (folder / "tokenizer.json").is_file() and (folder / "preprocessor_config.json").is_file():
            return folder
    if given:
        raise SystemExit(
            f"--tokenizer-dir {given}: no Phi-3.5-vision tokenizer.json / preprocessor_config.json"
        )
    return None


def phi3v_available() -> bool:
    try:
        import transformers  # noqa: F401  (first, so that inspector registers phi3_v before its modules load)

        import inspector.models.phi3v.tiny  # noqa: F401
    except ImportError as error:
        print(f"native Phi-3.5-vision not importable ({error}); using a small LLaVA", flush=True)
        return False
    return True


# ------------------------------------------------------------------------------------------------ data


def prepare_data(out: Path, n: int, heldout: int, seed: int, workers: int) -> Path:
    """Cards + truth.csv (generated once), heldout.csv, train.csv and train_shuffled.csv; returns the folder."""
    from inspector.samples import generate_dataset

    folder = out / "data"
    truth = folder / "truth.csv"
    marker = folder / "generated.json"
    wanted = {"n": n, "seed": seed, "columns": "with colour"}  # data from before the colour column is redrawn
    if not (marker.is_file() and json.loads(marker.read_text()) == wanted):
        shutil.rmtree(folder, ignore_errors=True)
        generate_dataset(folder, n, seed, workers=workers)
        marker.write_text(json.dumps(wanted))
    with truth.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames or [], list(reader)
    held, train = rows[:heldout], rows[heldout:]
    shuffled_paths = [row["local_image_path"] for row in train]
    random.Random(f"control:{seed}").shuffle(shuffled_paths)
    shuffled = [{**row, "local_image_path": path} for row, path in zip(train, shuffled_paths, strict=True)]
    for name, subset in (("heldout.csv", held), ("train.csv", train), ("train_shuffled.csv", shuffled)):
        with (folder / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(subset)
    return folder


# ------------------------------------------------------------------------------------------------ model


def build_initial_model(
    out: Path, family: str, size: str, tokenizer_dir: Path | None, data: Path, seed: int
) -> Path:
    """The random initial model both runs start from, saved once to OUT/init-<family>-<size>."""
    folder = out / f"init-{family}-{size}"
    if (folder / "config.json").is_file():
        return folder
    if family == "phi3v":
        from inspector.models.phi3v.tiny import save_tiny_phi3v

        text, vision = PHI3V_SIZES[size]
        overrides = dict(text)
        if vision:
            overrides["vision_config"] = vision
        save_tiny_phi3v(folder, tokenizer_dir=tokenizer_dir, seed=seed, **overrides)
    else:
        build_llava(folder, size, data, seed)
    return folder


def build_llava(folder: Path, size: str, data: Path, seed: int) -> None:
    """A small LLaVA (CLIP tower + Llama decoder) with a byte-level BPE tokenizer trained on the answers."""
    from inspector.fields import load_fields
    from inspector.prompts import BUILTIN_PROMPTS, format_answer, get_prompt
    from inspector.tiny import build_tiny_llava, train_tokenizer
    from inspector.truth import load_truth

    fieldset = load_fields(data / "fields.toml")
    table = load_truth(data / "train.csv", fieldset=fieldset)
    corpus = [format_answer(record.fields, "json", fieldset) for record in table.records]
    corpus += [prompt.text for prompt in BUILTIN_PROMPTS.values()] + [get_prompt(fieldset=fieldset).text]
    tokenizer = train_tokenizer(["<image>"], vocab_size=4000 if size == "small" else 800, corpus=corpus)
    if size == "small":
        build_tiny_llava(
            folder,
            seed,
            tokenizer=tokenizer,
            image_size=336,
            patch=14,
            max_positions=2048,
            text={"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6,
                  "num_attention_heads": 6, "num_key_value_heads": 6},
            vision={"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
                    "num_attention_heads": 4, "projection_dim": 256},
        )  # fmt: skip
    else:
        build_tiny_llava(folder, seed, tokenizer=tokenizer, image_size=56, patch=14, max_positions=2048)


# ------------------------------------------------------------------------------------------------ runs


class Heartbeat:
    """Prints a line every `every` seconds so a long GPU command shows it is alive."""

    def __init__(self, name: str, every: float = 30.0) -> None:
        self.name, self.every, self.last = name, every, 0.0

    def start(self, total_steps: int, first_step: int) -> None:
        print(f"[{self.name}] training", flush=True)

    def advance(self, step: int) -> None:
        pass

    def log(self, step: int, figures: dict) -> None:
        now = time.monotonic()
        if "eval_field_accuracy" in figures:
            print(
                f"[{self.name}] step {step}: field accuracy {figures['eval_field_accuracy']:.3f}", flush=True
            )
        elif "loss" in figures and now - self.last >= self.every:
            self.last = now
            print(f"[{self.name}] step {step}: loss {figures['loss']:.4f}", flush=True)

    def message(self, text: str) -> None:
        print(f"[{self.name}] {text}", flush=True)


def training_figures(result, started: float) -> dict:
    """What the bench scripts report of one `inspector.training.train` run (its `TrainResult`; `started`: the
    `time.perf_counter()` before it): size, speed, the evaluations by step and the loss curves."""
    records = [json.loads(line) for line in Path(result.metrics_file).read_text().splitlines()]
    by_step: dict[int, dict] = {}
    for record in records:  # the loss and the generated-answer figures of one evaluation are two log lines
        if any(key.startswith("eval_") for key in record):
            by_step.setdefault(record["step"], {}).update(record)
    return {
        "parameters": result.parameters,
        "precision": result.precision,
        "steps": result.steps,
        "epochs": round(result.epochs, 3),
        "train_examples": result.data.train_examples,
        "heldout_examples": result.data.val_examples,
        "train_seconds": round(result.train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "samples_per_second": result.samples_per_second,
        "evaluations": [by_step[step] for step in sorted(by_step)],
        "loss_curve": [(r["step"], r["loss"]) for r in records if "loss" in r],
        "eval_loss_curve": [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r],
    }


def run_one(name: str, args, data: Path, model: Path) -> dict:
    from inspector.training import TrainConfig, train

    csv_name = "train.csv" if name == "real" else "train_shuffled.csv"
    output = Path(args.out) / f"run-{name}"
    shutil.rmtree(output, ignore_errors=True)
    config = TrainConfig(
        truth=str(data / csv_name),
        val_truth=str(data / "heldout.csv"),
        images=str(data),
        fields_file=str(data / "fields.toml"),
        model=str(model),
        output=str(output),
        seed=args.seed,
        num_crops=args.num_crops if args.family == "phi3v" else None,
        max_steps=10**7,
        max_minutes=args.minutes,
        lr=args.lr,
        batch_size=args.batch_size,
        warmup_steps=args.warmup,
        schedule="constant",
        weight_decay=0.01,
        gradient_checkpointing=False,
        eval_every=args.eval_every or 10**7,
        eval_samples=args.heldout,
        eval_at_start=True,
        max_new_tokens=args.max_new_tokens,
        save_total_limit=1,
        workers=args.workers,
        logging_steps=args.logging_steps,
    )
    started = time.perf_counter()
    result = train(config, Heartbeat(name))
    figures = training_figures(result, started)
    evals = figures["evaluations"]
    return {
        "run": name,
        "train_csv": csv_name,
        "family": args.family,
        "size": args.size,
        **figures,
        "before": evals[0] if evals else {},
        "after": evals[-1] if evals else {},
        "config": config.to_dict(),
    }


# ------------------------------------------------------------------------------------------------ report


def _figure(record: dict, key: str, percent: bool = True) -> str:
    value = record.get(key)
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if percent else f"{value:.2f}"


def _curve_points(curve: list, points: int = 12) -> list:
    if len(curve) <= points:
        return curve
    step = (len(curve) - 1) / (points - 1)
    return [curve[round(i * step)] for i in range(points)]


def write_report(out: Path, device: dict, command: str) -> None:
    runs = {name: json.loads((out / f"{name}.json").read_text()) for name in ("real", "control") if (out / f"{name}.json").is_file()}  # fmt: skip
    (out / "learning.json").write_text(json.dumps({"device": device, "runs": runs}, indent=2) + "\n")
    real, control = runs.get("real", {}), runs.get("control", {})
    first = real or control
    lines = [
        "# Learning proof: held-out per-field accuracy before and after training",
        "",
        f"Device: {device.get('gpu') or device.get('cpu')}; torch {device['torch']}, transformers "
        f"{device['transformers']}.",
        f"Model: {first.get('family')} ({first.get('size')}, {first.get('parameters', 0):,} parameters, random "
        f"initialisation), precision {first.get('precision')}.",
        f"Data: {first.get('train_examples')} training cards, {first.get('heldout_examples')} held-out cards never "
        "trained on; the control trains on the same rows with the images shuffled across rows.",
        "",
        "| field | before (random init) | after, real | after, control (shuffled images) |",
        "| --- | ---: | ---: | ---: |",
    ]
    before = (real or control).get("before", {})
    for field in FIELDS:
        key = f"eval_{field}_accuracy"
        lines.append(
            f"| {field} accuracy | {_figure(before, key)} | {_figure(real.get('after', {}), key)} | "
            f"{_figure(control.get('after', {}), key)} |"
        )
    for key, label in (("eval_field_accuracy", "mean field accuracy"), ("eval_exact_match", "all fields right"),
                       ("eval_parsed", "answers parsed")):  # fmt: skip
        lines.append(
            f"| {label} | {_figure(before, key)} | {_figure(real.get('after', {}), key)} | "
            f"{_figure(control.get('after', {}), key)} |"
        )
    for key, label in (("eval_price_mae", "price MAE"), ("eval_loss", "held-out loss")):
        lines.append(
            f"| {label} | {_figure(before, key, False)} | {_figure(real.get('after', {}), key, False)} | "
            f"{_figure(control.get('after', {}), key, False)} |"
        )
    lines += ["", "| run | steps | epochs | train s | samples/s |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, run in runs.items():
        rate = run.get("samples_per_second")
        lines.append(
            f"| {name} | {run['steps']} | {run['epochs']} | {run['train_seconds']} | "
            f"{'-' if rate is None else f'{rate:.1f}'} |"
        )
    lines += ["", "Training loss (step: real / control):", ""]
    curves = {name: dict(run.get("loss_curve", [])) for name, run in runs.items()}
    steps = sorted({step for step, _ in _curve_points(first.get("loss_curve", []))})
    for step in steps:
        values = " / ".join(f"{curves[name][step]:.3f}" if step in curves[name] else "-" for name in runs)
        lines.append(f"- {step}: {values}")
    lines += ["", f"Rerun: `{command}` (once per run: --run real, --run control).", ""]
    (out / "learning.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for data, runs, <run>.json, learning.json/.md")
    parser.add_argument("--run", default="both", choices=("real", "control", "both"))
    parser.add_argument("--minutes", type=float, default=8.0, help="training wall time per run")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny model, few cards")
    parser.add_argument("--n", type=int, help="cards to generate (default 4000; --tiny 40)")
    parser.add_argument("--heldout", type=int, help="held-out cards (default 200; --tiny 6)")
    parser.add_argument("--family", choices=("auto", "phi3v", "llava"), default="auto")
    parser.add_argument("--tokenizer-dir", "--files", dest="tokenizer_dir",
                        help="Phi-3.5-vision tokenizer/processor files (default: .carry/phi35v, ../shared/phi35v)")  # fmt: skip
    parser.add_argument("--num-crops", type=int, default=4, help="Phi-3.5-vision crops per image")
    parser.add_argument("--batch-size", type=int, help="default 32; --tiny 4")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, help="warmup steps (default 100; --tiny 2)")
    parser.add_argument(
        "--eval-every", type=int, default=0, help="steps between evaluations (0: start and end)"
    )
    parser.add_argument("--max-new-tokens", type=int, help="default 160; --tiny 48")
    parser.add_argument("--logging-steps", type=int, help="default 20; --tiny 1")
    parser.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    tiny = args.tiny
    args.n = args.n or (40 if tiny else 4000)
    args.heldout = args.heldout or (6 if tiny else 200)
    args.batch_size = args.batch_size or (4 if tiny else 32)
    args.warmup = args.warmup if args.warmup is not None else (2 if tiny else 100)
    args.max_new_tokens = args.max_new_tokens or (48 if tiny else 160)
    args.logging_steps = args.logging_steps or (1 if tiny else 20)
    args.size = "tiny" if tiny else "small"
    if tiny:
        args.num_crops = 1
        args.workers = 0
        import torch

        torch.set_num_threads(1)  # tiny models on a shared CPU: one thread is much faster than contended ones

    tokenizer_dir = find_tokenizer_dir(args.tokenizer_dir)
    if args.family == "auto":
        args.family = "phi3v" if tokenizer_dir is not None and phi3v_available() else "llava"
    if args.family == "phi3v" and tokenizer_dir is None:
        raise SystemExit("--family phi3v needs the Phi-3.5-vision tokenizer files: pass --tokenizer-dir")

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from phi3v_fullsize import device_facts

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(out, args.n, args.heldout, args.seed, max(1, args.workers))
    model = build_initial_model(out, args.family, args.size, tokenizer_dir, data, args.seed)
    device = device_facts()
    import platform

    device.setdefault("cpu", platform.processor() or platform.machine())
    for name in ("real", "control") if args.run == "both" else (args.run,):
        result = run_one(name, args, data, model)
        (out / f"{name}.json").write_text(json.dumps({"device": device, **result}, indent=2) + "\n")
        after = result["after"]
        print(json.dumps({"run": name, "steps": result["steps"],
                          **{k: after.get(f"eval_{k}_accuracy") for k in IMAGE_FIELDS}}), flush=True)  # fmt: skip
    size_flag = " --tiny" if tiny else ""
    command = f"python bench/train_learning.py --out OUT --minutes {args.minutes:g}{size_flag} --run RUN"
    write_report(out, device, command)
    print((out / "learning.md").read_text())


if __name__ == "__main__":
    main()
