"""The fast greedy decoder (inspector.fastgen) gives exactly generate()'s tokens; the backend's prepared-input path
gives exactly its plain path's answers. Tiny random Phi-3.5-vision on the CPU."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import inspector  # noqa: F401  (registers phi3_v)
from inspector.backends import GenerationSettings
from inspector.fastgen import GreedyDecoder, unsupported_reason
from inspector.models.phi3v import IMAGE_TOKEN_ID, STOP_TOKEN_IDS, Phi3VForConditionalGeneration
from inspector.models.phi3v.tiny import tiny_phi3v_config

PAD = 32000


@pytest.fixture(scope="module")
def model() -> Phi3VForConditionalGeneration:
    torch.manual_seed(0)
    return Phi3VForConditionalGeneration(tiny_phi3v_config()).eval()


def batch(model, grids: list[tuple[int, int]], seed: int = 0) -> dict:
    """Left-padded prompts of different lengths, each with one image of the given crop grid."""
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    sequences, pixels, sizes = [], [], []
    for index, (rows, cols) in enumerate(grids):
        height, width = 336 * rows, 336 * cols
        ids = [1] + torch.randint(100, 30000, (2 + 3 * index,), generator=generator).tolist()
        ids += [IMAGE_TOKEN_ID] * config.num_image_tokens(height, width)
        ids += torch.randint(100, 30000, (4,), generator=generator).tolist() + [32007, 32001]
        sequences.append(ids)
        crops = torch.zeros(5, 3, 336, 336)
        real = 1 + rows * cols
        crops[:real] = torch.randn(real, 3, 336, 336, generator=generator)
        pixels.append(crops)
        sizes.append([height, width])
    longest = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), longest), PAD)
    attention_mask = torch.zeros(len(sequences), longest, dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, longest - len(ids) :] = torch.tensor(ids)
        attention_mask[row, longest - len(ids) :] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": torch.stack(pixels),
        "image_sizes": torch.tensor(sizes),
    }


def reference(model, inputs: dict, max_new: int, min_new: int, stops) -> torch.Tensor:
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            max_new_tokens=max_new,
            min_new_tokens=min_new or None,
            do_sample=False,
            eos_token_id=list(stops),
            pad_token_id=PAD,
        )
    return output[:, inputs["input_ids"].shape[1] :]


def test_fixed_length_tokens_equal_generate(model):
    inputs = batch(model, [(2, 2), (1, 3), (1, 1)])
    expected = reference(model, inputs, 10, 10, STOP_TOKEN_IDS)
    decoder = GreedyDecoder(model)
    got = decoder.generate(
        inputs, max_new_tokens=10, min_new_tokens=10, stop_token_ids=STOP_TOKEN_IDS, pad_token_id=PAD
    )
    assert got.shape == (3, 10)
    assert torch.equal(got, expected)
    # The same decoder again (state and KV buffers reused) on another batch shape.
    other = batch(model, [(1, 2), (2, 1)], seed=1)
    again = decoder.generate(
        other, max_new_tokens=10, min_new_tokens=10, stop_token_ids=STOP_TOKEN_IDS, pad_token_id=PAD
    )
    assert torch.equal(again, reference(model, other, 10, 10, STOP_TOKEN_IDS))


def test_stopping_rows_are_padded_and_generation_ends_like_generate(model):
    inputs = batch(model, [(2, 2), (1, 3), (1, 1)])
    free = reference(model, inputs, 10, 0, ())
    # Stop rows 0 and 1 at tokens they produce at steps 3 and 5; row 2 may run on (or stop on one of them).
    stops = (int(free[0, 3]), int(free[1, 5]))
    expected = reference(model, inputs, 10, 2, stops)
    assert (expected == PAD).any(), "the stop rule must end some row early for this test to mean anything"
    got = GreedyDecoder(model).generate(
        inputs, max_new_tokens=10, min_new_tokens=2, stop_token_ids=stops, pad_token_id=PAD
    )
    assert torch.equal(got, expected)


def test_min_new_tokens_masks_stop_tokens(model):
    inputs = batch(model, [(1, 1)])
    first = int(reference(model, inputs, 1, 0, ())[0, 0])
    # The first token is a stop token: without min_new_tokens it ends at once, with it generation goes on.
    decoder = GreedyDecoder(model)
    stopped = decoder.generate(inputs, max_new_tokens=6, stop_token_ids=[first], pad_token_id=PAD)
    assert stopped.tolist() == [[first]]
    forced = decoder.generate(
        inputs, max_new_tokens=6, min_new_tokens=4, stop_token_ids=[first], pad_token_id=PAD
    )
    assert torch.equal(forced, reference(model, inputs, 6, 4, [first]))
    assert forced.shape[1] >= 4 and first not in forced[0, :4].tolist()


def test_other_architectures_are_declined():
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
        )
    )
    assert "Phi-3" in unsupported_reason(llama)
    with pytest.raises(ValueError, match="does not support"):
        GreedyDecoder(llama)


def test_backend_prepared_inputs_equal_plain_path(model, phi35v_dir):
    """prepare_item (loader threads) + collate == prepare; fast decoder answers == generate() answers."""
    from inspector.backends.hf import HFBackend
    from inspector.models.phi3v.processing_phi3_v import Phi3VProcessor

    processor = Phi3VProcessor.from_pretrained(phi35v_dir)
    fast = HFBackend.from_loaded(model, processor, "tiny", num_crops=4)
    plain = HFBackend.from_loaded(model, processor, "tiny", num_crops=4, fast_decode=False)
    assert fast.fast_decoder is not None and plain.fast_decoder is None
    assert fast.prepares_items
    images = [
        Image.new("RGB", (800, 800), "red"),
        Image.new("RGB", (1000, 500), "blue"),
        Image.new("RGB", (90, 300), "green"),
    ]
    prompts = ["Give the price as JSON.", "What brand?", "Describe it."]
    batched = fast.prepare(images, prompts)
    collated = fast.collate([fast.prepare_item(i, p) for i, p in zip(images, prompts, strict=True)])
    assert set(batched.keys()) == set(collated.keys())
    for key in batched:
        assert torch.equal(batched[key], collated[key]), key
    settings = GenerationSettings(max_new_tokens=8, min_new_tokens=3)
    answers = plain.generate(images, prompts, settings)
    assert fast.generate(images, prompts, settings) == answers
    items = [fast.prepare_item(i, p) for i, p in zip(images, prompts, strict=True)]
    assert fast.generate_prepared(items, settings) == answers


def test_scan_uses_prepared_inputs(model, phi35v_dir, tmp_path, sample_dir):
    from inspector.backends.hf import HFBackend
    from inspector.models.phi3v.processing_phi3_v import Phi3VProcessor
    from inspector.scan import ScanConfig, Scanner
    from inspector.store import open_store

    processor = Phi3VProcessor.from_pretrained(phi35v_dir)
    backend = HFBackend.from_loaded(model, processor, "tiny", num_crops=4)
    calls = []
    original = backend.generate_prepared
    backend.generate_prepared = lambda items, settings: calls.append(len(items)) or original(items, settings)
    config = ScanConfig(
        inputs=[str(sample_dir)],
        model="tiny",
        db=str(tmp_path / "r.db"),
        report=None,
        batch_size=3,
        limit=5,
        max_new_tokens=4,
    )
    summary = Scanner(config, backend, open_store(config.db)).run()
    assert (summary.processed, summary.failed) == (5, 0)
    assert sum(calls) == 5


def test_answers_past_the_fast_decoders_length_fall_back_to_generate(phi35v_dir):
    """Prompt + answer longer than long-rope's original length: the fast decoder declines, generate() answers."""
    from inspector.backends.hf import HFBackend
    from inspector.models.phi3v.processing_phi3_v import Phi3VProcessor

    torch.manual_seed(0)
    model = Phi3VForConditionalGeneration(tiny_phi3v_config()).eval()
    processor = Phi3VProcessor.from_pretrained(phi35v_dir)
    fast = HFBackend.from_loaded(model, processor, "tiny", num_crops=4)
    plain = HFBackend.from_loaded(model, processor, "tiny", num_crops=4, fast_decode=False)
    images, prompts = [Image.new("RGB", (400, 300), "red")], ["Give the price as JSON."]
    prompt_len = fast.prepare(images, prompts)["input_ids"].shape[1]
    model.config.original_max_position_embeddings = prompt_len + 4  # what the fast decoder checks against
    settings = GenerationSettings(max_new_tokens=8, min_new_tokens=8)
    assert fast.generate(images, prompts, settings) == plain.generate(images, prompts, settings)


@pytest.mark.parametrize(("name", "value"), [("min_new_tokens", 3), ("min_length", 2000)])
def test_generation_config_rules_generate_applies_make_it_decline(model, name, value):
    """generate() applies these from the checkpoint's generation config; the fast decoder does not, so it declines."""
    assert unsupported_reason(model) is None
    setattr(model.generation_config, name, value)
    try:
        assert name in unsupported_reason(model)
    finally:
        setattr(model.generation_config, name, None)
    assert unsupported_reason(model) is None
