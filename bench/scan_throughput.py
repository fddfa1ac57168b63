"""Scan throughput of full-size Phi-3.5-vision (random weights, bf16) on one GPU: the original loop vs `inspector scan`.

One process, one model, one card. Every answer is forced to exactly --max-new-tokens tokens (min = max), so random
weights cannot make any path stop early, except in the `stop` experiment (real stopping, see there).

Experiments (--run, comma separated; default all):
  peak      bf16 8192^3 matmul rate (the ceiling for % figures)
  original  the original-style loop: one image per processor call and per model.generate, greedy
  before    the scan with the flags of the code before issue 12 (no fused kernels, batch 64), 800x800 folder
  scan      `inspector scan`'s code path (Scanner + HFBackend + SQLite store) with DEFAULT flags (--fuse auto,
            --batch-size auto unless given) on the 800x800 folder and on the mixed-size folder
  fp8       --quantize fp8 on top of the default flags: its agreement with the bf16 answers on one batch
            (tokens, first-step logits; also default vs before), then the scan of the 800x800 folder
  sweep     the scan at each of --sweep batch sizes (800x800 folder)
  generate  the scan with transformers' generate() instead of the fast decoder (--generate-images images)
  noprep    the scan with preprocessing on the model's thread (no prepared inputs from the loader threads)
  parts     prefill alone with/without last-position-only logits, one decode step eager vs CUDA graph, a DB write
  stop      real stopping: a frequent token of the random model's output is made the end-of-turn token

Writes scan_throughput.json and scan_throughput.md into --out ($OUT on the device machine).

    python bench/scan_throughput.py --files .carry/phi35v --out $OUT              # GPU
    python bench/scan_throughput.py --tiny --images 8 --original 2 --out /tmp/st   # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from phi3v_fullsize import (  # noqa: E402
    build_model,
    device_facts,
    find_files,
    load_processor,
    matmul_peak_tflops,
)

ALL = ("peak", "original", "before", "scan", "fp8", "sweep", "generate", "noprep", "parts", "stop")


# ----------------------------------------------------------------------------------------------- FLOP counting


def flops_per_image(config, prompt_tokens: int, image_tokens: int, crops: int, new_tokens: int) -> float:
    """Matmul FLOPs (2 per multiply-add) for one image: CLIP over its real crops, projection, language-model prefill
    (last-position logits only) and `new_tokens` decode steps with attention over the growing context."""
    vision = config.vision_config
    d, ff = vision.hidden_size, vision.intermediate_size
    clip_layers = vision.num_hidden_layers + config.vision_feature_layer + 1
    patches = (vision.image_size // vision.patch_size) ** 2 + 1
    clip = crops * clip_layers * (2 * patches * (4 * d * d + 2 * d * ff) + 4 * patches * patches * d)
    projection = 2 * image_tokens * (4 * d * config.hidden_size + config.hidden_size * config.hidden_size)
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    heads_dim = config.num_attention_heads * (h // config.num_attention_heads)
    kv_dim = config.num_key_value_heads * (h // config.num_attention_heads)
    per_token = 2 * layers * (h * (heads_dim + 2 * kv_dim) + heads_dim * h + 3 * h * i)
    lm_head = 2 * h * config.vocab_size
    # causal attention: scores and weighted sum, 2 * 2 * L^2/2 * heads_dim per layer
    prefill = prompt_tokens * per_token + 2 * layers * prompt_tokens * prompt_tokens * heads_dim + lm_head
    decode = 0
    for step in range(1, new_tokens):
        context = prompt_tokens + step
        decode += per_token + 4 * layers * context * heads_dim + lm_head
    return clip + projection + prefill + decode


# ----------------------------------------------------------------------------------------------- images


def make_folders(root: Path, n: int, workers: int) -> dict[str, Path]:
    """`mixed`: generated listing cards in their own sizes (640x640, 800x600, 600x900, 1000x500);
    `sq800`: the same cards resized to 800x800."""
    from PIL import Image

    from inspector.samples import generate_dataset

    generate_dataset(root / "mixed", n, seed=0, workers=workers)
    square = root / "sq800" / "images"
    square.mkdir(parents=True, exist_ok=True)
    for path in sorted((root / "mixed" / "images").iterdir()):
        with Image.open(path) as image:
            image.convert("RGB").resize((800, 800), Image.Resampling.BILINEAR).save(
                square / path.name, quality=90
            )
    return {"mixed": root / "mixed" / "images", "sq800": square}


# ----------------------------------------------------------------------------------------------- experiments


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def image_geometry(processor, paths: list[Path], num_crops: int) -> dict[str, tuple[int, int]]:
    from PIL import Image

    geometry = {}
    for path in paths:
        with Image.open(path) as image:
            rows, cols = processor.crop_grid(image.width, image.height, num_crops)
        geometry[path.name] = (rows, cols)
    return geometry


def run_original(model, processor, paths: list[Path], prompt: str, args, config) -> dict:
    """One image per processor call and per generate(); the first image is a warm-up, not timed."""
    from PIL import Image

    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    dtype = next(model.parameters()).dtype
    times, prefill_times, tokens, flops = [], [], [], 0.0
    reset_peak()
    for index, path in enumerate(paths):
        started = time.perf_counter()
        image = Image.open(path).convert("RGB")
        inputs = processor(text=[text], images=[[image]], return_tensors="pt", num_crops=args.num_crops)
        inputs = inputs.to(model.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        output = model.generate(
            **inputs,
            max_new_tokens=args.max_new_tokens,
            min_new_tokens=args.max_new_tokens,
            do_sample=False,
            pad_token_id=processor.tokenizer.pad_token_id,
        )
        sync()
        elapsed = time.perf_counter() - started
        assert output.shape[1] - inputs["input_ids"].shape[1] == args.max_new_tokens
        started = time.perf_counter()
        model(**inputs, logits_to_keep=1)
        sync()
        prefill = time.perf_counter() - started
        if index == 0:
            continue  # warm-up
        times.append(elapsed)
        prefill_times.append(prefill)
        length = int(inputs["input_ids"].shape[1])
        tokens.append(length)
        rows, cols = (int(v) // 336 for v in inputs["image_sizes"][0])
        image_tokens = int((inputs["input_ids"] == config.image_token_id).sum())
        flops += flops_per_image(config, length, image_tokens, 1 + rows * cols, args.max_new_tokens)
    total = sum(times)
    return {
        "images": len(times),
        "seconds": round(total, 3),
        "images_per_s": round(len(times) / total, 3),
        "per_image_s_median": round(statistics.median(times), 3),
        "prefill_s_median": round(statistics.median(prefill_times), 4),
        "per_decode_step_ms": round(
            1000
            * (statistics.median(times) - statistics.median(prefill_times))
            / max(1, args.max_new_tokens - 1),
            2,
        ),
        "prompt_tokens_mean": round(statistics.mean(tokens), 1),
        "prefill_tokens_per_s": round(sum(tokens) / sum(prefill_times), 1),
        "achieved_tflops": round(flops / total / 1e12, 2),
        "peak_memory_gib": peak_gib(),
    }


def run_scan(
    backend,
    folder: Path,
    workdir: Path,
    name: str,
    args,
    config,
    processor,
    *,
    batch_size: int,
    limit: int | None,
    max_new_tokens: int,
    min_new_tokens: int,
    prepared: bool = True,
    warm: bool = True,
) -> dict:
    """Scanner + backend + SQLite store exactly as `inspector scan` runs them; a warm-up scan of one batch of other
    images first (graph capture, allocator), into its own database."""
    from inspector.backends import GenerationSettings
    from inspector.scan import ScanConfig, Scanner, auto_batch_size
    from inspector.store import open_store

    paths = sorted(folder.iterdir())[: limit or None]
    resolved = batch_size or auto_batch_size(
        backend, GenerationSettings(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens)
    )

    def scanner(db: Path, n: int | None, skip: int = 0) -> Scanner:
        config_ = ScanConfig(
            inputs=[str(folder)],
            model=backend.model_name,
            db=str(db),
            report=None,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            num_crops=args.num_crops,
            limit=n,
            workers=args.workers,
            run_name=f"{name}-{skip}",
        )
        scan = Scanner(config_, backend, open_store(config_.db))
        scan.prepares_items = scan.prepares_items and prepared
        return scan

    warm_seconds = None
    if warm:
        started = time.perf_counter()
        scanner(workdir / f"{name}-warm.db", 2 * resolved).run()  # compiles, captures (two batches: 2 shapes)
        warm_seconds = round(time.perf_counter() - started, 2)
    decoder = backend.fast_decoder
    if decoder is not None:
        decoder.reset_totals()
    reset_peak()
    scan = scanner(workdir / f"{name}.db", limit)
    summary = scan.run()
    geometry = image_geometry(processor, paths, args.num_crops)
    image_tokens = [processor.image_processor._tokens_for_grid(*grid) for grid in geometry.values()]
    result = {
        "images": summary.processed,
        "failed": summary.failed,
        "batch_size": scan.batch_size,
        "batch_size_setting": batch_size or "auto",
        "fuse": getattr(backend, "fusion", None),
        "quantize": getattr(backend, "quantization", None),
        "warm_up_scan_s": warm_seconds,
        "seconds": round(summary.elapsed_s, 3),
        "images_per_s": round(summary.processed / summary.elapsed_s, 3),
        "model_seconds": round(scan.model_seconds, 3),
        "input_wait_seconds": round(scan.input_wait_seconds, 3),
        "peak_memory_gib": peak_gib(),
        "grids": sorted({f"{r}x{c}" for r, c in geometry.values()}),
    }
    if decoder is not None and decoder.totals["batches"]:
        totals = dict(decoder.totals)
        prompt_extra = round((totals["prompt_tokens"] - sum(image_tokens)) / totals["sequences"])
        new_tokens_mean = totals["new_tokens"] / totals["sequences"]
        flops = sum(
            flops_per_image(config, t + prompt_extra, t, 1 + r * c, round(new_tokens_mean))
            for t, (r, c) in zip(image_tokens, geometry.values(), strict=True)
        )
        result.update(
            prefill_s=round(totals["prefill_s"], 3),
            decode_s=round(totals["decode_s"], 3),
            decode_step_ms=round(1000 * totals["decode_s"] / max(1, totals["steps"] - totals["batches"]), 2),
            prompt_tokens=totals["prompt_tokens"],
            prefill_tokens_per_s=round(totals["prompt_tokens"] / totals["prefill_s"], 1),
            new_tokens_mean=round(new_tokens_mean, 2),
            achieved_tflops=round(flops / summary.elapsed_s / 1e12, 2),
            prefill_tflops=round(
                sum(
                    flops_per_image(config, t + prompt_extra, t, 1 + r * c, 1)
                    for t, (r, c) in zip(image_tokens, geometry.values(), strict=True)
                )
                / totals["prefill_s"]
                / 1e12,
                2,
            ),
        )
    return result


def run_parts(model, backend, processor, paths: list[Path], workdir: Path, args) -> dict:
    """Pieces of one batch: prefill with all logits vs last-position logits; decode step eager vs CUDA graph;
    one SQLite batch write."""
    from PIL import Image

    from inspector.fastgen import GreedyDecoder

    backend.fast_decoder.release()
    images = [Image.open(p).convert("RGB") for p in paths[: args.fixed_batch]]
    items = [backend.prepare_item(image, "Describe the product.") for image in images]
    inputs = backend.collate(items)
    parts: dict = {}
    for keep in (0, 1):
        reset_peak()
        times = []
        for _ in range(3):
            sync()
            started = time.perf_counter()
            out = model(**inputs, logits_to_keep=keep)
            del out
            sync()
            times.append(time.perf_counter() - started)
        parts[f"prefill_logits_to_keep_{keep}"] = {"s": round(min(times), 4), "peak_memory_gib": peak_gib()}
    for graphs in (False, True):
        decoder = GreedyDecoder(model, cuda_graphs=graphs and torch.cuda.is_available())
        for _ in range(2):
            decoder.generate(
                inputs,
                max_new_tokens=args.max_new_tokens,
                min_new_tokens=args.max_new_tokens,
                stop_token_ids=backend.stop_token_ids,
                pad_token_id=backend.tokenizer.pad_token_id,
            )
        timing = decoder.last_timing
        parts[f"decode_step_ms_{'graph' if graphs else 'eager'}"] = round(
            1000 * timing["decode_s"] / (timing["steps"] - 1), 3
        )
        decoder.release()
    # generate() at the same batch: its per-step time
    sync()
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            **inputs,
            max_new_tokens=1,
            min_new_tokens=1,
            do_sample=False,
            pad_token_id=backend.tokenizer.pad_token_id,
        )
    sync()
    one = time.perf_counter() - started
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            **inputs,
            max_new_tokens=9,
            min_new_tokens=9,
            do_sample=False,
            pad_token_id=backend.tokenizer.pad_token_id,
        )
    sync()
    parts["generate_decode_step_ms"] = round(1000 * (time.perf_counter() - started - one) / 8, 2)
    # one database write of a batch (what the writer thread takes off the model's thread)
    from inspector.scan import ScanConfig, Scanner
    from inspector.store import open_store

    config = ScanConfig(
        inputs=[str(paths[0].parent)],
        model="bench",
        db=str(workdir / "parts.db"),
        report=None,
        batch_size=args.fixed_batch,
        limit=args.fixed_batch,
        max_new_tokens=4,
    )
    scanner = Scanner(config, backend, open_store(config.db))
    batches = []
    scanner.store.add_batch = lambda run_id, items: batches.append((run_id, items))  # capture, time below
    scanner.run()
    store = open_store(workdir / "parts2.db")
    from inspector.scan import start_run

    run_id = start_run(store, config, scanner.prompt, backend, args.fixed_batch)
    started = time.perf_counter()
    for _, items in batches:
        store.add_batch(run_id, items)
    parts["db_write_ms_per_batch"] = round(1000 * (time.perf_counter() - started) / max(1, len(batches)), 1)
    parts["batch_size"] = len(items)
    return parts


def answer_batch(backend, folder: Path, args) -> dict:
    """One batch (--agree-images cards of 800x800) through the backend's decoder: tokens and first-step logits."""
    from PIL import Image

    paths = sorted(folder.iterdir())[: args.agree_images]
    items = [backend.prepare_item(Image.open(p).convert("RGB"), "Describe the product.") for p in paths]
    inputs = backend.collate(items)
    tokens = backend.fast_decoder.generate(
        inputs,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.max_new_tokens,
        stop_token_ids=[],
        pad_token_id=backend.tokenizer.pad_token_id,
    )
    with torch.inference_mode():
        logits = backend.model(**inputs, logits_to_keep=1).logits[:, -1].float()
    return {"tokens": tokens, "logits": logits}


