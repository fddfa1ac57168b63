"""Scan speed levers on one batch of full-size Phi-3.5-vision (random weights): each lever's prefill and decode time
and its agreement with the plain bf16 path, on one GPU.

One model, one batch of --batch-size 800x800 cards (2x2 crop grid), every answer forced to --max-new-tokens.
Levers (--run, comma separated; default all), each timed as `GreedyDecoder.generate` (prefill + decode loop, the
scan's model work) after a warm-up call that compiles and captures:

  eager        the current path (bf16, CUDA-graph decode step of eager kernels): the baseline
  decode       + the decode step's layers through torch.compile (inside the same CUDA graph)
  prefill      + the prefill's RMSNorms, MLPs and CLIP encoder layers compiled in place (`speedups.fuse`)
  both         decode + prefill
  batch        both, at each --batch-sizes
  fp8          both + torchao float8 linear layers (a fresh model, same seed; opt-in `--quantize fp8`)
  liger        liger-kernel's Phi-3 kernels for the prefill (fresh model, same seed), decode compiled

Agreement with `eager` on the same batch: identical tokens (%), identical answers, first-step logits error.
Random weights make logits nearly flat, so agreement figures here are a pessimistic bound.

    python bench/speed_levers.py --files .carry/phi35v --out $OUT                     # GPU
    python bench/speed_levers.py --tiny --batch-size 2 --max-new-tokens 4 --out /tmp/sl   # CPU smoke test
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from phi3v_fullsize import build_model, device_facts, find_files, load_processor  # noqa: E402

ALL = ("eager", "decode", "prefill", "both", "batch", "fp8", "liger")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def make_inputs(backend, folder: Path, count: int, size: int):
    from PIL import Image

    paths = sorted(folder.iterdir())[:count]
    items = []
    for path in paths:
        with Image.open(path) as image:
            card = image.convert("RGB").resize((size, size))
        items.append(backend.prepare_item(card, "Describe the product."))
    return backend.collate(items)


def timed_generate(decoder, inputs, args, repeats: int) -> dict:
    """First call (compile, capture) timed alone; then the best of `repeats` calls."""
    kwargs = dict(
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.max_new_tokens,
        stop_token_ids=[],
        pad_token_id=0,
    )
    sync()
    started = time.perf_counter()
    tokens = decoder.generate(inputs, **kwargs)
    sync()
    first = time.perf_counter() - started
    prefill, decode = [], []
    for _ in range(repeats):
        tokens = decoder.generate(inputs, **kwargs)
        prefill.append(decoder.last_timing["prefill_s"])
        decode.append(decoder.last_timing["decode_s"])
    batch = inputs["input_ids"].shape[0]
    steps = decoder.last_timing["steps"]
    best_prefill, best_decode = min(prefill), min(decode)
    return {
        "batch": batch,
        "first_call_s": round(first, 2),
        "prefill_s": round(best_prefill, 4),
        "prefill_ms_per_image": round(1000 * best_prefill / batch, 2),
        "decode_step_ms": round(1000 * best_decode / max(1, steps - 1), 3),
        "decode_ms_per_image": round(1000 * best_decode / batch, 2),
        "model_ms_per_image": round(1000 * (best_prefill + best_decode) / batch, 2),
        "images_per_s_model_only": round(batch / (best_prefill + best_decode), 1),
        "compile_error": getattr(decoder, "compile_error", None),
        "_tokens": tokens,
    }


def first_logits(model, inputs) -> torch.Tensor:
    with torch.inference_mode():
        return model(**inputs, logits_to_keep=1).logits[:, -1].float()


def agreement(tokens, logits, ref_tokens, ref_logits) -> dict:
    same = tokens == ref_tokens
    first_diff = [
        int((~row).nonzero()[0]) if (~row).any() else None for row in same
    ]  # first step where a row's answer differs
    error = (logits - ref_logits).abs()
    return {
        "tokens_identical_pct": round(100 * same.float().mean().item(), 2),
        "answers_identical": f"{int(same.all(dim=1).sum())}/{same.shape[0]}",
        "first_divergence_median": sorted(d for d in first_diff if d is not None)[len(first_diff) // 2]
        if any(d is not None for d in first_diff)
        else None,
        "first_step_argmax_agree_pct": round(
            100 * (logits.argmax(-1) == ref_logits.argmax(-1)).float().mean().item(), 2
        ),
        "first_step_logits_max_abs_err": round(error.max().item(), 4),
        "first_step_logits_rel_err": round((error.norm() / ref_logits.norm()).item(), 5),
    }


def vision_ms(model, inputs, repeats: int = 3) -> float:
    """Milliseconds per batch in the vision tower + projection alone."""
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            sync()
            started = time.perf_counter()
            model.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
            sync()
            times.append(time.perf_counter() - started)
    return round(1000 * min(times[1:]), 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--run", default=",".join(ALL))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batch-sizes", default="96,128")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    wanted = set(args.run.split(","))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_grad_enabled(False)

    from inspector.backends.hf import HFBackend
    from inspector.fastgen import GreedyDecoder
    from inspector.samples import generate_dataset
    from inspector.speedups import fuse, quantize, unfuse_compiled

    files = find_files(args.files)
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    size = 800 if not args.tiny else 336
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"device": device_facts(), "args": vars(args) | {"out": str(args.out)}, "levers": {}}
    log = lambda text: print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)  # noqa: E731

    def save() -> None:
        (args.out / "speed_levers.json").write_text(json.dumps(result, indent=1, default=str))

    largest = max([args.batch_size, *[int(b) for b in args.batch_sizes.split(",") if b]])
    workdir = Path(tempfile.mkdtemp(prefix="levers-"))
    generate_dataset(workdir, largest, seed=0, workers=os.cpu_count() or 1)
    folder = workdir / "images"

    model, _ = build_model(files, tiny=args.tiny, device=device, dtype=dtype)
    processor = load_processor(files)
    backend = HFBackend.from_loaded(model, processor, "levers", num_crops=4, fast_decode=False)
    inputs = make_inputs(backend, folder, args.batch_size, size)
    log(f"batch of {args.batch_size}: {tuple(inputs['input_ids'].shape)} tokens")
    reference: dict = {}

    def record(name: str, decoder, the_model, the_inputs=inputs, compare: bool = True) -> None:
        log(f"{name} ...")
        try:
            row = timed_generate(decoder, the_inputs, args, args.repeats)
            tokens = row.pop("_tokens")
            logits = first_logits(the_model, the_inputs)
            if name == "eager":
                reference.update(tokens=tokens, logits=logits)
            elif compare and reference:
                row["agreement_with_eager"] = agreement(tokens, logits, reference["tokens"], reference["logits"])
            row["vision_ms_per_batch"] = vision_ms(the_model, the_inputs)
            if torch.cuda.is_available():
                row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        except Exception as error:  # keep the other levers' numbers
            row = {"error": f"{type(error).__name__}: {str(error)[:500]}"}
        result["levers"][name] = row
        log(f"{name}: {json.dumps(row)}")
        save()
        decoder.release()

    if "eager" in wanted or not reference:
        record("eager", GreedyDecoder(model), model)
    if "decode" in wanted:
        record("decode", GreedyDecoder(model, compile=True), model)
    if wanted & {"prefill", "both", "batch"}:
        started = time.perf_counter()
        fuse(model, "compile")
        if "prefill" in wanted:
            record("prefill", GreedyDecoder(model), model)
        record("both", GreedyDecoder(model, compile=True), model)
        if "batch" in wanted:
            for size_ in [int(b) for b in args.batch_sizes.split(",") if b]:
                bigger = make_inputs(backend, folder, size_, size)
                record(f"both_b{size_}", GreedyDecoder(model, compile=True), model, bigger, compare=False)
                del bigger
        result["compile_wall_s_incl_runs"] = round(time.perf_counter() - started, 1)
        unfuse_compiled(model)
    for name in ("fp8", "liger"):
        if name not in wanted:
            continue
        del model
        backend.model = None
        gc.collect()
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
        model, _ = build_model(files, tiny=args.tiny, device=device, dtype=dtype)
        try:
            if name == "fp8":
                result["fp8_layers"] = quantize(model, "fp8")
                fuse(model, "compile")
            else:
                fuse(model, "liger")
        except Exception as error:
            result["levers"][name] = {"error": f"{type(error).__name__}: {str(error)[:500]}"}
            log(f"{name}: {result['levers'][name]}")
            save()
            continue
        record(name, GreedyDecoder(model, compile=True), model)
    save()
    print(json.dumps({k: {kk: vv for kk, vv in v.items()} for k, v in result["levers"].items()}, indent=1))


if __name__ == "__main__":
    main()
