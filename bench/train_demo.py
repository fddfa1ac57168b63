"""The demo model: a small Phi-3.5-vision trained from scratch on generated cards, bounded by steps and seeds.

One command gives the same held-out figures on any card (within noise), because everything that decides the model
is fixed by the command: the cards (`inspector.samples`, seeded), the initial weights (seeded), the data order
(seeded), and the number of optimizer steps. Wall time decides nothing.

1. Cards: `--n` freshly generated training cards (every format, size and layout `inspector.samples` draws; each seen
   about once) and `--heldout` cards drawn with another seed (never trained on). The control's catalogue is the
   training catalogue with its images shuffled across rows: whatever the control learns comes from the answers
   alone (their priors), not from the pixels.
2. Model: the Phi-3.5-vision architecture at demo size (`DEMO_TEXT`, `DEMO_VISION`: a 6-layer, 256-wide language
   model with tied embeddings and a 6-layer, 256-wide CLIP tower, ~20 M parameters, ~40 MB in bf16), random init.
3. Runs: `real:SEED` (seed 0 and 1: initial weights and data order) and `control:0`, each `--steps` optimizer steps
   of `inspector.training.train` (the code `inspector train` runs), as separate processes side by side on one GPU.
   Held-out answers are generated and scored (scan's parser and scorer) every `--eval-every` steps: the curves.
4. The demo folder: real:0's final model in bf16 with its tokenizer, fields.toml, train_config.json, a model card
   (README.md) and training_history.json, ready to replace `inspector/demo_model/` in place.
5. Chunks (`--init DIR`): a run may start from an earlier run's demo folder instead of random weights, so that the
   training can go on across device calls and machines (a lent machine is given back between sessions, and a
   checkpoint with its optimizer state is too large to travel). Each chunk is a warm restart: fresh cards (give
   another `--seed`), a fresh AdamW state and its own warmup and cosine schedule. training_history.json lists every
   chunk (its command, steps and held-out figures), and the model card counts the steps of all of them.

Results: OUT/demo.json (every run's config, curves and figures), OUT/demo.md (the tables), OUT/demo_model/.

    python bench/train_demo.py --out /tmp/demo                  # GPU (H200: see BENCHMARKS.md for the time)
    python bench/train_demo.py --tiny --out /tmp/demo-tiny      # CPU smoke test: tiny model, a few steps
    python bench/train_demo.py --runs real:0 --init OLD/demo_model --seed 1 --out /tmp/demo2   # one more chunk
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

DEFAULT_TOKENIZER_DIRS = (REPO / ".carry" / "phi35v", REPO.parent / "shared" / "phi35v")
#: Figures the tables show, in this order (eval_<name>_accuracy).
FIELDS = ("category", "colour", "currency", "price", "brand", "title", "size_price")
TARGETS = {"category": 0.95, "colour": 0.95, "currency": 0.95, "price": 0.90, "brand": 0.90}

#: The demo model's language model and vision tower (overrides of the tiny Phi-3.5-vision config).
DEMO_TEXT = {
    "hidden_size": 256,
    "intermediate_size": 1024,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "tie_word_embeddings": True,
}
DEMO_VISION = {
    "hidden_size": 256,
    "intermediate_size": 1024,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
}


def find_tokenizer_dir(given: str | None) -> Path:
    for folder in [Path(given)] if given else DEFAULT_TOKENIZER_DIRS:
        if (folder / "tokenizer.json").is_file() and (folder / "preprocessor_config.json").is_file():
            return folder
    raise SystemExit("no Phi-3.5-vision tokenizer files: pass --tokenizer-dir (e.g. ../shared/phi35v)")


# ------------------------------------------------------------------------------------------------ data


def prepare_data(out: Path, n: int, heldout: int, seed: int, workers: int) -> Path:
    """OUT/data/train (n cards), OUT/data/heldout (other seed), train.csv, train_shuffled.csv; generated once."""
    from inspector.samples import SAVE_OPTIONS, generate_dataset

    folder = out / "data"
    marker = folder / "generated.json"
    wanted = {"n": n, "heldout": heldout, "seed": seed, "formats": "all"}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    formats = tuple(dict.fromkeys(SAVE_OPTIONS))  # every format the generator writes
    generate_dataset(folder / "train", n, seed, formats=formats, workers=workers)
    generate_dataset(folder / "heldout", heldout, seed + 1_000_003, formats=formats, workers=workers)
    with (folder / "train" / "truth.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames or [], list(reader)
    paths = [row["local_image_path"] for row in rows]
    random.Random(f"control:{seed}").shuffle(paths)
    shuffled = [{**row, "local_image_path": path} for row, path in zip(rows, paths, strict=True)]
    with (folder / "train" / "train_shuffled.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(shuffled)
    marker.write_text(json.dumps(wanted))
    return folder


def build_initial_model(out: Path, tokenizer_dir: Path, seed: int, tiny: bool, init: str | None = None) -> Path:
    """The run's starting weights: `init` (an earlier chunk's demo folder) when given, else a seeded random init."""
    from inspector.models.phi3v.tiny import save_tiny_phi3v

    if init:
        return Path(init)
    folder = out / f"init-{'tiny' if tiny else 'demo'}-{seed}"
    if not (folder / "config.json").is_file():
        overrides = {} if tiny else {**DEMO_TEXT, "vision_config": DEMO_VISION}
        save_tiny_phi3v(folder, tokenizer_dir=tokenizer_dir, seed=seed, **overrides)
    return folder


# ------------------------------------------------------------------------------------------------ one run


class Progress:
    """Prints the loss every `every` steps and every evaluation, one line each, for the run's log."""

    def __init__(self, name: str, every: int) -> None:
        self.name, self.every = name, every

    def start(self, total_steps: int, first_step: int) -> None:
        print(f"[{self.name}] training {total_steps} steps", flush=True)

    def advance(self, step: int) -> None:
        pass

    def log(self, step: int, figures: dict) -> None:
        if "eval_field_accuracy" in figures:
            shown = {
                k: round(figures[f"eval_{k}_accuracy"], 3) for k in FIELDS if f"eval_{k}_accuracy" in figures
            }
            print(f"[{self.name}] step {step} eval {json.dumps(shown)}", flush=True)
        elif "loss" in figures and step % self.every == 0:
            print(
                f"[{self.name}] step {step} loss {figures['loss']:.4f} {time.strftime('%H:%M:%S')}",
                flush=True,
            )

    def message(self, text: str) -> None:
        print(f"[{self.name}] {text}", flush=True)


