"""The keyword under which the installed transformers passes the KV cache: `past_key_values` or `cache`.

transformers 5.24 renamed `past_key_values` to `cache` in model and decoder-layer forwards, the mask builders,
the model outputs and `generate()` (which now hands models only `cache=`). Its decoder layers still take the old
name as a deprecated alias but take `**kwargs` too, so a model that hands a layer the other release's name is not
refused: the layer silently runs without the cache it was meant to use (batched `generate()` then gives other
answers than one-by-one). We read the name from the signature of the layer we call (a feature test, not a version
switch) and use that one name everywhere; tests check that the mask builder, the model outputs and `generate()`
of the installed release agree with it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

#: Newest first: the name a release's functions take the cache under.
CACHE_KEYWORDS = ("cache", "past_key_values")


def accepted_cache_keyword(function: Callable) -> str:
    """The parameter under which `function` takes the KV cache (its real signature, past deprecation wrappers)."""
    parameters = inspect.signature(function).parameters
    for name in CACHE_KEYWORDS:
        if name in parameters:
            return name
    raise RuntimeError(
        f"{function.__qualname__} takes the KV cache under none of {', '.join(CACHE_KEYWORDS)}: this transformers "
        "release is outside the range inspector supports (see pyproject.toml); install a supported one."
    )


def _layer_cache_keyword() -> str:
    from transformers.models.phi3.modeling_phi3 import Phi3DecoderLayer

    return accepted_cache_keyword(Phi3DecoderLayer.forward)


#: The installed release's name for the KV cache, as its Phi-3 decoder layer takes it.
CACHE_KEYWORD: str = _layer_cache_keyword()


def one_cache(past_key_values: object | None, cache: object | None) -> object | None:
    """The cache a forward was given under either name (callers and `generate()` of either release use one of
    them). Two different caches at once are a caller bug: refuse rather than silently use one of them."""
    if past_key_values is not None and cache is not None and past_key_values is not cache:
        raise ValueError("Pass the KV cache once, as `cache` or `past_key_values`, not two different caches.")
    return cache if cache is not None else past_key_values