def agreement(got: dict, reference: dict) -> dict:
    """Token and first-step-logits agreement of two answer_batch() results on the same images."""
    same = got["tokens"] == reference["tokens"]
    error = (got["logits"] - reference["logits"]).abs()
    divergence = [int((~row).nonzero()[0]) for row in same if (~row).any()]
    return {
        "images": same.shape[0],
        "tokens_identical_pct": round(100 * same.float().mean().item(), 2),
        "answers_identical": int(same.all(dim=1).sum()),
        "first_divergence_step_median": statistics.median(divergence) if divergence else None,
        "first_token_identical_pct": round(100 * same[:, 0].float().mean().item(), 2),
        "logits_finite": bool(got["logits"].isfinite().all()),
        "first_step_logits_max_abs_err": round(error.max().item(), 4),
        "first_step_logits_rel_err": round((error.norm() / reference["logits"].norm()).item(), 5),
        "reference_logits_std": round(reference["logits"].std().item(), 4),
    }


def frequent_token(backend, folder: Path, args) -> tuple[int, list[int]]:
    """The token a random model emits most often in fixed-length answers (made the stop token for `stop`)."""
    from PIL import Image

    paths = sorted(folder.iterdir())[: args.fixed_batch]
    items = [backend.prepare_item(Image.open(p).convert("RGB"), "Describe the product.") for p in paths]
    tokens = backend.fast_decoder.generate(
        backend.collate(items),
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.max_new_tokens,
        stop_token_ids=[],
        pad_token_id=backend.tokenizer.pad_token_id,
    )
    counts = torch.bincount(tokens.flatten())
    best, best_spread = None, -1.0
    for token in counts.argsort(descending=True)[:20].tolist():
        lengths = [
            (row == token).nonzero()[0].item() + 1 if (row == token).any() else tokens.shape[1]
            for row in tokens
        ]
        spread = statistics.pstdev(lengths)
        if counts[token] > 0 and spread > best_spread:
            best, best_spread = (token, lengths), spread
    return best


