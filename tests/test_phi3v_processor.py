"""Phi-3.5-vision image processor and processor: HD transform geometry and pixels, batching, prompt markers, chat
template, save/load and Auto-class loading of the checkpoint's processor files."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_phi35v_dir
from PIL import Image

from inspector.models.phi3v.image_processing_phi3_v import CROP_SIZE, Phi3VImageProcessor
from inspector.models.phi3v.processing_phi3_v import CHAT_TEMPLATE, Phi3VProcessor

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])
WHITE = (1.0 - CLIP_MEAN) / CLIP_STD
IMAGE_TOKEN_ID = 32044


needs_shared = pytest.mark.skipif(
    shared_phi35v_dir() is None, reason="shared/phi35v checkpoint files are absent"
)


def solid(width: int, height: int, color=(200, 30, 60)) -> Image.Image:
    return Image.new("RGB", (width, height), color)


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), "RGB")


def expected_grid(width: int, height: int, num_crops: int) -> tuple[int, int]:
    """The published rule, written out independently: transpose tall images, take the widest layout of s crops per
    row whose rows (ceil(s / ratio)) keep s * rows <= num_crops, scale the width to s crops, pad the height up."""
    long_side, short_side = max(width, height), min(width, height)
    ratio = long_side / short_side
    best = max(s for s in range(1, num_crops + 1) if s * math.ceil(s / ratio) <= num_crops)
    resized_short = max(1, int(best * CROP_SIZE / ratio))
    rows_landscape = math.ceil(resized_short / CROP_SIZE)
    return (best, rows_landscape) if width < height else (rows_landscape, best)


def tokens_for(rows: int, cols: int) -> int:
    return (rows * cols + 1) * 144 + 1 + (rows + 1) * 12


# ---------------------------------------------------------------------------------------------- image processor


@pytest.fixture(scope="module")
def image_processor() -> Phi3VImageProcessor:
    return Phi3VImageProcessor()


def test_defaults_match_the_checkpoint(image_processor):
    assert image_processor.num_crops == 4
    assert image_processor.num_img_tokens == 144
    assert image_processor.do_convert_rgb is True
    assert image_processor.image_mean == pytest.approx(CLIP_MEAN.tolist())
    assert image_processor.image_std == pytest.approx(CLIP_STD.tolist())


@pytest.mark.parametrize(
    ("size", "num_crops", "grid"),
    [
        ((800, 800), 4, (2, 2)),
        ((1344, 336), 4, (1, 4)),
        ((336, 1344), 4, (4, 1)),
        ((1000, 300), 4, (1, 3)),
        ((300, 1000), 4, (3, 1)),
        ((50, 20), 4, (1, 2)),
        ((1000, 700), 4, (2, 2)),
        ((1, 1), 4, (2, 2)),
        ((5000, 10), 4, (1, 4)),
        ((800, 800), 16, (4, 4)),
        ((1920, 1080), 16, (3, 5)),
        ((1920, 1080), 1, (1, 1)),
    ],
)
def test_crop_grid_known_sizes(image_processor, size, num_crops, grid):
    assert image_processor.crop_grid(*size, num_crops=num_crops) == grid
    assert image_processor.num_image_tokens(*size, num_crops=num_crops) == tokens_for(*grid)


def test_800x800_is_a_2x2_grid_of_757_tokens(image_processor):
    out = image_processor(solid(800, 800))
    assert out["pixel_values"].shape == (1, 5, 3, 336, 336)
    assert out["pixel_values"].dtype == torch.float32
    assert out["image_sizes"].dtype == torch.int64
    assert out["image_sizes"].tolist() == [[672, 672]]
    assert out["num_img_tokens"] == [757]


def test_crop_grid_follows_the_rule_for_many_sizes(image_processor):
    rng = random.Random(1234)
    sizes = [(rng.randint(1, 4000), rng.randint(1, 4000)) for _ in range(400)]
    sizes += [(rng.randint(1, 60), rng.randint(1, 6000)) for _ in range(50)]
    for num_crops in (1, 4, 9, 16):
        for width, height in sizes:
            rows, cols = image_processor.crop_grid(width, height, num_crops=num_crops)
            assert (rows, cols) == expected_grid(width, height, num_crops), (width, height, num_crops)
            assert 1 <= rows * cols <= num_crops


def test_pixel_path_agrees_with_crop_grid(image_processor):
    rng = random.Random(7)
    sizes = [(rng.randint(1, 900), rng.randint(1, 900)) for _ in range(12)] + [(2000, 30), (30, 2000)]
    images = [noise(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    out = image_processor(images)
    assert out["pixel_values"].shape == (len(images), 5, 3, 336, 336)
    for index, (width, height) in enumerate(sizes):
        rows, cols = image_processor.crop_grid(width, height)
        assert out["image_sizes"][index].tolist() == [rows * CROP_SIZE, cols * CROP_SIZE]
        assert out["num_img_tokens"][index] == image_processor.num_image_tokens(width, height)
        # Real crops are non-zero noise; the rest of the num_crops + 1 slots are zero padding.
        real = out["pixel_values"][index, : 1 + rows * cols]
        assert bool((real.flatten(1).abs().amax(1) > 0).all())
        assert bool((out["pixel_values"][index, 1 + rows * cols :] == 0).all())


def test_white_padding_is_centred_above_and_below(image_processor):
    # 1000x300 -> width 1008 (3 crops), height int(1008 / (1000/300)) = 302, padded to 336: 17 rows above, 17 below.
    out = image_processor(solid(1000, 300, (255, 0, 0)))
    crops = out["pixel_values"][0, 1:4]
    assert out["image_sizes"].tolist() == [[336, 1008]]
    red = (torch.tensor([1.0, 0.0, 0.0]) - CLIP_MEAN) / CLIP_STD
    for crop in crops:
        torch.testing.assert_close(crop[:, :17], WHITE[:, None, None].expand(3, 17, 336), rtol=0, atol=1e-6)
        torch.testing.assert_close(crop[:, -17:], WHITE[:, None, None].expand(3, 17, 336), rtol=0, atol=1e-6)
        torch.testing.assert_close(crop[:, 17:-17], red[:, None, None].expand(3, 302, 336), rtol=0, atol=1e-6)


def test_uneven_padding_puts_the_extra_row_at_the_bottom(image_processor):
    # 1000x333 -> 3 crops, height int(1008 / 3.003) = 335, 1 white row: 0 above, 1 below.
    out = image_processor(solid(1000, 333, (0, 0, 0)))
    crop = out["pixel_values"][0, 1]
    black = -CLIP_MEAN / CLIP_STD
    torch.testing.assert_close(crop[:, 0], black[:, None].expand(3, 336), rtol=0, atol=1e-6)
    torch.testing.assert_close(crop[:, 335], WHITE[:, None].expand(3, 336), rtol=0, atol=1e-6)


def test_tall_images_are_padded_left_and_right(image_processor):
    out = image_processor(solid(300, 1000, (0, 255, 0)))
    assert out["image_sizes"].tolist() == [[1008, 336]]
    for crop in out["pixel_values"][0, 1:4]:
        torch.testing.assert_close(
            crop[:, :, :17], WHITE[:, None, None].expand(3, 336, 17), rtol=0, atol=1e-6
        )
        torch.testing.assert_close(
            crop[:, :, -17:], WHITE[:, None, None].expand(3, 336, 17), rtol=0, atol=1e-6
        )
    assert bool((out["pixel_values"][0, 4] == 0).all())


def test_crops_are_row_major_after_the_global_view(image_processor):
    # A 672x672 image needs no resize; its four quadrants become crops 1..4 in reading order.
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    image = Image.new("RGB", (672, 672))
    for index, colour in enumerate(colours):
        image.paste(solid(336, 336, colour), ((index % 2) * 336, (index // 2) * 336))
    pixels = image_processor(image)["pixel_values"][0]
    for index, colour in enumerate(colours):
        expected = (torch.tensor(colour, dtype=torch.float32) / 255 - CLIP_MEAN) / CLIP_STD
        torch.testing.assert_close(
            pixels[1 + index], expected[:, None, None].expand(3, 336, 336), atol=1e-6, rtol=0
        )
    # The global view is the whole normalised picture resized bicubically to 336x336.
    whole = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
    whole = (whole - CLIP_MEAN[:, None, None]) / CLIP_STD[:, None, None]
    expected_global = F.interpolate(whole[None], size=(336, 336), mode="bicubic")[0]
    torch.testing.assert_close(pixels[0], expected_global, atol=1e-5, rtol=0)


def test_resize_is_pil_bilinear(image_processor):
    image = noise(500, 400, seed=3)
    out = image_processor(image)
    # 500x400 -> ratio 1.25 -> 2 crops wide, height int(672 / 1.25) = 537 -> padded to 672: 67 rows above.
    assert out["image_sizes"].tolist() == [[672, 672]]
    resized = np.asarray(image.resize((672, 537), Image.Resampling.BILINEAR)).astype(np.float32) / 255
    expected = (torch.from_numpy(resized).permute(2, 0, 1) - CLIP_MEAN[:, None, None]) / CLIP_STD[
        :, None, None
    ]
    top_left = out["pixel_values"][0, 1]
    torch.testing.assert_close(top_left[:, 67:], expected[:, : 336 - 67, :336], atol=1e-6, rtol=0)


def test_num_crops_can_be_changed_per_call(image_processor):
    # 200x900 (ratio 4.5) with 16 crops: 8 crops along the long side (8 * ceil(8 / 4.5) = 16), 2 across.
    out = image_processor([solid(800, 800), solid(200, 900)], num_crops=16)
    assert out["pixel_values"].shape == (2, 17, 3, 336, 336)
    assert out["image_sizes"].tolist() == [[1344, 1344], [2688, 672]]
    assert out["num_img_tokens"] == [tokens_for(4, 4), tokens_for(8, 2)]
    assert image_processor.num_crops == 4


def test_other_modes_and_array_inputs(image_processor):
    base = noise(120, 90, seed=5)
    reference = image_processor(base)["pixel_values"]
    torch.testing.assert_close(image_processor(np.asarray(base))["pixel_values"], reference, atol=0, rtol=0)
    for converted in (base.convert("L"), base.convert("RGBA"), base.convert("P"), base.convert("CMYK")):
        out = image_processor(converted)
        assert out["pixel_values"].shape == (1, 5, 3, 336, 336)
        expected = image_processor(converted.convert("RGB"))["pixel_values"]
        torch.testing.assert_close(out["pixel_values"], expected, atol=0, rtol=0)


def test_images_from_paths(image_processor, tmp_path):
    path = tmp_path / "product.png"
    noise(64, 48, seed=9).save(path)
    from_path = image_processor([path, str(path)])["pixel_values"]
    torch.testing.assert_close(
        from_path[0], image_processor(Image.open(path))["pixel_values"][0], atol=0, rtol=0
    )
    torch.testing.assert_close(from_path[0], from_path[1], atol=0, rtol=0)


def test_extreme_aspect_ratio_does_not_crash(image_processor):
    # The original code resizes this to 0 px high and fails; here it becomes one white-padded row of 4 crops.
    out = image_processor(solid(20000, 3))
    assert out["image_sizes"].tolist() == [[336, 1344]]


def test_bad_arguments_raise_clear_errors(image_processor):
    with pytest.raises(ValueError, match="num_crops"):
        Phi3VImageProcessor(num_crops=0)
    with pytest.raises(ValueError, match="num_img_tokens"):
        Phi3VImageProcessor(num_img_tokens=150)
    with pytest.raises(ValueError, match="num_crops"):
        image_processor(solid(10, 10), num_crops=-1)
    with pytest.raises(TypeError, match="Unsupported image type"):
        image_processor([solid(10, 10), 42])
    with pytest.raises(ValueError, match="No images"):
        image_processor([])
    with pytest.raises(ValueError, match="positive"):
        image_processor.crop_grid(0, 10)


def test_image_processor_save_load_round_trip(image_processor, tmp_path):
    custom = Phi3VImageProcessor(num_crops=16)
    custom.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "Phi3VImageProcessor"
    assert saved["num_crops"] == 16 and saved["num_img_tokens"] == 144
    assert "auto_map" not in saved
    loaded = Phi3VImageProcessor.from_pretrained(tmp_path)
    assert loaded.num_crops == 16
    assert Phi3VImageProcessor.from_pretrained(tmp_path, num_crops=2).num_crops == 2


# ---------------------------------------------------------------------------------------------- processor


def register_auto_classes() -> None:
    """Register our classes with the Auto classes: inspector.models.register() when it exists, else locally."""
    try:
        from inspector.models import register
    except ImportError:
        register = None
    if register is not None:
        register()
        return
    from transformers import AutoConfig, PretrainedConfig
    from transformers.models.auto.image_processing_auto import AutoImageProcessor
    from transformers.models.auto.processing_auto import AutoProcessor

    class Phi3VTestConfig(PretrainedConfig):
        model_type = "phi3_v"

    AutoConfig.register("phi3_v", Phi3VTestConfig, exist_ok=True)
    AutoImageProcessor.register(
        Phi3VTestConfig, slow_image_processor_class=Phi3VImageProcessor, exist_ok=True
    )
    AutoProcessor.register(Phi3VTestConfig, Phi3VProcessor, exist_ok=True)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    """A folder with the checkpoint's json files only (config, processor and tokenizer), as a user would have."""
    source = shared_phi35v_dir()
    if source is None:
        pytest.skip("shared/phi35v checkpoint files are absent")
    folder = tmp_path_factory.mktemp("phi35v")
    for path in source.glob("*.json"):
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def processor(checkpoint_dir) -> Phi3VProcessor:
    return Phi3VProcessor.from_pretrained(checkpoint_dir)


