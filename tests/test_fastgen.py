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
    answers = [a.text for a in plain.generate(images, prompts, settings)]
    assert [a.text for a in fast.generate(images, prompts, settings)] == answers
    items = [fast.prepare_item(i, p) for i, p in zip(images, prompts, strict=True)]
    assert [a.text for a in fast.generate_prepared(items, settings)] == answers


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
    texts = [[a.text for a in b.generate(images, prompts, settings)] for b in (fast, plain)]
    assert texts[0] == texts[1]


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


def logprobs_by_hand(model, inputs: dict, row: int, new_tokens: list[int]) -> list[float]:
    """log_softmax of the logits of one forward pass over row's prompt (padding removed) + its new tokens."""
    keep = inputs["attention_mask"][row].bool()
    ids = torch.cat([inputs["input_ids"][row, keep], torch.tensor(new_tokens)])[None]
    with torch.inference_mode():
        logits = model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=inputs["pixel_values"][row : row + 1],
            image_sizes=inputs["image_sizes"][row : row + 1],
        ).logits[0]
    prompt_len = int(keep.sum())
    steps = torch.log_softmax(logits[prompt_len - 1 : prompt_len - 1 + len(new_tokens)].float(), -1)
    return steps.gather(-1, torch.tensor(new_tokens)[:, None])[:, 0].tolist()


def test_fast_decoder_log_probs_equal_log_softmax_of_a_forward_pass(model):
    """Batched, left padded, one row stopping early: each new token's log-probability is what a plain forward pass
    over prompt + answer gives, and rows past their stop get 0."""
    inputs = batch(model, [(2, 2), (1, 3), (1, 1)])
    free = reference(model, inputs, 8, 0, ())
    stops = (int(free[1, 3]),)
    tokens, logprobs = GreedyDecoder(model).generate(
        inputs, max_new_tokens=8, stop_token_ids=stops, pad_token_id=PAD, return_logprobs=True
    )
    assert torch.equal(tokens, reference(model, inputs, 8, 0, stops))
    assert logprobs.shape == tokens.shape and logprobs.dtype == torch.float32
    for row in range(3):
        row_tokens = tokens[row].tolist()
        length = next((i + 1 for i, t in enumerate(row_tokens) if t in stops), len(row_tokens))
        expected = logprobs_by_hand(model, inputs, row, row_tokens[:length])
        assert logprobs[row, :length].tolist() == pytest.approx(expected, abs=2e-4)
        assert (logprobs[row, length:] == 0).all()
        assert all(value <= 0 for value in expected)
    assert (tokens == PAD).any(), "a row must stop early for this test to mean anything"


@pytest.mark.slow
def test_backend_answers_carry_token_pieces_and_the_same_log_probs_on_both_paths(model, phi35v_dir):
    """Real Phi-3.5 tokenizer: the pieces add up to the answer text; fast decoder and generate() agree."""
    from inspector.backends.hf import HFBackend
    from inspector.models.phi3v.processing_phi3_v import Phi3VProcessor

    processor = Phi3VProcessor.from_pretrained(phi35v_dir)
    fast = HFBackend.from_loaded(model, processor, "tiny", num_crops=4)
    plain = HFBackend.from_loaded(model, processor, "tiny", num_crops=4, fast_decode=False)
    images = [Image.new("RGB", (800, 800), "red"), Image.new("RGB", (90, 300), "green")]
    prompts = ["Give the price as JSON.", "What brand is it, and what does it cost in euros?"]
    settings = GenerationSettings(max_new_tokens=10)
    fast_answers = fast.generate(images, prompts, settings)
    plain_answers = plain.generate(images, prompts, settings)
    for ours, theirs in zip(fast_answers, plain_answers, strict=True):
        assert ours.text == theirs.text and ours.token_ids == theirs.token_ids
        assert ours.has_tokens and len(ours.pieces) == len(ours.token_ids)
        assert "".join(ours.pieces).strip() == ours.text
        assert ours.logprobs == pytest.approx(theirs.logprobs, abs=2e-4)


def test_transformers_own_phi3_decodes_like_its_generate():
    """Any Phi-3 layout runs in the fast decoder, so it must hand the prefill cache to transformers' own Phi-3
    under the name the installed release reads (a wrong name is dropped silently and the prefill cache is empty)."""
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    config = Phi3Config(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        pad_token_id=0,
    )
    model = Phi3ForCausalLM(config).eval()
    assert unsupported_reason(model) is None
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 128, (3, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for row, padding in enumerate((0, 3, 7)):
        input_ids[row, :padding] = 0
        attention_mask[row, :padding] = 0
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    expected = reference(model, inputs, 8, 8, ())
    got = GreedyDecoder(model).generate(inputs, max_new_tokens=8, min_new_tokens=8, pad_token_id=0)
    assert torch.equal(got, expected)


def test_compiled_decode_step_tokens_equal_generate(model):
    """The torch.compile'd decode layer (one compiled function for every layer) gives generate()'s tokens, with
    fixed lengths and with rows stopping early, on two batch shapes (a recompile)."""
    decoder = GreedyDecoder(model, compile=True)
    inputs = batch(model, [(2, 2), (1, 3), (1, 1)])
    got = decoder.generate(
        inputs, max_new_tokens=10, min_new_tokens=10, stop_token_ids=STOP_TOKEN_IDS, pad_token_id=PAD
    )
    assert decoder.compile_error is None
    assert torch.equal(got, reference(model, inputs, 10, 10, STOP_TOKEN_IDS))
    free = reference(model, inputs, 10, 0, ())
    stops = (int(free[0, 3]), int(free[1, 5]))
    other = batch(model, [(1, 2), (2, 1)], seed=1)
    for case in (inputs, other):
        expected = reference(model, case, 10, 2, stops)
        got = decoder.generate(case, max_new_tokens=10, min_new_tokens=2, stop_token_ids=stops, pad_token_id=PAD)
        assert torch.equal(got, expected)


def test_compiled_decode_step_falls_back_to_eager_where_compiling_fails(model, monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C compiler found\nmore detail")

    decoder = GreedyDecoder(model, compile=True)
    decoder._compiled_layer = no_compiler  # what torch.compile's first call raises on a machine without a compiler
    inputs = batch(model, [(2, 2), (1, 1)])
    with pytest.warns(UserWarning, match="decoding eagerly"):
        got = decoder.generate(
            inputs, max_new_tokens=6, min_new_tokens=6, stop_token_ids=STOP_TOKEN_IDS, pad_token_id=PAD
        )
    assert decoder.compile_error == "RuntimeError: no C compiler found"
    assert torch.equal(got, reference(model, inputs, 6, 6, STOP_TOKEN_IDS))
