"""The KV cache reaches the layers under the name the installed transformers uses (`past_key_values` before 5.24,
`cache` from 5.24): a cache handed over under the other name is silently dropped by layers that take `**kwargs`,
which is how transformers 5.24 broke batched `generate()`. CI runs this file on the floor and the newest release."""

from __future__ import annotations

import dataclasses
import logging
import warnings

import pytest
import torch
from test_phi3v_model import MIXED, SMALL, build_inputs, tiny_model
from transformers.cache_utils import DynamicCache

from inspector.models.cache_keyword import CACHE_KEYWORD, CACHE_KEYWORDS, accepted_cache_keyword, one_cache


def test_every_transformers_interface_we_call_takes_the_cache_under_one_name():
    """We derive one name from the decoder layer; a release that renames only part of its API must turn CI red."""
    from transformers.generation import GenerationMixin
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
    from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
    from transformers.models.phi3.modeling_phi3 import Phi3Attention, Phi3DecoderLayer, Phi3ForCausalLM

    callables = {
        "Phi3DecoderLayer.forward": Phi3DecoderLayer.forward,
        "Phi3Attention.forward": Phi3Attention.forward,
        "Phi3ForCausalLM.forward": Phi3ForCausalLM.forward,
        "create_causal_mask": create_causal_mask,
        "create_sliding_window_causal_mask": create_sliding_window_causal_mask,
        "GenerationMixin.prepare_inputs_for_generation": GenerationMixin.prepare_inputs_for_generation,
    }
    found = {name: accepted_cache_keyword(function) for name, function in callables.items()}
    for output in (BaseModelOutputWithPast, CausalLMOutputWithPast):
        fields = {field.name for field in dataclasses.fields(output)}
        found[output.__name__] = next(name for name in CACHE_KEYWORDS if name in fields)
    assert found == dict.fromkeys(found, CACHE_KEYWORD)


def test_a_signature_without_either_name_is_a_clear_error():
    def forward(hidden_states, kv=None, **kwargs):
        return hidden_states

    assert accepted_cache_keyword(lambda x, past_key_values=None, **kw: x) == "past_key_values"
    assert accepted_cache_keyword(lambda x, cache=None, **kw: x) == "cache"
    with pytest.raises(RuntimeError, match="takes the KV cache under none of cache, past_key_values"):
        accepted_cache_keyword(forward)


@pytest.mark.parametrize("keyword", CACHE_KEYWORDS)
def test_a_cache_passed_under_either_name_is_filled_and_read(keyword):
    """Prefill into a caller's cache, then one decode step from it: the step's logits equal a full forward's."""
    model = tiny_model(seed=3)
    inputs = build_inputs(model.config, MIXED[:2])
    length = inputs["input_ids"].shape[1]
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        # Left padding: positions count real tokens only, as generate() computes them.
        prompt_positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        prefill = model(**inputs, position_ids=prompt_positions, use_cache=True, **{keyword: cache})
        assert cache.get_seq_length() == length  # the layers wrote into the cache we passed
        assert getattr(prefill, CACHE_KEYWORD) is cache
        next_ids = prefill.logits[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([inputs["attention_mask"], torch.ones_like(next_ids)], dim=1)
        positions = torch.cat([prompt_positions, prompt_positions[:, -1:] + 1], dim=1)
        step = model(
            input_ids=next_ids,
            attention_mask=mask,
            position_ids=positions[:, -1:],
            use_cache=True,
            **{keyword: cache},
        )
        assert cache.get_seq_length() == length + 1
        full = model(
            input_ids=torch.cat([inputs["input_ids"], next_ids], dim=1),
            attention_mask=mask,
            position_ids=positions,
            pixel_values=inputs["pixel_values"],
            image_sizes=inputs["image_sizes"],
        )
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], rtol=1e-5, atol=1e-5)


def test_two_different_caches_are_refused_and_one_cache_under_both_names_is_accepted():
    first, second = object(), object()
    assert one_cache(first, None) is first
    assert one_cache(None, second) is second
    assert one_cache(first, first) is first
    assert one_cache(None, None) is None
    with pytest.raises(ValueError, match="not two different caches"):
        one_cache(first, second)
    model = tiny_model()
    inputs = build_inputs(model.config, SMALL)
    config = model.config
    with pytest.raises(ValueError, match="not two different caches"):
        model(**inputs, past_key_values=DynamicCache(config=config), cache=DynamicCache(config=config))


def test_forward_and_generate_use_no_deprecated_cache_name():
    """The installed release never has to translate (or drop) a cache name we hand it."""
    model = tiny_model(seed=1)
    inputs = build_inputs(model.config, MIXED)
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    transformers_logger = logging.getLogger("transformers")
    transformers_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            model(**inputs, use_cache=True)
            model.generate(**inputs, max_new_tokens=3, do_sample=False)
            model.generate(**inputs, max_new_tokens=3, do_sample=False, cache_implementation="static")
    finally:
        transformers_logger.removeHandler(handler)
    messages += [str(warning.message) for warning in caught]
    assert [m for m in messages if "past_key_values" in m or "`cache`" in m] == []