def image_runs(ids: list[int]) -> list[int]:
    """Lengths of the consecutive runs of image tokens in a sequence."""
    runs, current = [], 0
    for token in ids + [None]:
        if token == IMAGE_TOKEN_ID:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


def chunk_ids(processor: Phi3VProcessor, text: str) -> list[int]:
    return processor.tokenizer(text)["input_ids"]


@needs_shared
def test_single_prompt_matches_the_original_token_layout(processor):
    prompt = "<|user|>\n<|image_1|>\nWhat is shown?<|end|>\n<|assistant|>\n"
    out = processor(prompt, [solid(800, 800)])
    ids = out["input_ids"][0].tolist()
    # Like the original processor: each text piece tokenised on its own with the tokenizer's BOS, 757 image tokens.
    expected = chunk_ids(processor, "<|user|>\n") + [IMAGE_TOKEN_ID] * 757
    expected += chunk_ids(processor, "\nWhat is shown?<|end|>\n<|assistant|>\n")
    assert ids == expected
    assert ids[:4] == [1, 32010, 29871, 13]
    assert ids[-11:] == [1, 29871, 13, 5618, 338, 4318, 29973, 32007, 29871, 13, 32001]
    assert min(ids) >= 0
    assert out["attention_mask"].tolist() == [[1] * len(ids)]
    assert out["pixel_values"].shape == (1, 5, 3, 336, 336)
    assert out["image_sizes"].tolist() == [[672, 672]]
    assert processor.image_token == "<|image|>" and processor.image_token_id == IMAGE_TOKEN_ID


