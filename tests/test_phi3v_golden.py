"""Parity of our native Phi-3.5-vision with the original remote code, on golden outputs it produced.

`tests/golden/phi3v/` holds a tiny seeded model in the checkpoint's format, three images and what the reference
(Microsoft's remote code under transformers 4.46, eager attention) computed from them: token ids, pixel values,
image sizes, token counts, input embeddings, rope cos/sin and logits at ten positions (fp32 and bf16). See
`tests/golden/phi3v/README.md`; `make_golden.py` there regenerates them.

The model tests need only the golden folder. The processor tests also need the real tokenizer
(`../shared/phi35v`) and skip without it.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

import inspector  # noqa: F401  (registers phi3_v with transformers' Auto classes)

GOLDEN = Path(__file__).resolve().parent / "golden" / "phi3v"
IMAGE_TOKEN_ID = 32044  # `<|image|>`: our processor's placeholder where the reference put negative ids
PAD_TOKEN_ID = 32000
FP32_TOLERANCE = 1e-4
BF16_TOLERANCE = 1e-2
#: Pixel values: the reference computes them with torchvision, we without. They agree bit for bit today (torch
#: 2.13 here, 2.14 for the reference); a few float32 ulps of slack allow for another torch's bicubic kernel.
PIXEL_ATOL = 1e-6
#: The reference's input embeddings are stored as float16 (to keep the golden folder small).
EMBEDDING_TOLERANCE = 2e-3
ROPE_TOLERANCE = 1e-5
ATTENTION = ["eager", "sdpa"]


@cache
def provenance() -> dict:
    return json.loads((GOLDEN / "provenance.json").read_text())


@cache
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "expected.npz") as data:
        return {name: data[name] for name in data.files}


NUM_IMAGES = len(provenance()["images"])


def case(index: int) -> dict:
    """The reference's inputs and outputs for image `index`, with its negative image ids as `<|image|>`."""
    data = golden()
    reference_ids = data[f"input_ids_{index}"]
    return {
        "reference_ids": reference_ids,
        "input_ids": np.where(reference_ids < 0, IMAGE_TOKEN_ID, reference_ids),
        "pixel_values": data[f"pixel_values_{index}"],
        "image_sizes": data[f"image_sizes_{index}"],
        "num_img_tokens": int(data[f"num_img_tokens_{index}"]),
        "positions": data[f"positions_{index}"],
        "logits_fp32": data[f"logits_fp32_{index}"],
        "logits_bf16": (data[f"logits_bf16_{index}"].astype(np.uint32) << 16).view(np.float32),
        "inputs_embeds": data[f"inputs_embeds_{index}"].astype(np.float32),
        "rope_cos": data[f"rope_cos_{index}"],
        "rope_sin": data[f"rope_sin_{index}"],
        "prompt": provenance()["images"][index]["prompt"],
    }


def image(index: int):
    from PIL import Image

    with Image.open(GOLDEN / provenance()["images"][index]["file"]) as file:
        return file.convert("RGB")


def relative_error(ours, reference) -> float:
    """||ours - reference|| / ||reference|| over the whole array (a set of positions)."""
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def per_position_errors(ours, reference, positions) -> str:
    return ", ".join(
        f"{p}: {relative_error(o, r):.2e}" for p, o, r in zip(positions, ours, reference, strict=True)
    )


# ---------------------------------------------------------------------------------------------- the golden files


def test_golden_files_match_their_provenance():
    """The committed weights, config and images are the ones the expected outputs were computed from."""
    for name, digest in provenance()["files_sha256"].items():
        assert hashlib.sha256((GOLDEN / name).read_bytes()).hexdigest() == digest, (
            f"{name} changed since make_golden.py produced expected.npz; regenerate the golden files (README.md)"
        )


# ---------------------------------------------------------------------------------------------- the processor