def train_config(args, name: str, seed: int, data: Path, model: Path, out: Path):
    from inspector.training import TrainConfig

    return TrainConfig(
        truth=str(data / "train" / ("train_shuffled.csv" if name.startswith("control") else "truth.csv")),
        val_truth=str(data / "heldout" / "truth.csv"),
        fields_file=str(data / "train" / "fields.toml"),
        model=str(model),
        output=str(out / "runs" / name.replace(":", "-")),
        seed=seed,
        num_crops=args.num_crops,
        max_steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        warmup_steps=args.warmup,
        schedule="cosine",
        weight_decay=0.01,
        precision="fp32" if args.tiny else "mixed",
        gradient_checkpointing=False,
        fuse="none",
        eval_every=args.eval_every,
        eval_samples=args.heldout,
        max_new_tokens=args.max_new_tokens,
        save_total_limit=1,
        workers=args.workers,
        logging_steps=args.logging_steps,
    )


def run_one(args, name: str, data: Path, tokenizer_dir: Path) -> None:
    """One training run in this process; writes OUT/runs/<name>.json."""
    from train_learning import training_figures

    from inspector.training import train

    out = Path(args.out)
    kind, seed = name.split(":")
    model = build_initial_model(out, tokenizer_dir, int(seed), args.tiny, args.init)
    config = train_config(args, name, int(seed), data, model, out)
    shutil.rmtree(config.output, ignore_errors=True)
    started = time.perf_counter()
    result = train(config, Progress(name, args.logging_steps * 4))
    figures = training_figures(result, started)
    summary = {
        "run": name,
        "kind": kind,
        "seed": int(seed),
        **figures,
        "final": figures["evaluations"][-1] if figures["evaluations"] else {},
        "final_dir": result.final_dir,
        "init": args.init,
        "card_seed": args.seed,
        "config": config.to_dict(),
    }
    (out / "runs" / f"{name.replace(':', '-')}.json").write_text(json.dumps(summary, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------ report


def _pct(record: dict, key: str) -> str:
    value = record.get(key)
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


def write_report(out: Path, runs: dict[str, dict], device: dict, command: str) -> str:
    names = sorted(runs, key=lambda n: (n.startswith("control"), n))
    first = runs[names[0]]
    lines = [
        "# Demo model: held-out accuracy of a small Phi-3.5-vision trained from scratch",
        "",
        f"Device: {device.get('gpu') or device.get('cpu')}; torch {device['torch']}, transformers "
        f"{device['transformers']}.",
        f"Model: Phi-3.5-vision architecture, {first['parameters']:,} parameters, random init, precision "
        f"{first['precision']}; {first['steps']} steps of batch {first['config']['batch_size']} "
        f"(lr {first['config']['lr']:g}, cosine, warmup {first['config']['warmup_steps']}), num_crops "
        f"{first['config']['num_crops']}.",
        f"Data: {first['train_examples']:,} generated training cards, {first['heldout_examples']} held-out cards "
        "drawn with another seed; the control trains on the same rows with the images shuffled across rows.",
        "",
        "| field | target | " + " | ".join(names) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for field in FIELDS:
        key = f"eval_{field}_accuracy"
        target = TARGETS.get(field)
        cells = " | ".join(_pct(runs[n]["final"], key) for n in names)
        lines.append(f"| {field} | {'-' if target is None else f'{100 * target:.0f}%'} | {cells} |")
    for key, label in (("eval_exact_match", "all fields right"), ("eval_parsed", "answers parsed")):
        lines.append(f"| {label} | - | " + " | ".join(_pct(runs[n]["final"], key) for n in names) + " |")
    lines += ["", "| run | steps | train s | samples/s |", "| --- | ---: | ---: | ---: |"]
    for name in names:
        run = runs[name]
        rate = run.get("samples_per_second")
        lines.append(
            f"| {name} | {run['steps']} | {run['train_seconds']} | {'-' if rate is None else f'{rate:.0f}'} |"
        )
    lines += ["", "Held-out accuracy during training (step: " + ", ".join(FIELDS) + "):", ""]
    for name in names:
        for record in runs[name]["evaluations"]:
            values = ", ".join(_pct(record, f"eval_{f}_accuracy") for f in FIELDS)
            lines.append(f"- {name} step {record['step']}: {values}")
    lines += ["", "Training loss (every ~10% of the steps):", ""]
    for name in names:
        curve = runs[name]["loss_curve"]
        picks = curve[:: max(1, len(curve) // 10)] + curve[-1:]
        lines.append(f"- {name}: " + ", ".join(f"{step}: {loss:.3f}" for step, loss in picks))
    lines += ["", f"Rerun: `{command}`", ""]
    text = "\n".join(lines)
    (out / "demo.md").write_text(text)
    (out / "demo.json").write_text(
        json.dumps({"device": device, "command": command, "runs": runs}, indent=2) + "\n"
    )
    return text


# ------------------------------------------------------------------------------------------------ demo folder


MODEL_CARD = """# inspector's demo model

A small Phi-3.5-vision-architecture model ({parameters:,} parameters, bf16) trained from random weights by
`bench/train_demo.py` on **synthetic listing cards only** (`inspector.samples`: invented brands, titles, prices and
drawn products). It reads those cards: brand, title, category (from the drawn product), price, currency, per-size
prices and colour. It knows nothing about real product photos; use it to try inspector, not to inspect a catalogue.

- Command: `{command}`
- Trained on: {device}; torch {torch}, transformers {transformers}
- Steps: {steps} of batch {batch_size} ({samples:,} cards, each seen about once), seed {seed}, lr {lr:g} cosine,
  num_crops {num_crops}, precision {precision}{chunks}
- The question: the default `extract` prompt with the fields in `fields.toml` (colour); `inspector scan --model demo`
  asks it without flags.

Held-out accuracy ({heldout} cards it never saw, drawn with another seed; scan's parser and scorer):

| field | accuracy |
| --- | ---: |
{table}

Replace this folder in place when retraining (`bench/train_demo.py`, then copy OUT/demo_model here).
"""


HISTORY_FILE = "training_history.json"


def training_history(run: dict, device: dict, command: str) -> list[dict]:
    """The chunks that made this model, oldest first: the `--init` folder's history, then this run."""
    history = json.loads((Path(run["init"]) / HISTORY_FILE).read_text()) if run.get("init") else []
    config = run["config"]
    history.append(
        {
            "command": command,
            "device": device.get("gpu") or device.get("cpu"),
            "steps": run["steps"],
            "batch_size": config["batch_size"],
            "lr": config["lr"],
            "warmup_steps": config["warmup_steps"],
            "seed": run["seed"],
            "card_seed": run["card_seed"],
            "train_examples": run["train_examples"],
            "final": {key: value for key, value in run["final"].items() if key.startswith("eval_")},
        }
    )
    return history


def write_demo_folder(out: Path, run: dict, device: dict, command: str, tokenizer_dir: Path) -> Path:
    """real:0's final model as the shippable demo folder: bf16 weights, tokenizer, fields.toml, config, card."""
    import torch

    from inspector.models.phi3v.modeling_phi3_v import Phi3VForConditionalGeneration
    from inspector.models.phi3v.tiny import PROCESSOR_FILES

    folder = out / "demo_model"
    shutil.rmtree(folder, ignore_errors=True)
    model = Phi3VForConditionalGeneration.from_pretrained(run["final_dir"], dtype=torch.float32)
    model.to(torch.bfloat16).save_pretrained(folder)
    for name in PROCESSOR_FILES:
        source = Path(run["final_dir"]) / name
        if not source.is_file():
            source = tokenizer_dir / name
        if source.is_file():
            shutil.copyfile(source, folder / name)
    config = dict(run["config"])
    shutil.copyfile(config["fields_file"], folder / "fields.toml")
    # Paths of the training machine mean nothing beside the weights: the question (fields, prompt, crops) is kept.
    config.update(fields_file="fields.toml", truth="", val_truth=None, model="", output="", images=None)
    (folder / "train_config.json").write_text(json.dumps(config, indent=2) + "\n")
    table = "\n".join(f"| {field} | {_pct(run['final'], f'eval_{field}_accuracy')} |" for field in FIELDS)
    history = training_history(run, device, command)
    (folder / HISTORY_FILE).write_text(json.dumps(history, indent=2) + "\n")
    steps = sum(chunk["steps"] for chunk in history)
    samples = sum(chunk["steps"] * chunk["batch_size"] for chunk in history)
    chunks = (
        f"\n- Chunks: {len(history)}, each a warm restart from the one before with fresh cards ({HISTORY_FILE}: "
        "their commands and figures); the last one: `" + command + "`"
        if len(history) > 1
        else ""
    )
    (folder / "README.md").write_text(
        MODEL_CARD.format(
            parameters=run["parameters"],
            command=command,
            device=device.get("gpu") or device.get("cpu"),
            torch=device["torch"],
            transformers=device["transformers"],
            steps=steps,
            batch_size=config["batch_size"],
            samples=samples,
            chunks=chunks,
            seed=run["seed"],
            lr=config["lr"],
            num_crops=config["num_crops"],
            precision=run["precision"],
            heldout=run["heldout_examples"],
            table=table,
        )
    )
    return folder


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for data, runs, demo.json/.md and demo_model/")
    parser.add_argument(
        "--runs", default="real:0,real:1,control:0", help="KIND:SEED,... (kind: real|control)"
    )
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default 3000; --tiny 6)")
    parser.add_argument("--batch-size", type=int, help="default 32; --tiny 2")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine decay)")
    parser.add_argument("--warmup", type=int, help="warmup steps (default 300; --tiny 1)")
    parser.add_argument(
        "--n", type=int, help="training cards (default: steps x batch, each seen once; --tiny 24)"
    )
    parser.add_argument("--heldout", type=int, help="held-out cards (default 400; --tiny 4)")
    parser.add_argument("--eval-every", type=int, help="steps between held-out evaluations (default 1000)")
    parser.add_argument("--num-crops", type=int, default=4, help="Phi-3.5-vision crops per image")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--logging-steps", type=int, default=25)
    parser.add_argument("--workers", type=int, help="dataloader processes per run (default: CPUs / runs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated cards")
    parser.add_argument(
        "--tokenizer-dir", help="Phi-3.5-vision tokenizer files (default .carry/phi35v, ../shared/phi35v)"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="CPU smoke test: tiny model, a few cards and steps"
    )
    parser.add_argument(
        "--init",
        metavar="DIR",
        help="start from this demo folder (an earlier chunk's OUT/demo_model) instead of random weights; give "
        "another --seed for fresh cards",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run KIND:SEED in this process
    args = parser.parse_args(argv)

    tiny = args.tiny
    args.steps = args.steps or (6 if tiny else 3000)
    args.batch_size = args.batch_size or (2 if tiny else 32)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 300)
    args.heldout = args.heldout or (4 if tiny else 400)
    args.eval_every = args.eval_every or (3 if tiny else 1000)
    args.n = args.n or (24 if tiny else args.steps * args.batch_size)
    runs = [name.strip() for name in args.runs.split(",") if name.strip()]
    if args.workers is None:
        args.workers = 0 if tiny else max(1, (os.cpu_count() or 1) // len(runs) - 1)
    if tiny:
        args.num_crops, args.max_new_tokens = 1, 24
    if args.init and not (Path(args.init) / HISTORY_FILE).is_file():
        parser.error(f"--init {args.init}: no {HISTORY_FILE} there: not a demo folder this recipe wrote")
    tokenizer_dir = find_tokenizer_dir(args.tokenizer_dir)
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)

    import transformers  # noqa: F401  (before inspector's model modules)

    if args.one:
        if tiny:
            import torch

            torch.set_num_threads(1)
        run_one(args, args.one, out / "data", tokenizer_dir)
        return

    from phi3v_fullsize import device_facts

    started = time.perf_counter()
    prepare_data(out, args.n, args.heldout, args.seed, workers=os.cpu_count() or 1)
    print(f"data: {args.n} + {args.heldout} cards in {time.perf_counter() - started:.0f} s", flush=True)
    argv_rest = list(argv if argv is not None else sys.argv[1:])
    processes = {}
    for name in runs:
        log = (out / "runs" / f"{name.replace(':', '-')}.log").open("w")
        processes[name] = (
            subprocess.Popen(
                [sys.executable, __file__, *argv_rest, "--one", name], stdout=log, stderr=subprocess.STDOUT
            ),
            log,
        )
    failed = []
    for name, (process, log) in processes.items():
        if process.wait() != 0:
            failed.append(name)
        log.close()
    if failed:
        raise SystemExit(f"runs failed: {', '.join(failed)} (see {out / 'runs'}/*.log)")
    results = {
        name: json.loads((out / "runs" / f"{name.replace(':', '-')}.json").read_text()) for name in runs
    }
    device = device_facts()
    command = (
        "python bench/train_demo.py"
        + (" --tiny" if tiny else "")
        + f" --steps {args.steps}"
        + (f" --seed {args.seed}" if args.seed else "")
        + (" --init PREVIOUS/demo_model" if args.init else "")
        + " --out OUT"
    )
    print(write_report(out, results, device, command), flush=True)
    if "real:0" in results:
        folder = write_demo_folder(out, results["real:0"], device, command, tokenizer_dir)
        print(f"demo folder: {folder}", flush=True)


if __name__ == "__main__":
    main()