@needs_shared
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batch_of_prompts_with_different_image_shapes(processor, padding_side):
    prompts = [
        "<|user|>\n<|image_1|>\nBrand?<|end|>\n<|assistant|>\n",
        "<|user|>\n<|image_1|>\nWhat is the price of this product?<|end|>\n<|assistant|>\n",
        "<|user|>\nNo picture here.<|end|>\n<|assistant|>\n",
        "<|user|>\n<|image_1|>\nTitle?<|end|>\n<|assistant|>\n",
    ]
    images = [[noise(800, 800, 1)], [noise(300, 1000, 2)], [], [noise(60, 20, 3)]]
    batch = processor(prompts, images, padding_side=padding_side)
    singles = [processor(p, i or None) for p, i in zip(prompts, images, strict=True)]
    lengths = [s["input_ids"].shape[1] for s in singles]
    assert batch["input_ids"].shape == (4, max(lengths))
    for row, (single, length) in enumerate(zip(singles, lengths, strict=True)):
        pad = max(lengths) - length
        ids, mask = batch["input_ids"][row].tolist(), batch["attention_mask"][row].tolist()
        if padding_side == "left":
            assert ids[pad:] == single["input_ids"][0].tolist() and ids[:pad] == [32000] * pad
            assert mask == [0] * pad + [1] * length
        else:
            assert ids[:length] == single["input_ids"][0].tolist() and ids[length:] == [32000] * pad
            assert mask == [1] * length + [0] * pad
    assert image_runs(batch["input_ids"][1].tolist()) == [tokens_for(3, 1)]
    assert batch["image_sizes"].tolist() == [[672, 672], [1008, 336], [336, 1008]]
    for index, single in enumerate(s for s in singles if "pixel_values" in s):
        torch.testing.assert_close(batch["pixel_values"][index], single["pixel_values"][0], atol=0, rtol=0)
    if padding_side == "left":
        assert batch["input_ids"][:, -1].tolist() == [32001] * 4