@pytest.fixture(scope="module")
def processor(phi35v_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(phi35v_dir)


@pytest.fixture(scope="module")
def processed(processor) -> list:
    """Our processor's output for each golden prompt and image, one call per image."""
    return [
        processor(text=case(i)["prompt"], images=[image(i)], return_tensors="pt") for i in range(NUM_IMAGES)
    ]


def describe_id_mismatch(ours: np.ndarray, reference: np.ndarray) -> str:
    if len(ours) != len(reference):
        head = f"lengths differ: ours {len(ours)}, reference {len(reference)}; "
    else:
        head = ""
    differing = np.flatnonzero(ours[: len(reference)] != reference[: len(ours)])
    first = int(differing[0]) if len(differing) else min(len(ours), len(reference))
    window = slice(max(0, first - 3), first + 6)
    return (
        f"{head}first difference at position {first}: ours {ours[window].tolist()} vs reference (negative ids "
        f"as {IMAGE_TOKEN_ID}) {reference[window].tolist()}"
    )


@pytest.mark.parametrize("index", range(NUM_IMAGES))
def test_processor_token_ids_equal_the_reference(processed, index):
    expected = case(index)
    ours = processed[index]
    ids = ours["input_ids"][0].numpy()
    assert np.array_equal(ids, expected["input_ids"]), describe_id_mismatch(ids, expected["input_ids"])
    assert int((ids == IMAGE_TOKEN_ID).sum()) == expected["num_img_tokens"]
    assert ours["attention_mask"][0].tolist() == [1] * len(ids)


@pytest.mark.parametrize("index", range(NUM_IMAGES))
def test_processor_pixels_and_sizes_equal_the_reference(processor, processed, index):
    expected = case(index)
    ours = processed[index]
    assert ours["image_sizes"][0].tolist() == expected["image_sizes"].tolist()
    pixels = ours["pixel_values"][0].numpy()
    assert pixels.dtype == np.float32
    assert pixels.shape == expected["pixel_values"].shape
    worst = np.abs(pixels - expected["pixel_values"]).reshape(pixels.shape[0], -1).max(axis=1)
    assert worst.max() <= PIXEL_ATOL, (
        f"largest |difference| per crop (0 = global view, then sub-crops row by row, then zero padding): "
        f"{np.array2string(worst, precision=6)}"
    )
    rows, cols = (int(v) // 336 for v in expected["image_sizes"])
    assert processor.image_processor.num_image_tokens(*image(index).size) == expected["num_img_tokens"]
    assert (rows * cols + 1) * 144 + 1 + (rows + 1) * 12 == expected["num_img_tokens"]


def test_processor_left_padded_batch_equals_the_reference_inputs(processor):
    """All three prompts in one call: each row is the reference's ids, left-padded; images stay in order."""
    batch = processor(
        text=[case(i)["prompt"] for i in range(NUM_IMAGES)],
        images=[[image(i)] for i in range(NUM_IMAGES)],
        padding_side="left",
        return_tensors="pt",
    )
    expected = left_padded_batch(range(NUM_IMAGES))
    ids = batch["input_ids"].numpy()
    for row in range(NUM_IMAGES):
        assert np.array_equal(ids[row], expected["input_ids"][row].numpy()), describe_id_mismatch(
            ids[row], expected["input_ids"][row].numpy()
        )
    assert torch.equal(batch["attention_mask"], expected["attention_mask"])
    assert torch.equal(batch["image_sizes"], expected["image_sizes"])
    assert torch.allclose(batch["pixel_values"], expected["pixel_values"], rtol=0, atol=PIXEL_ATOL)


# ---------------------------------------------------------------------------------------------- the model


@cache
def load_model(attention: str, dtype: torch.dtype):
    from transformers import AutoModelForImageTextToText

    model, info = AutoModelForImageTextToText.from_pretrained(
        GOLDEN, dtype=dtype, attn_implementation=attention, output_loading_info=True
    )
    problems = {kind: names for kind, names in info.items() if names}
    assert not problems, f"loading the golden weights reported {problems}"
    return model.eval()


def single_inputs(index: int) -> dict[str, torch.Tensor]:
    expected = case(index)
    return {
        "input_ids": torch.from_numpy(expected["input_ids"])[None],
        "attention_mask": torch.ones(1, len(expected["input_ids"]), dtype=torch.long),
        "pixel_values": torch.from_numpy(expected["pixel_values"])[None],
        "image_sizes": torch.from_numpy(expected["image_sizes"])[None],
    }


def left_padded_batch(indices) -> dict[str, torch.Tensor]:
    """The reference's per-image inputs as one batch, left-padded with `<|endoftext|>` like generation inputs."""
    cases = [case(i) for i in indices]
    length = max(len(c["input_ids"]) for c in cases)
    ids = torch.full((len(cases), length), PAD_TOKEN_ID, dtype=torch.long)
    mask = torch.zeros((len(cases), length), dtype=torch.long)
    for row, c in enumerate(cases):
        ids[row, length - len(c["input_ids"]) :] = torch.from_numpy(c["input_ids"])
        mask[row, length - len(c["input_ids"]) :] = 1
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": torch.from_numpy(np.stack([c["pixel_values"] for c in cases])),
        "image_sizes": torch.from_numpy(np.stack([c["image_sizes"] for c in cases])),
    }


def batch_positions(inputs: dict[str, torch.Tensor], index: int) -> np.ndarray:
    """Where image `index`'s golden positions sit in a left-padded batch."""
    expected = case(index)
    return expected["positions"] + inputs["input_ids"].shape[1] - len(expected["input_ids"])


@cache
def forward(attention: str, dtype: torch.dtype, inputs_key: tuple) -> dict:
    """One forward pass, cached: logits at the golden positions per image, and the first decoder layer's inputs.

    inputs_key: ("single", image index) or ("batch", explicit position ids?) for all images left-padded.
    Only the golden positions go through the lm_head (`logits_to_keep`), which keeps the test fast on CPU.
    """
    if inputs_key[0] == "single":
        inputs, rows = single_inputs(inputs_key[1]), {inputs_key[1]: case(inputs_key[1])["positions"]}
    else:
        inputs = left_padded_batch(range(NUM_IMAGES))
        if inputs_key[1]:
            inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        rows = {index: batch_positions(inputs, index) for index in range(NUM_IMAGES)}
    keep = np.unique(np.concatenate(list(rows.values())))
    seen = {}

    def grab(module, args, kwargs):
        seen["embeds"] = (kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]).float()
        seen["rope"] = kwargs.get("position_embeddings")

    model = load_model(attention, dtype)
    hook = model.model.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            logits = (
                model(**inputs, use_cache=False, logits_to_keep=torch.from_numpy(keep)).logits.float().numpy()
            )
    finally:
        hook.remove()
    column = {int(position): i for i, position in enumerate(keep)}
    row_of = (
        {index: row for row, index in enumerate(rows)} if inputs_key[0] == "batch" else {inputs_key[1]: 0}
    )
    return {
        "logits": {i: logits[row_of[i], [column[int(p)] for p in rows[i]]] for i in rows},
        "embeds": seen["embeds"],
        "rope": seen["rope"],
    }