# ----------------------------------------------------------------------------------------------- many GPUs


def _gpu_worker(files: str, index: int, count: int, config, warm_db: str, go, results, tiny: bool) -> None:
    """One process per GPU, as `inspector scan --gpus` runs them: its own model on its card, shard index/count of
    the images, the shared database and run. Builds and warms up before the common start (`go`)."""
    from dataclasses import replace

    from inspector.backends.hf import HFBackend
    from inspector.scan import Scanner
    from inspector.store import open_store

    device = "cpu" if tiny else f"cuda:{index}"
    if not tiny:
        torch.cuda.set_device(index)
    torch.set_grad_enabled(False)
    model, _ = build_model(
        Path(files), tiny=tiny, device=device, dtype=torch.float32 if tiny else torch.bfloat16
    )
    backend = HFBackend.from_loaded(
        model, load_processor(Path(files)), config.model, num_crops=config.num_crops
    )
    warm = replace(config, db=warm_db, limit=config.batch_size, shard=(0, 1), run_name=f"warm-{index}")
    Scanner(warm, backend, open_store(warm.db)).run()
    results.put(("ready", index, 0, 0, 0.0))
    go.wait()
    shard = replace(config, shard=(index, count), device=device)
    started = time.perf_counter()
    scanner = Scanner(shard, backend, open_store(shard.db))
    summary = scanner.run(finalize=False)
    elapsed = time.perf_counter() - started
    results.put(
        (
            "done",
            index,
            summary.processed,
            summary.failed,
            elapsed,
            scanner.model_seconds,
            scanner.input_wait_seconds,
        )
    )