@needs_shared
def test_padding_side_defaults_to_the_tokenizer(processor):
    assert processor.tokenizer.padding_side == "right"
    batch = processor(["<|user|>\nA<|end|>\n", "<|user|>\nA longer prompt here<|end|>\n"])
    assert batch["attention_mask"][0, 0] == 1 and batch["attention_mask"][0, -1] == 0


@needs_shared
def test_several_images_per_prompt(processor):
    prompt = "<|user|>\n<|image_1|>\n<|image_2|>\n<|image_3|>\nCompare.<|end|>\n<|assistant|>\n"
    images = [solid(800, 800), solid(1000, 300), solid(200, 900)]
    out = processor(prompt, images)
    assert image_runs(out["input_ids"][0].tolist()) == [757, tokens_for(1, 3), tokens_for(4, 1)]
    assert out["pixel_values"].shape == (3, 5, 3, 336, 336)
    assert out["image_sizes"].tolist() == [[672, 672], [336, 1008], [1344, 336]]
    # A flat list of images for several prompts is shared out in marker order.
    flat = processor([prompt, "<|image_1|> one more"], images + [solid(50, 50)])
    assert image_runs(flat["input_ids"][0].tolist()) == [757, tokens_for(1, 3), tokens_for(4, 1)]
    assert image_runs(flat["input_ids"][1].tolist()) == [757]
    # Bare <|image|> markers are taken in order too and give the same ids.
    bare = processor(
        prompt.replace("<|image_1|>", "<|image|>")
        .replace("<|image_2|>", "<|image|>")
        .replace("<|image_3|>", "<|image|>"),
        images,
    )
    assert bare["input_ids"].tolist() == out["input_ids"].tolist()


