"""Native Phi-3.5-vision model: checkpoint layout, image features, forward/loss, batched generation, loading.

Tiny random models (2 text layers of width 64, a 2-layer CLIP of width 32 at the real 336 px crop size), CPU only.
Tests that need the official checkpoint files (config, weight index, tokenizer) skip when ../shared is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import shared_phi35v_dir

import inspector  # noqa: F401  (registers the Auto classes)
from inspector.models.phi3v import IMAGE_TOKEN_ID, STOP_TOKEN_IDS, Phi3VConfig, Phi3VForConditionalGeneration
from inspector.models.phi3v.tiny import save_tiny_phi3v, tiny_phi3v_config, tiny_phi3v_config_dict

SHARED = shared_phi35v_dir() or Path("absent")
needs_shared = pytest.mark.skipif(shared_phi35v_dir() is None, reason="../shared/phi35v is absent")
CROP = 336


def tiny_model(seed: int = 0, **overrides) -> Phi3VForConditionalGeneration:
    torch.manual_seed(seed)
    return Phi3VForConditionalGeneration(tiny_phi3v_config(**overrides)).eval()


def build_inputs(config: Phi3VConfig, prompts: list[dict], padding_side: str = "left", seed: int = 0) -> dict:
    """Inputs as the processor lays them out, built by hand: text ids around runs of `<|image|>` tokens.

    Each prompt: {"before": n text tokens, "images": [(height, width), ...], "after": n text tokens}.
    Image pixels are random for real crops and zero for the padding up to 5 crops per image.
    """
    generator = torch.Generator().manual_seed(seed)
    sequences, pixel_values, image_sizes = [], [], []
    for prompt in prompts:
        ids = [1] + torch.randint(100, 30000, (prompt["before"],), generator=generator).tolist()
        for height, width in prompt["images"]:
            ids += [IMAGE_TOKEN_ID] * config.num_image_tokens(height, width)
            ids += torch.randint(100, 30000, (3,), generator=generator).tolist()
            crops = torch.zeros(5, 3, CROP, CROP)
            real = 1 + (height // CROP) * (width // CROP)
            crops[:real] = torch.randn(real, 3, CROP, CROP, generator=generator)
            pixel_values.append(crops)
            image_sizes.append([height, width])
        ids += torch.randint(100, 30000, (prompt["after"],), generator=generator).tolist() + [32007, 32001]
        sequences.append(ids)
    longest = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), longest), config.pad_token_id)
    attention_mask = torch.zeros(len(sequences), longest, dtype=torch.long)
    for row, ids in enumerate(sequences):
        span = slice(longest - len(ids), longest) if padding_side == "left" else slice(0, len(ids))
        input_ids[row, span] = torch.tensor(ids)
        attention_mask[row, span] = 1
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if pixel_values:
        inputs["pixel_values"] = torch.stack(pixel_values)
        inputs["image_sizes"] = torch.tensor(image_sizes)
    return inputs


#: Prompts of different lengths with images of different crop grids (1x2, 2x1, two of 1x1).
MIXED = [
    {"before": 4, "images": [(CROP, 2 * CROP)], "after": 7},
    {"before": 9, "images": [(2 * CROP, CROP)], "after": 2},
    {"before": 2, "images": [(CROP, CROP), (CROP, CROP)], "after": 5},
]
SMALL = [{"before": 3, "images": [(CROP, CROP)], "after": 4}]


@pytest.fixture(scope="module")
def model() -> Phi3VForConditionalGeneration:
    return tiny_model()


# ---------------------------------------------------------------------------------------------------- layout


@needs_shared
def test_meta_model_from_checkpoint_config_has_exactly_the_checkpoint_weight_names():
    config = Phi3VConfig.from_pretrained(SHARED)
    with torch.device("meta"):
        full = Phi3VForConditionalGeneration(config)
    index = json.loads((SHARED / "model.safetensors.index.json").read_text())["weight_map"]
    assert sorted(full.state_dict()) == sorted(index)
    assert len(index) == 592
    # 8,293,242,880 bytes in bf16, as the checkpoint's index says.
    assert (
        sum(p.numel() for p in full.parameters()) * 2
        == json.loads((SHARED / "model.safetensors.index.json").read_text())["metadata"]["total_size"]
    )


@needs_shared
def test_checkpoint_config_loads_unmodified_and_saves_without_remote_code(tmp_path):
    config = Phi3VConfig.from_pretrained(SHARED)
    rope = config.rope_parameters
    assert rope["rope_type"] == "longrope"
    assert len(rope["short_factor"]) == len(rope["long_factor"]) == 3072 // 32 // 2
    assert rope["original_max_position_embeddings"] == 4096 and config.max_position_embeddings == 131072
    assert config._attn_implementation != "flash_attention_2"
    assert config.vision_config.hidden_size == 1024 and config.vision_config.num_hidden_layers == 24
    assert config.num_image_tokens(2 * CROP, 2 * CROP) == 757

    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "phi3_v"
    assert "auto_map" not in saved and "_attn_implementation" not in saved
    assert "vision_config" not in saved  # the default ViT-L/14-336 tower needs no entry
    again = Phi3VConfig.from_pretrained(tmp_path)
    assert again.rope_parameters == config.rope_parameters
    assert again.vision_config.to_dict() == config.vision_config.to_dict()


def test_vision_overrides_survive_save_and_load(tmp_path):
    # 768 and 12 are CLIPVisionConfig's own defaults: they must still be written, since ours are ViT-L's.
    config = tiny_phi3v_config(vision_config={"hidden_size": 768, "num_attention_heads": 12})
    config.save_pretrained(tmp_path)
    again = Phi3VConfig.from_pretrained(tmp_path)
    assert again.vision_config.hidden_size == 768 and again.vision_config.num_attention_heads == 12
    assert again.vision_config.num_hidden_layers == 2


def test_config_rejects_inconsistent_settings():
    with pytest.raises(ValueError, match="image_dim_out"):
        tiny_phi3v_config(img_processor={"image_dim_out": 48})
    with pytest.raises(ValueError, match="rope_scaling type"):
        tiny_phi3v_config(rope_scaling={"type": "dynamic", "factor": 2.0})
    with pytest.raises(ValueError, match="short_factor"):
        tiny_phi3v_config(rope_scaling={"type": "su", "short_factor": [1.0] * 3, "long_factor": [1.0] * 3})
    with pytest.raises(ValueError, match="hd_transform_order"):
        tiny_phi3v_config(embd_layer={"hd_transform_order": "glb_sub"})


# ---------------------------------------------------------------------------------------------------- image features


def test_vision_tower_returns_clip_second_to_last_hidden_state_without_cls(model):
    from transformers import CLIPVisionModel

    tower = model.model.vision_embed_tokens.img_processor
    clip = CLIPVisionModel(model.config.vision_config).eval()
    clip.load_state_dict(tower.vision_model.state_dict())
    pixels = torch.randn(2, 3, CROP, CROP)
    with torch.no_grad():
        ours = tower(pixels)
        full = clip(pixel_values=pixels, output_hidden_states=True)
    assert ours.shape == (2, 24 * 24, 32)
    torch.testing.assert_close(ours, full.hidden_states[-2][:, 1:], rtol=0, atol=0)


def expected_hd_features(embedding, patches: torch.Tensor, grids: list[tuple[int, int]]) -> torch.Tensor:
    """The sub_glb layout written out token by token (independent of the model's reshapes)."""

    def merged(crop: int, row: int, col: int) -> torch.Tensor:
        top, left = 2 * row, 2 * col
        return torch.cat([patches[crop, (top + dr) * 24 + left + dc] for dr in (0, 1) for dc in (0, 1)])

    tokens, crop0 = [], 0
    separator, between = embedding.sub_GN.reshape(-1), embedding.glb_GN.reshape(-1)
    for rows, cols in grids:
        for y in range(rows * 12):
            for x in range(cols * 12):
                sub_crop = crop0 + 1 + (y // 12) * cols + x // 12
                tokens.append(merged(sub_crop, y % 12, x % 12))
            tokens.append(separator)
        tokens.append(between)
        for y in range(12):
            tokens.extend(merged(crop0, y, x) for x in range(12))
            tokens.append(separator)
        crop0 += 1 + rows * cols
    return torch.stack(tokens)


def test_hd_features_follow_the_sub_glb_layout(model):
    embedding = model.model.vision_embed_tokens
    grids = [(1, 2), (2, 1), (1, 1)]
    crops = sum(1 + rows * cols for rows, cols in grids)
    patches = torch.randn(crops, 24 * 24, 32)
    with torch.no_grad():
        embedding.sub_GN.copy_(torch.randn_like(embedding.sub_GN))
        embedding.glb_GN.copy_(torch.randn_like(embedding.glb_GN))
        ours = embedding.hd_features(patches, grids)
        expected = expected_hd_features(embedding, patches, grids)
        embedding.sub_GN.zero_()
        embedding.glb_GN.zero_()
    assert ours.shape[0] == sum(model.config.num_image_tokens(r * CROP, c * CROP) for r, c in grids)
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------- forward


def test_forward_shapes_logits_to_keep_and_hidden_states(model):
    inputs = build_inputs(model.config, SMALL)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        last = model(**inputs, logits_to_keep=1)
    batch, length = inputs["input_ids"].shape
    assert out.logits.shape == (batch, length, 32064)
    assert last.logits.shape == (batch, 1, 32064)
    torch.testing.assert_close(last.logits[:, 0], out.logits[:, -1])
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    torch.testing.assert_close(
        out.hidden_states[0][:, :3], model.get_input_embeddings()(inputs["input_ids"][:, :3])
    )
    assert torch.isfinite(out.logits).all()


def test_eager_attention_matches_sdpa():
    model = tiny_model(seed=6)
    inputs = build_inputs(model.config, MIXED[:2])  # left padding: the masks matter
    with torch.no_grad():
        sdpa = model.model(**inputs).last_hidden_state
        model.set_attn_implementation("eager")
        eager = model.model(**inputs).last_hidden_state
    keep = inputs["attention_mask"].bool()
    torch.testing.assert_close(eager[keep], sdpa[keep], rtol=1e-4, atol=1e-5)


def test_padding_crops_never_reach_the_vision_tower(model):
    inputs = build_inputs(model.config, MIXED[:2])
    noisy = dict(inputs, pixel_values=inputs["pixel_values"].clone())
    noisy["pixel_values"][:, 3:] = torch.randn_like(
        noisy["pixel_values"][:, 3:]
    )  # both images have 3 real crops
    real_change = dict(inputs, pixel_values=inputs["pixel_values"].clone())
    real_change["pixel_values"][0, 1] += 1.0
    with torch.no_grad():
        clean = model.model(**inputs).last_hidden_state
        torch.testing.assert_close(model.model(**noisy).last_hidden_state, clean, rtol=0, atol=0)
        assert not torch.allclose(model.model(**real_change).last_hidden_state, clean)


def test_mismatched_image_tokens_and_missing_images_are_clear_errors(model):
    inputs = build_inputs(model.config, MIXED[:1])
    short = dict(inputs, input_ids=inputs["input_ids"].clone())
    short["input_ids"][0, -3] = IMAGE_TOKEN_ID  # one image token too many
    with pytest.raises(ValueError, match="image tokens"):
        model(**short)
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    with pytest.raises(ValueError, match="image_sizes"):
        model(**{k: v for k, v in inputs.items() if k != "image_sizes"})


def test_loss_ignores_minus_100_labels(model):
    longer = {"before": 9, "images": [(CROP, CROP)], "after": 3}
    inputs = build_inputs(model.config, [*SMALL, longer], padding_side="right", seed=1)
    assert not inputs["attention_mask"].all()
    labels = inputs["input_ids"].clone()
    labels[:, :-6] = -100  # only the last few tokens are "answer"
    labels[inputs["attention_mask"] == 0] = -100
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    logits, targets = out.logits[:, :-1].float(), labels[:, 1:]
    keep = targets != -100
    expected = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(out.loss, expected)
    everything = torch.nn.functional.cross_entropy(logits.flatten(0, 1), inputs["input_ids"][:, 1:].flatten())
    assert not torch.isclose(out.loss, everything)


# ---------------------------------------------------------------------------------------------------- generation


def new_tokens(sequence: torch.Tensor) -> list[int]:
    tokens = sequence.tolist()
    for position, token in enumerate(tokens):
        if token in STOP_TOKEN_IDS:
            return tokens[: position + 1]
    return tokens


def test_batched_greedy_generation_equals_one_by_one():
    model = tiny_model(seed=1)
    assert model.generation_config.eos_token_id == list(STOP_TOKEN_IDS)
    settings = {"max_new_tokens": 8, "do_sample": False}
    batch = build_inputs(model.config, MIXED)
    vision_calls = []
    model.model.vision_embed_tokens.register_forward_hook(lambda *_: vision_calls.append(1))
    with torch.no_grad():
        batched = model.generate(**batch, **settings)[:, batch["input_ids"].shape[1] :]
    assert len(vision_calls) == 1  # images are encoded once, at prefill, for the whole batch
    assert max(len(new_tokens(row)) for row in batched) >= 4  # not a vacuous comparison of empty answers
    with torch.no_grad():
        for row in range(len(MIXED)):
            single = slice_batch(batch, row)
            alone = model.generate(**single, **settings)[0, single["input_ids"].shape[1] :]
            assert new_tokens(batched[row]) == new_tokens(alone), f"prompt {row}"


def slice_batch(batch: dict, row: int) -> dict:
    """One prompt of a left-padded batch, unpadded, with only its own images."""
    keep = batch["attention_mask"][row].bool()
    images_before = sum(len(p["images"]) for p in MIXED[:row])
    images = slice(images_before, images_before + len(MIXED[row]["images"]))
    return {
        "input_ids": batch["input_ids"][row, keep][None],
        "attention_mask": batch["attention_mask"][row, keep][None],
        "pixel_values": batch["pixel_values"][images],
        "image_sizes": batch["image_sizes"][images],
    }


def test_static_cache_generation_equals_dynamic_cache(model):
    batch = build_inputs(model.config, MIXED[:2])
    settings = {"max_new_tokens": 5, "do_sample": False}
    with torch.no_grad():
        dynamic = model.generate(**batch, **settings)
        static = model.generate(**batch, **settings, cache_implementation="static")
    assert torch.equal(dynamic, static)


def test_generation_stops_each_sequence_at_end_of_turn():
    model = tiny_model(seed=2)
    batch = build_inputs(model.config, MIXED[:2])
    with torch.no_grad():
        free = model.generate(**batch, max_new_tokens=4, do_sample=False)[:, batch["input_ids"].shape[1] :]
        # Make the first sequence's second token an end of turn: only that sequence stops.
        model.generation_config.eos_token_id = [int(free[0, 1])]
        stopped = model.generate(**batch, max_new_tokens=4, do_sample=False)[:, batch["input_ids"].shape[1] :]
    assert stopped[0, 2:].tolist() == [model.generation_config.pad_token_id] * 2
    if int(free[0, 1]) not in free[1].tolist():
        assert torch.equal(stopped[1], free[1])


# ---------------------------------------------------------------------------------------------------- save / load


def test_save_load_round_trip_keeps_every_weight_name_and_the_logits(tmp_path, model):
    from safetensors import safe_open

    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as saved:
        assert sorted(saved.keys()) == sorted(model.state_dict())
    loaded, info = Phi3VForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert sorted(loaded.state_dict()) == sorted(model.state_dict())
    inputs = build_inputs(model.config, SMALL)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "phi3_v" and "auto_map" not in config
    assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == list(
        STOP_TOKEN_IDS
    )


@needs_shared
def test_auto_classes_load_an_original_checkpoint_folder_without_remote_code(tmp_path):
    from PIL import Image
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
    )

    folder = save_tiny_phi3v(tmp_path / "tiny", tokenizer_dir=SHARED, seed=3, original_format=True)
    written = json.loads((folder / "config.json").read_text())
    assert "auto_map" in written and written["rope_scaling"]["type"] == "su"

    assert type(AutoConfig.from_pretrained(folder)) is Phi3VConfig
    model, info = AutoModelForImageTextToText.from_pretrained(folder, output_loading_info=True)
    assert type(model) is Phi3VForConditionalGeneration
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config._attn_implementation == "sdpa"
    assert model.generation_config.eos_token_id == list(STOP_TOKEN_IDS)  # the folder's says 2
    causal = AutoModelForCausalLM.from_pretrained(folder)
    base = AutoModel.from_pretrained(folder)
    reference = model.state_dict()
    assert all(torch.equal(value, reference[name]) for name, value in causal.state_dict().items())
    assert all(torch.equal(value, reference[f"model.{name}"]) for name, value in base.state_dict().items())

    processor = AutoProcessor.from_pretrained(folder)
    prompts = [
        f"<|user|>\n<|image_1|>\nWhat is {word}?<|end|>\n<|assistant|>\n" for word in ("this", "the price")
    ]
    images = [[Image.new("RGB", (500, 300), "red")], [Image.new("RGB", (300, 800), "blue")]]
    batch = processor(text=prompts, images=images, padding_side="left", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=3, do_sample=False)
        for row in range(2):
            single = processor(text=prompts[row], images=images[row], return_tensors="pt")
            alone = model.generate(**single, max_new_tokens=3, do_sample=False)
            width = batch["input_ids"].shape[1]
            assert new_tokens(out[row, width:]) == new_tokens(alone[0, single["input_ids"].shape[1] :])


def test_save_tiny_phi3v_is_seeded(tmp_path):
    first = save_tiny_phi3v(tmp_path / "a", seed=5)
    second = save_tiny_phi3v(tmp_path / "b", seed=5)
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert tiny_phi3v_config_dict()["rope_scaling"]["type"] == "su"


def test_register_is_idempotent():
    from transformers import AutoConfig

    from inspector.models import register

    register()
    register()
    assert type(AutoConfig.for_model("phi3_v")) is Phi3VConfig


# ---------------------------------------------------------------------------------------------------- training


def test_lora_forward_backward_on_text_and_vision_projections():
    from peft import LoraConfig, get_peft_model

    model = tiny_model(seed=4)
    targets = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    vision = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "img_projection.0", "img_projection.2"]
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets + vision))
    peft_model.train()
    inputs = build_inputs(model.config, SMALL, padding_side="right")
    labels = torch.where(inputs["attention_mask"].bool(), inputs["input_ids"], -100)
    labels[labels == IMAGE_TOKEN_ID] = -100
    loss = peft_model(**inputs, labels=labels).loss
    loss.backward()
    grads = {name: p.grad for name, p in peft_model.named_parameters() if p.requires_grad}
    assert grads and all("lora_" in name for name in grads)
    for target in targets + vision:
        hit = [g for name, g in grads.items() if f"{target}.lora_B" in name]
        assert hit and any(g is not None and g.abs().sum() > 0 for g in hit), target
    assert all(p.grad is None for name, p in peft_model.named_parameters() if "lora_" not in name)


def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_gradients():
    inputs = build_inputs(tiny_phi3v_config(), SMALL, padding_side="right")
    labels = torch.where(inputs["attention_mask"].bool(), inputs["input_ids"], -100)

    def gradients(checkpointing: bool) -> tuple[dict, int]:
        model = tiny_model(seed=5).train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        calls = []
        model.model.layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
        model(**inputs, labels=labels).loss.backward()
        return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}, len(calls)

    plain, plain_calls = gradients(False)
    checkpointed, checkpointed_calls = gradients(True)
    assert (plain_calls, checkpointed_calls) == (1, 2)  # the layer ran again during backward
    assert plain.keys() == checkpointed.keys()
    assert any("img_processor" in name for name in plain) and any("glb_GN" in name for name in plain)
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-4, atol=1e-6, msg=name)
