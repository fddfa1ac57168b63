"""Training throughput of full-size Phi-3.5-vision (random weights) on one GPU: full fine-tuning and LoRA.

The model is built from the official config.json directly on the GPU; the data are synthetic listing cards resized
to 800x800 (a 2x2 crop grid at num_crops 4: 757 image tokens) with their JSON answers (~60 tokens). Training runs
through `inspector.training` exactly as `inspector train` does (TrainingCollator, Trainer subclass, AdamW fused,
bf16 autocast, gradient checkpointing), minus checkpoint writing. A few warm-up steps, then timed steps:
samples/s = timed steps x batch x grad_accum / their wall time; peak GPU memory over the whole run.

Precision "auto" (the default, as `inspector train` picks it): full fine-tuning keeps fp32 master weights (mixed)
only when fp32 weights + grads + AdamW states fit in 75% of the card, otherwise bf16 weights and bf16 AdamW states
(4.15 B parameters: ~66 GB in fp32 mixed vs ~33 GB in bf16, so bf16 on an 80 GB H100); LoRA keeps the frozen base
in bf16 and the adapters in fp32. Pass --precision to force one.

    python bench/train_throughput.py --files .carry/phi35v --out $OUT                       # GPU
    python bench/train_throughput.py --tiny --steps 2 --warmup 1 --batch-size 2 --out /tmp/tt  # CPU smoke test

Prints one JSON line per method and writes train_throughput.json into --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from phi3v_fullsize import build_model, device_facts, find_files, load_processor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class StepClock:
    """A `TrainProgress` that records when each optimizer step ended."""

    def __init__(self) -> None:
        self.times: dict[int, float] = {}
        self.losses: dict[int, float] = {}

    def start(self, total_steps: int, first_step: int) -> None:
        pass

    def advance(self, step: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times[step] = time.perf_counter()

    def log(self, step: int, figures: dict) -> None:
        if "loss" in figures:
            self.losses[step] = figures["loss"]

    def message(self, text: str) -> None:
        pass


def make_cards(folder: Path, n: int, size: tuple[int, int], workers: int) -> Path:
    """n synthetic cards resized to `size`, with truth.csv; returns the CSV path."""
    from PIL import Image

    from inspector.samples import generate_dataset

    csv_path = generate_dataset(folder, n, seed=0, workers=workers)
    for path in (folder / "images").iterdir():
        with Image.open(path) as image:
            resized = image.convert("RGB").resize(size)
        resized.save(path, quality=90)
    return csv_path


def measure(method: str, args, files: Path, csv_path: Path, output: Path) -> dict:
    from inspector.training import TrainConfig
    from inspector.training.data import load_training_data
    from inspector.training.methods import count_parameters, resolve_precision
    from inspector.training.trainer import apply_method, build_trainer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = TrainConfig(
        truth=str(csv_path),
        model=str(files),
        output=str(output / method),
        val_fraction=0,
        method=method,
        max_steps=args.warmup + args.steps,
        lr=2e-4 if method == "lora" else 1e-5,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        num_crops=args.num_crops,
        precision=args.precision,
        gradient_checkpointing=not args.no_gradient_checkpointing,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        eval_samples=0,
        best_metric="loss",
        workers=args.workers,
        logging_steps=1 if args.log_losses else 10**6,
    )
    config.validate()
    data = load_training_data(config, workers=args.workers)
    processor = load_processor(files)

    # The parameter count decides "auto" precision; count on the meta device (no memory).
    meta, _ = build_model(files, tiny=args.tiny, device="meta", dtype=torch.bfloat16)
    total = sum(p.numel() for p in meta.parameters())
    vision = sum(p.numel() for n, p in meta.named_parameters() if n.startswith("model.vision_embed_tokens."))
    del meta
    trainable = total - vision if method == "frozen-vision" else total
    dtype_name, bf16 = resolve_precision(config.precision, method, total, trainable)
    precision = {("bfloat16", True): "bf16", ("float32", True): "mixed"}.get((dtype_name, bf16), "fp32")

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, build_seconds = build_model(files, tiny=args.tiny, device=device, dtype=getattr(torch, dtype_name))
    model.config._attn_implementation = args.attn
    if args.full_logits:
        model.loss_on_labelled_positions_only = False  # the path before: (batch, length, vocab) fp32 logits
    from inspector.speedups import fuse, resolve_fusion

    fused = fuse(model, resolve_fusion(args.fuse, device))
    model = apply_method(model, config)
    parameters, trainable_parameters = count_parameters(model)
    clock = StepClock()
    trainer = build_trainer(config, data, model, processor, bf16=bf16, progress=clock, save=False)
    collator = trainer.data_collator
    sample = collator([trainer.train_dataset[i] for i in range(min(8, len(trainer.train_dataset)))])
    tokens = sample["attention_mask"].sum(dim=1).float().mean().item()
    answer_tokens = (sample["labels"] != -100).sum(dim=1).float().mean().item()

    started = time.perf_counter()
    with torch.enable_grad():
        trainer.train()
    total_seconds = time.perf_counter() - started
    first, last = args.warmup, args.warmup + args.steps
    timed = clock.times[last] - clock.times[first]
    samples = args.steps * args.batch_size * args.grad_accum
    result = {
        "method": method,
        "precision": precision,
        "optimizer": trainer.args.optim,
        "gradient_checkpointing": config.gradient_checkpointing,
        "attn_implementation": args.attn,
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "num_crops": args.num_crops,
        "image_size": list(args.image_size),
        "tokens_per_sample": round(tokens, 1),
        "answer_tokens_per_sample": round(answer_tokens, 1),
        "parameters": parameters,
        "trainable_parameters": trainable_parameters,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "samples_per_second": round(samples / timed, 3),
        "seconds_per_step": round(timed / args.steps, 4),
        "build_seconds": round(build_seconds, 2),
        "run_seconds": round(total_seconds, 2),
        "final_loss": trainer.state.log_history[-1].get("train_loss"),
        "fuse": resolve_fusion(args.fuse, device),
        "fused_modules": len(fused),
        "logits": "full" if args.full_logits else "labelled positions",
    }
    if args.log_losses:
        result["losses"] = [round(clock.losses[step], 5) for step in sorted(clock.losses)]
    if device == "cuda":
        result["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", "--config", "--tokenizer-dir", dest="files",
                        help="folder with the checkpoint's config.json and tokenizer files")  # fmt: skip
    parser.add_argument("--out", required=True, help="folder for train_throughput.json")
    parser.add_argument("--methods", default="full,lora", help="comma-separated: full, lora, frozen-vision")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing starts")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--num-crops", type=int, default=4)
    parser.add_argument("--image-size", type=int, nargs=2, default=(800, 800), metavar=("W", "H"))
    parser.add_argument(
        "--images", type=int, default=0, help="cards to generate (default: enough for the run)"
    )
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "mixed", "fp32"))
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--attn", default="sdpa", help="attention implementation: sdpa or eager")
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument("--workers", type=int, default=8, help="dataloader processes")
    parser.add_argument("--tiny", action="store_true", help="tiny random config (CPU smoke test)")
    parser.add_argument(
        "--fuse", default="auto", choices=("auto", "none", "compile", "liger"), help="as inspector train --fuse"
    )
    parser.add_argument("--full-logits", action="store_true", help="loss from full logits (the path before)")
    parser.add_argument("--log-losses", action="store_true", help="record the loss of every step")
    args = parser.parse_args(argv)

    files = find_files(args.files)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if len(methods) > 1:
        # One process per method: the first run's model, optimizer and allocator cache must not weigh on the next.
        results = {"device": device_facts(), "results": []}
        for method in methods:
            child = [
                sys.executable,
                __file__,
                *(argv if argv is not None else sys.argv[1:]),
                "--methods",
                method,
            ]
            child += ["--out", str(out / f"child-{method}")]
            completed = subprocess.run(child, check=False)
            path = out / f"child-{method}" / "train_throughput.json"
            if completed.returncode == 0 and path.is_file():
                results["results"] += json.loads(path.read_text())["results"]
            else:
                results["results"].append({"method": method, "error": f"exit status {completed.returncode}"})
            shutil.rmtree(out / f"child-{method}", ignore_errors=True)
        (out / "train_throughput.json").write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["results"]), flush=True)
        return

    n_images = args.images or max(16, (args.warmup + args.steps) * args.batch_size * args.grad_accum)
    results = {"device": device_facts(), "results": []}
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as scratch:
        scratch = Path(scratch)
        csv_path = make_cards(scratch / "cards", n_images, tuple(args.image_size), max(1, args.workers))
        method = methods[0]
        try:
            result = measure(method, args, files, csv_path, scratch / "runs")
        except torch.OutOfMemoryError as error:
            result = {"method": method, "error": f"out of memory: {str(error).splitlines()[0]}"}
        print(json.dumps(result), flush=True)
        results["results"].append(result)
    (out / "train_throughput.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