@needs_shared
@pytest.mark.parametrize(
    ("prompt", "n_images", "message"),
    [
        ("<|image_2|> only the second", 1, "must be <\\|image_1\\|>"),
        ("<|image_1|> and <|image_1|> again", 2, "each once"),
        ("<|image_2|> then <|image_1|>", 2, "in that order"),
        ("<|image_1|> and <|image_3|>", 2, "no gaps"),
        ("<|image_1|> and <|image|>", 2, "mixes"),
        ("<|image_1|> <|image_2|>", 1, "2 image marker"),
        ("no markers", 1, "image marker"),
        ("<|image_1|> needs a picture", 0, "image marker"),
    ],
)
def test_marker_errors(processor, prompt, n_images, message):
    images = [solid(40, 40)] * n_images or None
    with pytest.raises(ValueError, match=message):
        processor(prompt, images)


@needs_shared
def test_num_crops_per_call(processor):
    out = processor("<|image_1|>\nWhat?", [solid(800, 800)], num_crops=16)
    assert out["pixel_values"].shape == (1, 17, 3, 336, 336)
    assert image_runs(out["input_ids"][0].tolist()) == [tokens_for(4, 4)]
    assert processor.num_image_tokens(800, 800) == 757
    assert processor.num_image_tokens(800, 800, num_crops=16) == tokens_for(4, 4)
    assert processor.crop_grid(1000, 300) == (1, 3)