def _next_message(results, processes) -> tuple:
    """The next message from the GPU processes; fails at once if one of them died."""
    import queue

    while True:
        try:
            return results.get(timeout=2)
        except queue.Empty:
            dead = [p.name for p in processes if not p.is_alive() and p.exitcode not in (0, None)]
            if dead:
                raise RuntimeError(f"GPU worker(s) {dead} died; see their traceback above") from None


def run_multi_gpu(files: Path, folder: Path, workdir: Path, args, counts: list[int]) -> dict:
    """The same scan on 1 GPU and on N GPUs (one process each, one run, one SQLite file): images/s and scaling."""
    import multiprocessing as mp
    import sqlite3

    from inspector.prompts import get_prompt
    from inspector.scan import ScanConfig, start_run
    from inspector.store import open_store

    out: dict = {}
    context = mp.get_context("spawn")
    for count in counts:
        config = ScanConfig(
            inputs=[str(folder)],
            model="phi35v-random-bf16",
            db=str(workdir / f"gpus{count}.db"),
            report=None,
            batch_size=args.fixed_batch,
            max_new_tokens=args.max_new_tokens,
            min_new_tokens=args.max_new_tokens,
            num_crops=args.num_crops,
            limit=args.images * count,
            workers=args.workers,
        )
        store = open_store(config.db)
        run_id = start_run(store, config, get_prompt(None, None, None), None, config.batch_size)
        go = context.Event()
        results = context.Queue()
        processes = [
            context.Process(
                target=_gpu_worker,
                args=(
                    str(files),
                    i,
                    count,
                    config,
                    str(workdir / f"warm{count}-{i}.db"),
                    go,
                    results,
                    args.tiny,
                ),
            )
            for i in range(count)
        ]
        for process in processes:
            process.start()
        ready = [_next_message(results, processes) for _ in processes]
        assert all(message[0] == "ready" for message in ready), ready
        go.set()
        started = time.perf_counter()
        shards = [_next_message(results, processes)[1:] for _ in processes]
        elapsed = time.perf_counter() - started
        for process in processes:
            process.join()
        with sqlite3.connect(config.db) as connection:
            rows, distinct = connection.execute(
                "select count(*), count(distinct image_id) from predictions where run_id = ?", (run_id,)
            ).fetchone()
        processed = sum(shard[1] for shard in shards)
        out[f"gpus_{count}"] = {
            "gpus": count,
            "images": processed,
            "failed": sum(shard[2] for shard in shards),
            "seconds": round(elapsed, 3),
            "images_per_s": round(processed / elapsed, 3),
            "per_shard_s": [round(shard[3], 3) for shard in sorted(shards)],
            "per_shard_model_s": [round(shard[4], 3) for shard in sorted(shards)],
            "per_shard_input_wait_s": [round(shard[5], 3) for shard in sorted(shards)],
            "stored_predictions": rows,
            "distinct_images": distinct,
        }
        print(json.dumps(out[f"gpus_{count}"]), flush=True)
    if len(counts) > 1:
        base = out[f"gpus_{counts[0]}"]["images_per_s"]
        for count in counts[1:]:
            out[f"gpus_{count}"]["scaling"] = round(out[f"gpus_{count}"]["images_per_s"] / base, 3)
    return out