def describe_embedding_mismatch(ours: torch.Tensor, reference: torch.Tensor, start: int, end: int) -> str:
    """Say whether wrong image rows hold other reference rows (an ordering bug) or new values."""
    row_errors = (ours - reference).norm(dim=-1) / reference.norm(dim=-1)
    bad = torch.nonzero(row_errors > EMBEDDING_TOLERANCE).flatten().tolist()
    text_bad = [i for i in bad if not start <= i < end]
    image_bad = [i for i in bad if start <= i < end]
    lines = [f"{len(text_bad)} text rows and {len(image_bad)} of {end - start} image rows differ"]
    if text_bad:
        lines.append(f"first text rows: {text_bad[:8]} (embedding lookup)")
    if image_bad:
        distances = torch.cdist(ours[image_bad], reference[start:end])
        nearest = distances.argmin(dim=1) + start
        moved = (distances.min(dim=1).values / reference[image_bad].norm(dim=-1)) <= EMBEDDING_TOLERANCE
        relative = [i - start for i in image_bad[:8]]
        lines.append(f"first image rows (offset in the image span): {relative}")
        if bool(moved.all()):
            pairs = [
                (i - start, int(j) - start) for i, j in zip(image_bad[:8], nearest[:8].tolist(), strict=True)
            ]
            lines.append(
                f"every wrong row equals another reference row: ORDER bug; (ours, reference) {pairs}"
            )
        else:
            lines.append(
                f"{int((~moved).sum())} wrong rows match no reference row: VALUE bug (CLIP/merge/projection)"
            )
    return "; ".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(NUM_IMAGES))