@needs_shared
def test_num_crops_when_loading(checkpoint_dir, tmp_path):
    """An image option given when loading reaches the image processor only, on every supported transformers (5.25
    loads sub-processors through another path than 5.17): the tokenizer neither keeps nor saves it."""
    register_auto_classes()
    from transformers.models.auto.processing_auto import AutoProcessor

    for load in (Phi3VProcessor.from_pretrained, AutoProcessor.from_pretrained):
        loaded = load(checkpoint_dir, num_crops=16)
        assert type(loaded) is Phi3VProcessor
        assert loaded.image_processor.num_crops == 16
        assert "num_crops" not in loaded.tokenizer.init_kwargs
        assert loaded("<|image_1|>x", [solid(800, 800)])["pixel_values"].shape == (1, 17, 3, 336, 336)

    loaded.save_pretrained(tmp_path)
    assert "num_crops" not in json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert json.loads((tmp_path / "processor_config.json").read_text())["image_processor"]["num_crops"] == 16
    assert Phi3VProcessor.from_pretrained(tmp_path).image_processor.num_crops == 16
    with pytest.raises(ValueError, match="num_crops"):
        Phi3VProcessor.from_pretrained(checkpoint_dir, num_crops=0)


@needs_shared
def test_text_only_and_numpy_outputs(processor):
    out = processor("<|user|>\nHello world<|end|>\n<|assistant|>\n")
    assert set(out) == {"input_ids", "attention_mask"}
    assert out["input_ids"][0].tolist() == chunk_ids(
        processor, "<|user|>\nHello world<|end|>\n<|assistant|>\n"
    )
    as_numpy = processor("<|image_1|>x", [solid(30, 30)], return_tensors="np")
    assert isinstance(as_numpy["input_ids"], np.ndarray) and isinstance(as_numpy["pixel_values"], np.ndarray)


@needs_shared
def test_unsupported_options_are_rejected(processor):
    with pytest.raises(ValueError, match="truncation"):
        processor("<|image_1|>x", [solid(30, 30)], truncation=True, max_length=5)
    with pytest.raises(TypeError, match="Unsupported"):
        processor("hello", colour="red")
    with pytest.raises(ValueError, match="videos"):
        processor("hello", videos=[np.zeros((2, 8, 8, 3))])


@needs_shared
def test_decode_and_input_names(processor):
    ids = processor("<|user|>\nHello world<|end|>")["input_ids"]
    decoded = processor.batch_decode(ids, skip_special_tokens=True)
    assert decoded == processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    assert decoded[0].strip() == "Hello world"
    assert processor.decode(ids[0]) == processor.tokenizer.decode(ids[0])
    assert processor.model_input_names == ["input_ids", "attention_mask", "pixel_values", "image_sizes"]


# ---------------------------------------------------------------------------------------------- chat template


@needs_shared
def test_chat_template_with_an_image(processor):
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}
    ]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert text == "<|user|>\n<|image_1|>\nWhat is shown?<|end|>\n<|assistant|>\n"
    assert (
        processor.apply_chat_template(conversation, tokenize=False)
        == "<|user|>\n<|image_1|>\nWhat is shown?<|end|>\n"
    )


@needs_shared
def test_chat_template_system_assistant_and_numbering(processor):
    conversation = [
        {"role": "system", "content": "You check product photos."},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "No."}]},
        {"role": "user", "content": [{"type": "text", "text": "And this one?"}, {"type": "image"}]},
    ]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|system|>\nYou check product photos.<|end|>\n"
        "<|user|>\n<|image_1|>\n<|image_2|>\nSame?<|end|>\n"
        "<|assistant|>\nNo.<|end|>\n"
        "<|user|>\nAnd this one?<|image_3|>\n<|end|>\n"
        "<|assistant|>\n"
    )
    ends_with_answer = processor.apply_chat_template(
        conversation[:3], add_generation_prompt=True, tokenize=False
    )
    assert ends_with_answer.endswith("<|assistant|>\nNo.<|end|>\n")