# ----------------------------------------------------------------------------------------------- report


def markdown(result: dict) -> str:
    lines = [
        f"Card: {result['device'].get('gpu', 'cpu')}; bf16 matmul peak measured: "
        f"{result.get('peak_tflops')} TFLOP/s; {result['args']['max_new_tokens']} new tokens per image.",
        "",
    ]
    lines.append(
        "| path | images | batch | images/s | prefill tok/s | TFLOP/s | % of peak | peak GiB | speed-up |"
    )
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = result.get("original", {}).get("images_per_s")
    peak = result.get("peak_tflops")
    for key, row in result.items():
        if not isinstance(row, dict) or "images_per_s" not in row:
            continue
        tflops = row.get("achieved_tflops")
        pct = round(100 * tflops / peak, 1) if tflops and peak else ""
        speed = round(row["images_per_s"] / base, 1) if base else ""
        lines.append(
            f"| {key} | {row.get('images')} | {row.get('batch_size', 1)} | {row['images_per_s']} | "
            f"{row.get('prefill_tokens_per_s', '')} | {tflops or ''} | {pct} | {row.get('peak_memory_gib')} | {speed} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", help="folder with the checkpoint's config.json and tokenizer files")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    parser.add_argument("--tiny", action="store_true", help="tiny random model on the CPU (smoke test)")
    parser.add_argument("--run", default=",".join(ALL), help=f"experiments, comma separated: {','.join(ALL)}")
    parser.add_argument("--images", type=int, default=512, help="images per timed scan")
    parser.add_argument(
        "--original", type=int, default=5, help="images for the original loop (first is warm-up)"
    )
    parser.add_argument("--batch-size", type=int, default=0, help="images per batch; 0 = auto (the default)")
    parser.add_argument("--fuse", default="auto", help="the scan's --fuse (default: auto, as inspector scan)")
    parser.add_argument("--agree-images", type=int, default=64, help="images in the fp8 agreement batch")
    parser.add_argument("--sweep", default="16,32,96")
    parser.add_argument("--generate-images", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--num-crops", type=int, default=4)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument(
        "--gpus",
        type=int,
        default=0,
        help="instead of the experiments: the scan on 1 and on N GPUs (scaling)",
    )
    args = parser.parse_args(argv)
    args.fixed_batch = args.batch_size or 64  # experiments that need one fixed batch size
    wanted = set(args.run.split(","))
    unknown = wanted - set(ALL)
    if unknown:
        raise SystemExit(f"unknown experiments {sorted(unknown)}; choose from {ALL}")

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_grad_enabled(False)
    files = find_files(args.files)
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"device": device_facts(), "args": vars(args) | {"out": str(args.out)}}
    log = lambda text: print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)  # noqa: E731

    def save() -> None:
        (args.out / "scan_throughput.json").write_text(json.dumps(result, indent=1, default=str))
        (args.out / "scan_throughput.md").write_text(markdown(result))

    if args.gpus:
        workdir = Path(tempfile.mkdtemp(prefix="scan-bench-"))
        folders = make_folders(workdir / "data", args.images * args.gpus, workers=os.cpu_count() or 1)
        result["multi_gpu"] = run_multi_gpu(files, folders["sq800"], workdir, args, [1, args.gpus])
        (args.out / "multi_gpu.json").write_text(json.dumps(result, indent=1, default=str))
        return

    if "peak" in wanted:
        peak = matmul_peak_tflops(device)
        result["peak_tflops"] = round(peak, 1) if peak else None
        log(f"matmul peak {result['peak_tflops']} TFLOP/s")

    from inspector.backends.hf import HFBackend

    model, build_s = build_model(files, tiny=args.tiny, device=device, dtype=dtype)
    processor = load_processor(files)
    config = model.config
    result["build_s"] = round(build_s, 2)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    log(f"model built in {build_s:.1f} s, {result['parameters'] / 1e9:.2f} B parameters")
    # The paths before issue 12 first (eager modules), then the default backend (which fuses the model in place).
    before = HFBackend.from_loaded(model, processor, "phi35v-random-bf16", num_crops=args.num_crops, fuse="none")
    assert before.fast_decoder is not None
    backend = before

    workdir = Path(tempfile.mkdtemp(prefix="scan-bench-"))
    n_images = max(args.images, 256, args.generate_images) + 128
    started = time.perf_counter()
    folders = make_folders(workdir / "data", n_images, workers=os.cpu_count() or 1)
    log(f"{n_images} cards generated in {time.perf_counter() - started:.1f} s")
    prompt_name = None
    from inspector.prompts import get_prompt

    prompt = get_prompt(prompt_name, None, None).text
    fixed = {"max_new_tokens": args.max_new_tokens, "min_new_tokens": args.max_new_tokens}

    def scan(name: str, folder: str, **kw) -> None:
        kw.setdefault("batch_size", args.batch_size)
        kw.setdefault("limit", args.images)
        for key, value in fixed.items():
            kw.setdefault(key, value)
        log(f"{name} ...")
        try:
            result[name] = run_scan(backend, folders[folder], workdir, name, args, config, processor, **kw)
        except Exception as error:  # keep the other numbers
            result[name] = {"error": f"{type(error).__name__}: {error}"}
        log(f"{name}: {json.dumps(result[name])}")
        save()

    if "original" in wanted:
        log("original loop ...")
        paths = sorted(folders["sq800"].iterdir())[: args.original]
        result["original"] = run_original(model, processor, paths, prompt, args, config)
        log(f"original: {json.dumps(result['original'])}")
        save()
    reference: dict = {}
    if "before" in wanted:
        scan("before_800", "sq800", batch_size=64)
    if "fp8" in wanted:
        reference["before"] = answer_batch(before, folders["sq800"], args)
    before.fast_decoder.release()
    started = time.perf_counter()
    backend = HFBackend.from_loaded(
        model, processor, "phi35v-random-bf16", num_crops=args.num_crops, fuse=args.fuse
    )
    result["default_backend"] = {"fuse": backend.fusion, "setup_s": round(time.perf_counter() - started, 2)}
    if "scan" in wanted:
        scan("scan_800", "sq800")
        scan("scan_mixed", "mixed")
    if "fp8" in wanted:
        log("fp8 ...")
        try:
            reference["default"] = answer_batch(backend, folders["sq800"], args)
            result["agreement_default_vs_before"] = agreement(reference["default"], reference["before"])
            backend.fast_decoder.release()
            backend = HFBackend.from_loaded(
                model, processor, "phi35v-random-fp8", num_crops=args.num_crops, fuse=args.fuse, quantize="fp8"
            )
            fp8 = answer_batch(backend, folders["sq800"], args)
            result["agreement_fp8_vs_default"] = agreement(fp8, reference["default"])
            result["agreement_fp8_vs_before"] = agreement(fp8, reference["before"])
        except Exception as error:
            result["agreement_fp8_vs_default"] = {"error": f"{type(error).__name__}: {error}"}
        log(f"agreement: {json.dumps({k: v for k, v in result.items() if k.startswith('agreement')})}")
        save()
        if backend.quantization == "fp8":
            scan("scan_800_fp8", "sq800")
    if "noprep" in wanted:
        scan("scan_800_noprep", "sq800", prepared=False, limit=min(args.images, 256))
    if "sweep" in wanted:
        for size in [int(s) for s in args.sweep.split(",") if s]:
            scan(f"scan_800_b{size}", "sq800", batch_size=size, limit=min(args.images, max(4 * size, 256)))
    if "generate" in wanted:
        backend.fast_decoder.release()
        backend.fast_decoder, fast = None, backend.fast_decoder
        scan("scan_800_generate", "sq800", limit=args.generate_images)
        backend.fast_decoder = fast
    if "parts" in wanted:
        log("parts ...")
        try:
            result["parts"] = run_parts(
                model, backend, processor, sorted(folders["sq800"].iterdir()), workdir, args
            )
        except Exception as error:
            result["parts"] = {"error": f"{type(error).__name__}: {error}"}
        log(f"parts: {json.dumps(result['parts'])}")
        save()
    if "stop" in wanted:
        token, lengths = frequent_token(backend, folders["sq800"], args)
        result["stop_rule"] = {
            "token": token,
            "text": processor.tokenizer.decode([token]),
            "answer_lengths_in_calibration": lengths,
        }
        backend.stop_token_ids = [token]
        scan("scan_800_stop", "sq800", max_new_tokens=args.max_new_tokens, min_new_tokens=0)
        scan("scan_mixed_stop", "mixed", max_new_tokens=args.max_new_tokens, min_new_tokens=0)
    save()
    print(markdown(result))


if __name__ == "__main__":
    main()