def test_image_features_land_where_the_reference_puts_them(index):
    """Diagnostic stage: the decoder's input embeddings (text lookups and image features, in order)."""
    expected = case(index)
    embeds = forward("eager", torch.float32, ("single", index))["embeds"][0]
    reference = torch.from_numpy(expected["inputs_embeds"])
    assert embeds.shape == reference.shape
    start = int(np.flatnonzero(expected["reference_ids"] < 0)[0])
    error = relative_error(embeds, reference)
    assert error <= EMBEDDING_TOLERANCE, describe_embedding_mismatch(
        embeds, reference, start, start + expected["num_img_tokens"]
    )


@pytest.mark.slow
@pytest.mark.parametrize("index", range(NUM_IMAGES))
def test_rope_equals_the_reference(index):
    """Diagnostic stage: the long-rope ("su") cos/sin, short factors and attention scaling included."""
    expected = case(index)
    rope = forward("eager", torch.float32, ("single", index))["rope"]
    if rope is None:
        pytest.skip("the decoder layers get no position_embeddings argument to compare")
    positions = expected["positions"]
    cos, sin = (t[0, positions].float().numpy() for t in rope)
    for name, ours, reference in (("cos", cos, expected["rope_cos"]), ("sin", sin, expected["rope_sin"])):
        error = relative_error(ours, reference)
        assert error <= ROPE_TOLERANCE, (
            f"rope {name} relative error {error:.2e}; per position {per_position_errors(ours, reference, positions)}"
        )


@pytest.mark.slow
@pytest.mark.parametrize("attention", ATTENTION)
@pytest.mark.parametrize("index", range(NUM_IMAGES))
def test_fp32_logits_equal_the_reference_for_each_image(attention, index):
    expected = case(index)
    logits = forward(attention, torch.float32, ("single", index))["logits"][index]
    error = relative_error(logits, expected["logits_fp32"])
    assert error <= FP32_TOLERANCE, (
        f"fp32 relative error {error:.2e} > {FP32_TOLERANCE}; per position "
        f"{per_position_errors(logits, expected['logits_fp32'], expected['positions'])}"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("attention", "explicit_positions"),
    [("eager", True), ("sdpa", True), ("sdpa", False)],
    ids=["eager-position_ids_from_mask", "sdpa-position_ids_from_mask", "sdpa-default_positions"],
)
def test_fp32_logits_equal_the_reference_in_a_left_padded_batch(attention, explicit_positions):
    """Images of three crop grids (2x2, 2x1, 1x3) in one left-padded batch.

    With position ids from the attention mask (as `generate` makes them) the real tokens sit at the reference's
    positions; without, they are shifted by the padding, which rope's relative form must leave unchanged.
    """
    logits = forward(attention, torch.float32, ("batch", explicit_positions))["logits"]
    failures = []
    for index in range(NUM_IMAGES):
        expected = case(index)
        error = relative_error(logits[index], expected["logits_fp32"])
        if error > FP32_TOLERANCE:
            failures.append(
                f"image {index}: {error:.2e}, per position "
                f"{per_position_errors(logits[index], expected['logits_fp32'], expected['positions'])}"
            )
    assert not failures, "fp32 relative error above 1e-4 in the batch: " + " | ".join(failures)


@pytest.mark.slow
def test_bf16_logits_equal_the_reference():
    """The reference cast to bf16 on CPU (eager), against ours in bf16 with the default SDPA: alone and batched."""
    batch = forward("sdpa", torch.bfloat16, ("batch", True))["logits"]
    failures = []
    for index in range(NUM_IMAGES):
        expected = case(index)
        single = forward("sdpa", torch.bfloat16, ("single", index))["logits"][index]
        for label, logits in (("alone", single), ("in the batch", batch[index])):
            error = relative_error(logits, expected["logits_bf16"])
            if error > BF16_TOLERANCE:
                failures.append(f"image {index} {label}: {error:.2e}")
    assert not failures, "bf16 relative error above 1e-2: " + "; ".join(failures)