@needs_shared
def test_chat_template_renders_string_contents_like_the_checkpoint_template(processor, checkpoint_dir):
    original = json.loads((checkpoint_dir / "tokenizer_config.json").read_text())["chat_template"]
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<|image_1|>\nWhat brand is this?"},
        {"role": "assistant", "content": "Acme"},
        {"role": "user", "content": "Price?"},
    ]
    for add_generation_prompt in (True, False):
        ours = processor.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt)
        theirs = processor.apply_chat_template(
            conversation, chat_template=original, add_generation_prompt=add_generation_prompt
        )
        assert ours == theirs


@needs_shared
def test_apply_chat_template_tokenize_with_images(processor):
    image = noise(500, 300, seed=11)
    conversation = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi?"}]}
    ]
    out = processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    direct = processor("<|user|>\n<|image_1|>\nHi?<|end|>\n<|assistant|>\n", [image])
    assert set(out) == {"input_ids", "attention_mask", "pixel_values", "image_sizes"}
    assert out["input_ids"].tolist() == direct["input_ids"].tolist()
    torch.testing.assert_close(out["pixel_values"], direct["pixel_values"], atol=0, rtol=0)
    batched = processor.apply_chat_template(
        [conversation, [{"role": "user", "content": [{"type": "text", "text": "Text only"}]}]],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        processor_kwargs={"padding_side": "left"},
    )
    assert batched["input_ids"].shape[0] == 2 and batched["pixel_values"].shape[0] == 1
    assert batched["attention_mask"][1, 0] == 0


# ---------------------------------------------------------------------------------------------- saving and loading


@needs_shared
def test_save_and_load_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "Phi3VProcessor"
    assert (tmp_path / "chat_template.jinja").read_text() == CHAT_TEMPLATE
    tokenizer_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert "auto_map" not in saved and "auto_map" not in tokenizer_config
    for name in ("processor_config.json", "tokenizer_config.json"):
        assert "auto_map" not in (tmp_path / name).read_text()

    loaded = Phi3VProcessor.from_pretrained(tmp_path)
    assert loaded.chat_template == CHAT_TEMPLATE
    assert loaded.tokenizer.chat_template == CHAT_TEMPLATE
    assert loaded.image_processor.num_crops == processor.image_processor.num_crops
    prompts = ["<|user|>\n<|image_1|>\n Spaces  and\ttabs<|end|>\n<|assistant|>\n", "plain text"]
    images = [[noise(640, 480, 4)], []]
    before, after = processor(prompts, images), loaded(prompts, images)
    for key in before:
        torch.testing.assert_close(after[key], before[key], atol=0, rtol=0)


@needs_shared
def test_auto_processor_loads_the_checkpoint_files(checkpoint_dir, processor, tmp_path):
    register_auto_classes()
    from transformers.models.auto.image_processing_auto import AutoImageProcessor
    from transformers.models.auto.processing_auto import AutoProcessor

    loaded = AutoProcessor.from_pretrained(checkpoint_dir)
    assert type(loaded) is Phi3VProcessor
    assert type(AutoImageProcessor.from_pretrained(checkpoint_dir)) is Phi3VImageProcessor
    assert loaded.image_processor.num_crops == 4 and loaded.image_token_id == IMAGE_TOKEN_ID
    prompt = "<|user|>\n<|image_1|>\nWhat is shown?<|end|>\n<|assistant|>\n"
    image = noise(800, 600, 6)
    assert loaded(prompt, [image])["input_ids"].tolist() == processor(prompt, [image])["input_ids"].tolist()

    loaded.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(reloaded) is Phi3VProcessor
    assert reloaded(prompt, [image])["input_ids"].tolist() == processor(prompt, [image])["input_ids"].tolist()
