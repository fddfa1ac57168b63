"""Produce the golden Phi-3.5-vision reference outputs that `tests/test_phi3v_golden.py` compares against.

Runs the ORIGINAL remote code of microsoft/Phi-3.5-vision-instruct (never committed here) under its own
environment (transformers 4.46, torchvision), on a tiny seeded model in the checkpoint's exact format:

    /work/refenv/bin/python tests/golden/phi3v/make_golden.py --reference-dir /work/refcode

See README.md in this folder for the environment, the sources of the reference files and what is written.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.abc
import importlib.util
import json
import math
import platform
import sys
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_SHARED = HERE.parents[3] / "shared" / "phi35v"
SEED = 20240917
REFERENCE_FILES = ("configuration_phi3_v.py", "modeling_phi3_v.py", "processing_phi3_v.py")
#: The reference's image embedding asserts the full CLIP ViT-L width (`C == 1024`) when merging patches; a tiny
#: tower cannot pass it, so this module is compiled with asserts stripped (as `python -O` would). Nothing else
#: changes: the asserts only validate shapes.
STRIP_ASSERTS = {"modeling_phi3_v.py"}

TEXT_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 32064,
    "original_max_position_embeddings": 4096,
}
VISION_CONFIG = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 32,
    "hidden_act": "quick_gelu",
}
#: (width, height, question): a 2x2, a tall 2x1 and a wide 1x3 crop grid with num_crops=4, each padded with white
#: (odd paddings on the last two, so the top/bottom split rounding matters).
IMAGES = (
    (640, 560, "What is shown in this image?"),
    (433, 877, "Which brand is printed on this product?"),
    (1100, 290, "What does the label say?"),
)
#: Parameters drawn at unit scale: token/position embeddings and the learnable separators.
UNIT_SCALE = ("embed_tokens.weight", "position_embedding.weight", "class_embedding", "glb_GN", "sub_GN")
#: Std of projection weights is PROJECTION_GAIN / sqrt(fan_in).
PROJECTION_GAIN = 0.5
PROMPT = "<|user|>\n<|image_1|>\n{question}<|end|>\n<|assistant|>\n"


class _ReferenceLoader(importlib.abc.Loader):
    """Executes one reference file as a submodule of a synthetic package (so its relative imports resolve)."""

    def __init__(self, path: Path, strip_asserts: bool) -> None:
        self.path = path
        self.optimize = 1 if strip_asserts else 0

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        code = compile(
            self.path.read_text(), str(self.path), "exec", dont_inherit=True, optimize=self.optimize
        )
        exec(code, module.__dict__)


def load_reference(reference_dir: Path) -> dict[str, types.ModuleType]:
    missing = [name for name in REFERENCE_FILES if not (reference_dir / name).is_file()]
    if missing:
        raise SystemExit(f"{reference_dir} lacks {', '.join(missing)}; see README.md for where to get them")
    package = types.ModuleType("phi3v_reference")
    package.__path__ = [str(reference_dir)]
    sys.modules[package.__name__] = package
    modules = {}
    for name in REFERENCE_FILES:  # configuration first: modeling imports it relatively
        full_name = f"{package.__name__}.{name[:-3]}"
        path = reference_dir / name
        spec = importlib.util.spec_from_loader(full_name, _ReferenceLoader(path, name in STRIP_ASSERTS))
        spec.origin = str(path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[full_name] = module
        spec.loader.exec_module(module)
        modules[name[:-3]] = module
    return modules


def tiny_config(shared_dir: Path) -> dict:
    """The checkpoint's config.json with the sizes shrunk; every other key (auto_map, embd_layer...) kept."""
    config = json.loads((shared_dir / "config.json").read_text())
    config.update(TEXT_CONFIG)
    head_dim = TEXT_CONFIG["hidden_size"] // TEXT_CONFIG["num_attention_heads"]
    rng = np.random.default_rng(SEED)
    # Varied, increasing factors like the checkpoint's, so a wrong pairing of factor and frequency shows.
    short = np.sort(rng.uniform(1.0, 9.0, head_dim // 2))
    long = np.sort(rng.uniform(1.0, 65.0, head_dim // 2))
    config["rope_scaling"] = {
        "type": "su",
        "short_factor": [round(float(x), 4) for x in short],
        "long_factor": [round(float(x), 4) for x in long],
    }
    config["img_processor"] = {**config["img_processor"], "image_dim_out": VISION_CONFIG["hidden_size"]}
    config["vision_config"] = dict(VISION_CONFIG)
    config["torch_dtype"] = "bfloat16"  # as in the checkpoint; the values are bf16-exact (see randomise)
    return config


def build_reference_model(modules: dict, config_dict: dict):
    import torch
    from transformers import CLIPVisionConfig

    modeling = modules["modeling_phi3_v"]
    # The reference hard-codes its CLIP ViT-L/14-336 config; swap in the tiny tower's values.
    clip = CLIPVisionConfig(**{**modeling.CLIP_VIT_LARGE_PATCH14_336_CONFIG.to_dict(), **VISION_CONFIG})
    clip._attn_implementation = "eager"
    modeling.CLIP_VIT_LARGE_PATCH14_336_CONFIG = clip

    kwargs = {k: v for k, v in config_dict.items() if k not in ("vision_config", "_attn_implementation")}
    config = modules["configuration_phi3_v"].Phi3VConfig(**kwargs)
    config._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = modeling.Phi3VForCausalLM(config).eval()
    randomise(model)
    attention = model.model.vision_embed_tokens.img_processor.vision_model.encoder.layers[0].self_attn
    assert type(attention).__name__ == "CLIPAttention", type(attention)
    assert type(model.model.layers[0].self_attn).__name__ == "Phi3Attention"
    return model


def randomise(model) -> None:
    """Overwrite every parameter with seeded noise, rounded to bf16-exact values.

    The reference initialises glb_GN/sub_GN to zeros and norms to ones, which would hide ordering bugs; tiny
    std-0.02 weights make attention almost uniform, which would hide rope bugs. PROJECTION_GAIN keeps logits
    sensitive (see provenance.json: sensitivity) while bf16 rounding noise stays well under the 1e-2 tolerance.
    Values are bf16-exact so the weights file can be bf16 (half the size) and still hold the fp32 model exactly.
    """
    import torch

    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            owner = name.rsplit(".", 2)[-2] if name.count(".") >= 2 else ""
            if name.endswith("bias"):
                values = 0.1 * torch.randn(param.shape, generator=generator)
            elif "norm" in owner:  # RMSNorm / LayerNorm scales (CLIP spells one `pre_layrnorm`)
                values = 1.0 + 0.1 * torch.randn(param.shape, generator=generator)
            elif name.endswith(UNIT_SCALE):
                values = torch.randn(param.shape, generator=generator)
            else:  # projections, convolution, lm_head: variance-preserving
                fan_in = math.prod(param.shape[1:])
                values = PROJECTION_GAIN * torch.randn(param.shape, generator=generator) / math.sqrt(fan_in)
            values = values.to(torch.bfloat16).float()
            param.copy_(values)


def expected_weight_names(shared_dir: Path, config: dict) -> set[str]:
    """The checkpoint's 592 names restricted to the layers a tiny model has."""
    import re

    names = json.loads((shared_dir / "model.safetensors.index.json").read_text())["weight_map"]
    keep = set()
    for name in names:
        text = re.search(r"^model\.layers\.(\d+)\.", name)
        vision = re.search(r"encoder\.layers\.(\d+)\.", name)
        if text and int(text.group(1)) >= config["num_hidden_layers"]:
            continue
        if vision and int(vision.group(1)) >= VISION_CONFIG["num_hidden_layers"]:
            continue
        keep.add(name)
    return keep


def draw_images(out: Path) -> list:
    """Deterministic, non-uniform pictures: a gradient band, an ellipse, diagonal lines and seeded blocks on a flat
    background (flat areas keep the committed pixel values compressible)."""
    from PIL import Image, ImageDraw

    images = []
    rng = np.random.default_rng(SEED)
    for index, (width, height, _) in enumerate(IMAGES):
        pixels = np.empty((height, width, 3), dtype=np.float32)
        pixels[:] = (235 - 40 * index, 225, 200 + 20 * index)
        band = slice(height // 3, height // 3 + max(16, height // 6))
        pixels[band, :, 0] = 255 * np.linspace(0, 1, width)
        pixels[band, :, 1] = 255 * np.linspace(1, 0, width)
        image = Image.fromarray(pixels.round().astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(image)
        draw.ellipse(
            (width * 0.1, height * 0.55, width * 0.45, height * 0.9), fill=(220, 30, 40 + 60 * index)
        )
        for step in range(0, max(width, height), 90 + 10 * index):
            draw.line((step, 0, 0, step), fill=(10, 10, 10), width=3)
        for _ in range(12):
            x0, y0 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.rectangle(
                (x0, y0, x0 + int(rng.integers(8, 40)), y0 + int(rng.integers(8, 40))), fill=colour
            )
        path = out / f"image_{index}.png"
        image.save(path, optimize=True)
        images.append(Image.open(path).convert("RGB"))  # read back, exactly as the test will
    return images


def golden_positions(num_tokens: int, image_start: int, grid: tuple[int, int], length: int) -> list[int]:
    """Text before the image, sub-crop tokens, row separators, glb_GN, the global view, the text after, the last."""
    rows, cols = grid
    row = cols * 12 + 1
    glb = image_start + rows * 12 * row
    image_end = image_start + num_tokens
    positions = {
        image_start - 1,
        image_start,
        image_start + row - 1,  # first sub_GN (end of the first sub-crop row)
        image_start + row * (rows * 6) + cols * 6,  # middle of the sub-crop grid
        glb - 1,  # last sub_GN of the grid
        glb,  # glb_GN separator
        glb + 14,  # global view, second row
        image_end - 1,
        image_end,  # the reference tokenises the text after the image with its own BOS: this is that BOS
        length - 1,
    }
    assert len(positions) == 10 and max(positions) < length, positions
    return sorted(positions)


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """The upper 16 bits of bf16-exact float32 values: the bf16 numbers themselves, at half the size."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    assert not np.any(bits & 0xFFFF), "values are not bf16-exact"
    return (bits >> 16).astype(np.uint16)


def relative_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run_reference(model, inputs: dict, capture: bool = False):
    """Logits of one forward pass; with `capture`, also the decoder's input embeddings and the first layer's rope."""
    import torch

    captured = {}
    hooks = []
    if capture:
        first = model.model.layers[0]
        hooks.append(first.register_forward_pre_hook(lambda m, args: captured.__setitem__("embeds", args[0])))
        hooks.append(
            first.self_attn.rotary_emb.register_forward_hook(
                lambda m, args, out: captured.__setitem__("rope", out)
            )
        )
    try:
        with torch.no_grad():
            logits = model(**inputs, use_cache=False).logits
    finally:
        for hook in hooks:
            hook.remove()
    return logits[0].float().numpy(), captured


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--reference-dir", type=Path, required=True, help="folder with the reference .py files"
    )
    parser.add_argument(
        "--shared-dir", type=Path, default=DEFAULT_SHARED, help="the shared phi35v checkpoint files"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the golden files")
    parser.add_argument(
        "--source", default="", help="where the reference files came from (for provenance.json)"
    )
    args = parser.parse_args(argv)

    import PIL
    import safetensors
    import tokenizers
    import torch
    import torchvision
    import transformers
    from safetensors.torch import save_file
    from transformers import LlamaTokenizerFast

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    reference_dir = args.reference_dir.resolve()
    modules = load_reference(reference_dir)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    config_dict = tiny_config(args.shared_dir)
    model = build_reference_model(modules, config_dict)
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    state.pop("model.vision_embed_tokens.wte.weight")  # the reference's alias of embed_tokens, never saved
    expected = expected_weight_names(args.shared_dir, config_dict)
    if set(state) != expected:
        raise SystemExit(
            f"state dict names differ from the checkpoint's: {sorted(set(state) ^ expected)[:10]}"
        )
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")

    model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    processing = modules["processing_phi3_v"]
    image_processor = processing.Phi3VImageProcessor(num_crops=4, num_img_tokens=144)
    tokenizer = LlamaTokenizerFast.from_pretrained(str(args.shared_dir))
    processor = processing.Phi3VProcessor(image_processor, tokenizer)

    arrays: dict[str, np.ndarray] = {}
    summary = []
    sensitivity: dict[str, list[float]] = {
        "rope_long_factor": [],
        "crops_swapped": [],
        "separators_swapped": [],
    }
    bf16_vs_fp32 = []
    for index, (image, (width, height, question)) in enumerate(zip(draw_images(out), IMAGES, strict=True)):
        prompt = PROMPT.format(question=question)
        inputs = processor(prompt, [image], return_tensors="pt")
        counted = image_processor(image, return_tensors="pt")["num_img_tokens"]
        ids = inputs["input_ids"][0].numpy()
        image_positions = np.flatnonzero(ids < 0)
        num_tokens = int(len(image_positions))
        h, w = (int(v) for v in inputs["image_sizes"][0])
        grid = (h // 336, w // 336)
        assert num_tokens == int(counted[0]) == (grid[0] * grid[1] + 1) * 144 + 1 + (grid[0] + 1) * 12
        start = int(image_positions[0])
        assert np.array_equal(image_positions, np.arange(start, start + num_tokens))
        positions = golden_positions(num_tokens, start, grid, len(ids))

        logits, captured = run_reference(model, dict(inputs), capture=True)
        logits_bf16, _ = run_reference(model_bf16, dict(inputs))
        cos, sin = (t[0].float().numpy() for t in captured["rope"])

        arrays[f"input_ids_{index}"] = ids.astype(np.int64)
        arrays[f"pixel_values_{index}"] = inputs["pixel_values"][0].numpy().astype(np.float32)
        arrays[f"image_sizes_{index}"] = np.array([h, w], dtype=np.int64)
        arrays[f"num_img_tokens_{index}"] = np.array(num_tokens, dtype=np.int64)
        arrays[f"positions_{index}"] = np.array(positions, dtype=np.int64)
        arrays[f"logits_fp32_{index}"] = logits[positions]
        arrays[f"logits_bf16_{index}"] = bf16_bits(logits_bf16[positions])
        arrays[f"inputs_embeds_{index}"] = captured["embeds"][0].float().numpy().astype(np.float16)
        arrays[f"rope_cos_{index}"] = cos[positions]
        arrays[f"rope_sin_{index}"] = sin[positions]
        bf16_vs_fp32.append(relative_error(logits_bf16[positions], logits[positions]))

        # How far plausible bugs move the logits, to show the tolerances can catch them.
        rotary = [layer.self_attn.rotary_emb for layer in model.model.layers]
        for emb in rotary:
            emb.short_factor, emb.long_factor = emb.long_factor, emb.short_factor
        wrong, _ = run_reference(model, dict(inputs))
        for emb in rotary:
            emb.short_factor, emb.long_factor = emb.long_factor, emb.short_factor
        sensitivity["rope_long_factor"].append(relative_error(wrong[positions], logits[positions]))
        swapped = dict(inputs)
        swapped["pixel_values"] = inputs["pixel_values"][:, [0, 2, 1, 3, 4]]
        wrong, _ = run_reference(model, swapped)
        sensitivity["crops_swapped"].append(relative_error(wrong[positions], logits[positions]))
        embedding = model.model.vision_embed_tokens
        with torch.no_grad():
            glb, sub = embedding.glb_GN.clone(), embedding.sub_GN.clone()
            embedding.glb_GN.copy_(sub.view_as(glb))
            embedding.sub_GN.copy_(glb.view_as(sub))
            wrong, _ = run_reference(model, dict(inputs))
            embedding.glb_GN.copy_(glb)
            embedding.sub_GN.copy_(sub)
        sensitivity["separators_swapped"].append(relative_error(wrong[positions], logits[positions]))
        summary.append(
            {
                "file": f"image_{index}.png",
                "width": width,
                "height": height,
                "prompt": prompt,
                "image_sizes": [h, w],
                "crop_grid": list(grid),
                "num_img_tokens": num_tokens,
                "sequence_length": len(ids),
                "image_span": [start, start + num_tokens],
                "positions": positions,
            }
        )

    np.savez_compressed(out / "expected.npz", **arrays)
    digest = lambda path: hashlib.sha256(Path(path).read_bytes()).hexdigest()  # noqa: E731
    provenance = {
        "generated_by": "tests/golden/phi3v/make_golden.py",
        "seed": SEED,
        "reference": {
            "model": "microsoft/Phi-3.5-vision-instruct remote code (MIT licence); never committed here",
            "source": args.source,
            "files": {name: digest(reference_dir / name) for name in REFERENCE_FILES},
            "asserts_stripped_in": sorted(STRIP_ASSERTS),
            "clip_config_override": VISION_CONFIG,
            "attn_implementation": "eager (language model and CLIP)",
            "processor": "Phi3VImageProcessor(num_crops=4, num_img_tokens=144) + LlamaTokenizerFast",
        },
        "tokenizer_json_sha256": digest(args.shared_dir / "tokenizer.json"),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
        },
        "device": "cpu",
        "images": summary,
        "reference_bf16_vs_fp32_relative_error": bf16_vs_fp32,
        "sensitivity_relative_error": sensitivity,
        "files_sha256": {
            name: digest(out / name)
            for name in ["config.json", "model.safetensors", *(f"image_{i}.png" for i in range(len(IMAGES)))]
        },
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: provenance[k]
                for k in ("reference_bf16_vs_fp32_relative_error", "sensitivity_relative_error")
            }
        )
    )
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
