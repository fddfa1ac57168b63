"""Full-size native Phi-3.5-vision with random weights on a GPU: build time, memory, batched == one-by-one.

Builds the model from the official config.json (no weights needed) directly on the GPU in bf16, loads the processor
from the checkpoint's tokenizer files, and runs greedy `generate()` on images of mixed shapes, once as one batch and
once image by image, comparing the tokens. Also the helpers the other bench scripts share (model building, matmul
peak, test images).

    python bench/phi3v_fullsize.py --files ../shared/phi35v --out out/fullsize      # on a GPU machine
    python bench/phi3v_fullsize.py --tiny --out /tmp/fullsize                       # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Where the checkpoint's config and tokenizer files are looked for when --files is not given.
DEFAULT_FILES = (REPO / ".carry" / "phi35v", REPO.parent / "shared" / "phi35v")


def find_files(given: str | None) -> Path:
    candidates = [Path(given)] if given else list(DEFAULT_FILES)
    for folder in candidates:
        if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
            return folder
    raise SystemExit(
        f"no Phi-3.5-vision config/tokenizer files in {', '.join(map(str, candidates))}; pass --files DIR "
        "(the official checkpoint folder's *.json files)"
    )


def device_facts() -> dict:
    import transformers

    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpus": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(
            gpu=props.name,
            gpus=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
        )
    return facts


def build_model(files: Path, *, tiny: bool, device: str, dtype: torch.dtype, seed: int = 0):
    """Random-weight Phi-3.5-vision from `files`/config.json (or the tiny test config), built in place on
    `device` in `dtype` (no 4B-parameter init on the CPU). Returns (model, seconds)."""
    import inspector  # noqa: F401  (registers phi3_v with the Auto classes)
    from inspector.models.phi3v import Phi3VConfig, Phi3VForConditionalGeneration
    from inspector.models.phi3v.tiny import tiny_phi3v_config

    started = time.perf_counter()
    config = tiny_phi3v_config() if tiny else Phi3VConfig.from_pretrained(files)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        model = Phi3VForConditionalGeneration._from_config(config, dtype=dtype)
    model.eval()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return model, time.perf_counter() - started


def load_processor(files: Path):
    from inspector.models.phi3v.processing_phi3_v import Phi3VProcessor

    return Phi3VProcessor.from_pretrained(files)


def matmul_peak_tflops(device: str, size: int = 8192, repeats: int = 20) -> float | None:
    """Median bf16 matmul rate on random data (the ceiling achieved rates are compared with)."""
    if not device.startswith("cuda"):
        return None
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    times.sort()
    return 2 * size**3 / times[len(times) // 2] / 1e12


def card_images(sizes: list[tuple[int, int]], seed: int = 0):
    """Generated listing cards (inspector.samples) resized to each (width, height)."""
    from inspector.samples import _card_rng as card_rng
    from inspector.samples import draw_card, make_products

    products = make_products(len(sizes), seed, formats=("jpg",))
    images = []
    for index, (product, size) in enumerate(zip(products, sizes, strict=True)):
        images.append(draw_card(product, card_rng(seed, index)).resize(size))
    return images


def memory_gib() -> dict:
    if not torch.cuda.is_available():
        return {}
    return {
        "allocated_gib": round(torch.cuda.memory_allocated() / 2**30, 2),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", help="folder with the checkpoint's config.json and tokenizer files")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")) / "fullsize")
    parser.add_argument("--tiny", action="store_true", help="tiny random config on the CPU (smoke test)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--dtypes", default="bf16", help="comma separated: bf16, fp32 (GPU; the CPU runs fp32)"
    )
    args = parser.parse_args(argv)

    files = find_files(args.files)
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    result: dict = {"device": device_facts(), "files": str(files)}
    sizes = [(800, 800), (1000, 500), (600, 900), (336, 336), (1600, 400)]
    images = card_images(sizes)
    prompt = "What product is this? Answer with brand, title and price."
    processor = load_processor(files)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    names = {"bf16": torch.bfloat16, "fp32": torch.float32}
    dtypes = [torch.float32] if args.tiny else [names[name] for name in args.dtypes.split(",")]
    for dtype in dtypes:
        name = str(dtype).removeprefix("torch.")
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        model, build_s = build_model(files, tiny=args.tiny, device=device, dtype=dtype)
        entry: dict = {
            "build_s": round(build_s, 2),
            "parameters": sum(p.numel() for p in model.parameters()),
            "attn_implementation": model.config._attn_implementation,
            "vision_attn_implementation": model.config.vision_config._attn_implementation,
            "after_build": memory_gib(),
        }
        settings = {
            "max_new_tokens": args.max_new_tokens,
            "min_new_tokens": args.max_new_tokens,
            "do_sample": False,
        }
        processor.tokenizer.padding_side = "left"
        batch = processor(text=[text] * len(images), images=[[im] for im in images], return_tensors="pt").to(
            device
        )
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
        entry["prompt_tokens"] = batch["attention_mask"].sum(-1).tolist()
        started = time.perf_counter()
        batched = model.generate(**batch, **settings)[:, batch["input_ids"].shape[1] :].cpu()
        if device == "cuda":
            torch.cuda.synchronize()
        entry["batched_generate_s"] = round(time.perf_counter() - started, 2)
        first_logits_batched = model(**batch, logits_to_keep=1).logits[:, -1].float().cpu()
        single, first_logits_single = [], []
        started = time.perf_counter()
        for image in images:
            one = processor(text=[text], images=[[image]], return_tensors="pt").to(device)
            one["pixel_values"] = one["pixel_values"].to(dtype)
            single.append(model.generate(**one, **settings)[0, one["input_ids"].shape[1] :].cpu())
            first_logits_single.append(model(**one, logits_to_keep=1).logits[0, -1].float().cpu())
        if device == "cuda":
            torch.cuda.synchronize()
        entry["single_generate_s"] = round(time.perf_counter() - started, 2)
        single_t = torch.stack(single)
        same = batched == single_t
        first_diff = [int((~row).nonzero()[0]) if (~row).any() else None for row in same]
        logits_single = torch.stack(first_logits_single)
        entry.update(
            identical_sequences=int(same.all(-1).sum()),
            sequences=len(images),
            identical_token_fraction=round(float(same.float().mean()), 4),
            first_divergence_step=first_diff,
            first_step_logits_max_abs_diff=float((first_logits_batched - logits_single).abs().max()),
            first_step_logits_rel_err=float(
                (first_logits_batched - logits_single).norm() / logits_single.norm().clamp_min(1e-12)
            ),
            first_step_argmax_equal=bool(
                torch.equal(first_logits_batched.argmax(-1), logits_single.argmax(-1))
            ),
            memory=memory_gib(),
        )
        result[name] = entry
        print(json.dumps({name: entry}, indent=1), flush=True)
        del model
    (args.out / "fullsize.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out / 'fullsize.json'}")


if __name__ == "__main__":
    main()
