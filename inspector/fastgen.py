"""Fast greedy decoding for Phi-3-style decoders (our native Phi-3.5-vision): same tokens as `generate()`.

`transformers`' `generate()` spends tens of milliseconds of Python per decode step (cache bookkeeping, mask building,
logits processors), whatever the batch size; on a GPU that, not arithmetic, is what a scan waits for. This module:

1. prefills with the model's own forward (images included, `logits_to_keep=1`), through a cache that copies each
   layer's keys and values into a preallocated static KV buffer as they are computed (no second copy kept);
2. decodes with a short loop written against the model's own modules (norms, projections, MLP, rotary table,
   `scaled_dot_product_attention` over the static buffer under a padding mask), which on CUDA is captured once per
   batch shape in a CUDA graph and replayed: one launch per generated token instead of ~1,000.

Everything `generate()` does for greedy search is reproduced: position ids from the attention mask (left padding),
`min_new_tokens` (stop tokens masked), per-sequence stop with padding of finished rows, stop when all rows are done.
On CPU (CI) it runs the same step eagerly, and tests check its tokens equal `generate()`'s.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache
from transformers.models.phi3 import modeling_phi3

from inspector.models.cache_keyword import CACHE_KEYWORD

#: How often (in steps) a CUDA-graph decode loop checks whether every sequence has stopped (each check syncs).
STOP_CHECK_EVERY = 8


def unsupported_reason(model: torch.nn.Module) -> str | None:
    """Why `GreedyDecoder` cannot run this model (None when it can): it needs the Phi-3 decoder layout."""
    from transformers.models.phi3.modeling_phi3 import Phi3DecoderLayer

    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if inner is None or layers is None or not hasattr(model, "lm_head"):
        return f"{type(model).__name__} has no model.layers / lm_head"
    if not all(isinstance(layer, Phi3DecoderLayer) for layer in layers):
        return "its decoder layers are not Phi-3 decoder layers"
    for name in ("embed_tokens", "norm", "rotary_emb"):
        if not hasattr(inner, name):
            return f"its decoder has no {name}"
    config = model.config
    if getattr(config, "num_attention_heads", None) != getattr(config, "num_key_value_heads", None):
        return "grouped-query attention is not implemented in the fast decoder"
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        for name, neutral in (
            ("repetition_penalty", 1.0),
            ("no_repeat_ngram_size", 0),
            ("bad_words_ids", None),
            ("suppress_tokens", None),
            ("begin_suppress_tokens", None),
            ("forced_bos_token_id", None),
            ("forced_eos_token_id", None),
            ("num_beams", 1),
            ("min_length", 0),
            ("min_new_tokens", 0),
            ("sequence_bias", None),
            ("exponential_decay_length_penalty", None),
        ):
            value = getattr(generation, name, None)
            if value not in (None, neutral):
                return f"its generation config sets {name}={value!r}, which the fast decoder does not apply"
    return None


def _decode_layer(
    layer: torch.nn.Module,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """One Phi-3 decoder layer for one new token per row: the layer's own modules, its key and value written into
    the static cache at `slot`, attention over the cache under `mask`. Module-level and free of Python state so
    that `torch.compile` traces it once for all layers (their weights are inputs, not constants)."""
    attention = layer.self_attn
    batch = hidden.shape[0]
    heads, head_dim = key_cache.shape[1], key_cache.shape[3]
    width = heads * head_dim
    qkv = attention.qkv_proj(layer.input_layernorm(hidden))
    query = qkv[..., :width].view(batch, 1, heads, head_dim).transpose(1, 2)
    key = qkv[..., width : 2 * width].view(batch, 1, heads, head_dim).transpose(1, 2)
    value = qkv[..., 2 * width :].view(batch, 1, heads, head_dim).transpose(1, 2)
    query, key = modeling_phi3.apply_rotary_pos_emb(query, key, cos, sin)
    key_cache.index_copy_(2, slot, key)
    value_cache.index_copy_(2, slot, value)
    attended = F.scaled_dot_product_attention(
        query, key_cache, value_cache, attn_mask=mask, scale=attention.scaling
    )
    hidden = hidden + attention.o_proj(attended.transpose(1, 2).reshape(batch, 1, width))
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


class _CopyToStaticCache(DynamicCache):
    """A DynamicCache for the single prefill forward that also writes each layer's keys/values into the static
    buffers, then keeps only views of those (so the prefill holds one copy of the cache, not two)."""

    def __init__(self, config, targets: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__(config=config)
        self._targets = targets

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        length = keys.shape[-2]
        key_buffer, value_buffer = self._targets[layer_idx]
        key_buffer[:, :, :length].copy_(keys)
        value_buffer[:, :, :length].copy_(values)
        layer = self.layers[layer_idx]
        if getattr(layer, "keys", None) is keys:
            layer.keys = key_buffer[:, :, :length]
            layer.values = value_buffer[:, :, :length]
        return keys, values


@dataclass
class _DecodeState:
    """Static tensors one decode step reads and updates in place (the CUDA graph's inputs and outputs)."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    #: (B,) token fed to the next step; its position id; (1,) KV slot it is written to; (1,) index of the step.
    tokens: torch.Tensor
    positions: torch.Tensor
    slot: torch.Tensor
    step: torch.Tensor
    #: (B, 1, 1, max_len + 1) which KV slots each row may attend to (one spare column for the last update).
    mask: torch.Tensor
    unfinished: torch.Tensor
    #: (B, max_new_tokens) chosen tokens, pad where a row had already stopped.
    out: torch.Tensor
    #: (B, max_new_tokens) float32 log-probability of each chosen token (0 where a row had already stopped).
    logprobs: torch.Tensor
    graph: torch.cuda.CUDAGraph | None = None


class GreedyDecoder:
    """Greedy generation with a static KV cache and (on CUDA) a CUDA-graph decode step.

    `generate(inputs, ...)` takes the processor's batch (left padded, on the model's device) and returns the new
    tokens, exactly what `model.generate(..., do_sample=False)` returns after the prompt.
    """

    def __init__(
        self, model: torch.nn.Module, *, cuda_graphs: bool | None = None, compile: bool = False
    ) -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"fast greedy decoding does not support this model: {reason}")
        self.model = model
        self.decoder = model.model
        config = model.config
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.device = model.lm_head.weight.device
        self.dtype = model.lm_head.weight.dtype
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        #: `compile=True`: each decode step's layers run through one `torch.compile`d function (norms, rotary,
        #: cache writes, residuals and SiLU·up fused: ~3x fewer kernels per step), captured in the CUDA graph like
        #: the eager step. Where compiling fails, the eager step runs and `compile_error` says why.
        self._compiled_layer = None
        if compile:
            from inspector import speedups

            speedups.allow_recompiles()  # one variant per batch shape and cache length
            self._compiled_layer = torch.compile(
                _decode_layer, backend=speedups.COMPILE_BACKEND, fullgraph=True, dynamic=None
            )
        self._compile_checked = False
        self.compile_error: str | None = None
        self._storage: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._states: dict[tuple, _DecodeState] = {}
        self._rope: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._pool = None
        self._stop_mask_cache: dict[tuple[int, ...], torch.Tensor] = {}
        #: Filled by each `generate`: seconds in prefill and in decoding (synchronised), steps run, graphs captured.
        self.last_timing: dict = {}
        #: Sums over every `generate` since the last `reset_totals()` (benchmarks read them).
        self.totals: dict = {}
        self.reset_totals()

    # -- buffers ---------------------------------------------------------------------------------------------

    def kv_bytes_per_token(self) -> int:
        """Bytes of keys and values one token takes in the cache (all layers)."""
        element = torch.finfo(self.dtype).bits // 8
        return 2 * len(self.decoder.layers) * self.num_heads * self.head_dim * element

    def _kv_views(self, batch: int, max_len: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(B, heads, max_len, head_dim) key and value buffers per layer, views of one storage per layer so that
        every batch shape (and its CUDA graph) shares the same memory. Grows (dropping captured graphs) if needed."""
        shape = (batch, self.num_heads, max_len, self.head_dim)
        numel = batch * self.num_heads * max_len * self.head_dim
        if not self._storage or self._storage[0][0].numel() < numel:
            self.release()
            # Zeros, not empty: masked-out slots still enter the attention arithmetic (a 0 weight times a NaN left
            # in uninitialised memory is NaN), so every slot must always hold finite values.
            self._storage = [
                (
                    torch.zeros(numel, dtype=self.dtype, device=self.device),
                    torch.zeros(numel, dtype=self.dtype, device=self.device),
                )
                for _ in self.decoder.layers
            ]
        return [(k[:numel].view(shape), v[:numel].view(shape)) for k, v in self._storage]

    def _rope_table(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for positions 0..length-1 from the model's own rotary embedding (one call, so the same values
        as per-step calls: each entry is one product position * frequency)."""
        limit = getattr(self.config, "original_max_position_embeddings", None)
        if limit and length > limit:
            raise ValueError(
                f"sequence of {length} tokens is past original_max_position_embeddings ({limit}), where long-rope "
                "switches factors mid-generation; use generate() for such lengths"
            )
        if length not in self._rope:
            positions = torch.arange(length, device=self.device)[None]
            probe = torch.empty(1, dtype=self.dtype, device=self.device)
            cos, sin = self.decoder.rotary_emb(probe, positions)
            self._rope[length] = (cos[0], sin[0])
        return self._rope[length]

    def _stop_mask(self, stop_token_ids: Sequence[int]) -> torch.Tensor:
        key = tuple(sorted(set(stop_token_ids)))
        if key not in self._stop_mask_cache:
            mask = torch.zeros(self.config.vocab_size, dtype=torch.bool, device=self.device)
            if key:
                mask[list(key)] = True
            self._stop_mask_cache[key] = mask
        return self._stop_mask_cache[key]

    # -- one step ------------------------------------------------------------------------------------------------

    def _choose(
        self, logits: torch.Tensor, state: _DecodeState, stop_mask: torch.Tensor, min_new: int, pad: int
    ):
        """Greedy pick for every row, as generate() does it; then advance the state to feed the picked tokens."""
        logits = logits.float()
        if min_new > 0:
            logits = torch.where(stop_mask & (state.step < min_new), float("-inf"), logits)
        chosen = logits.argmax(-1)
        # log_softmax at the chosen token, on the device inside the step (captured with it): no extra sync.
        logprob = logits.gather(-1, chosen[:, None]) - logits.logsumexp(-1, keepdim=True)
        logprob = torch.where(state.unfinished[:, None], logprob, torch.zeros_like(logprob))
        chosen = torch.where(state.unfinished, chosen, torch.full_like(chosen, pad))
        state.unfinished &= ~stop_mask[chosen]
        state.out.index_copy_(1, state.step, chosen[:, None])
        state.logprobs.index_copy_(1, state.step, logprob)
        state.tokens.copy_(chosen)
        state.step += 1
        state.positions += 1
        state.slot += 1
        state.mask.index_fill_(3, state.slot, True)

    def _decode_step(
        self, state: _DecodeState, cos_table, sin_table, stop_mask, min_new: int, pad: int
    ) -> None:
        max_len = state.kv[0][0].shape[2]
        mask = state.mask[..., :max_len]
        hidden = self.decoder.embed_tokens(state.tokens)[:, None, :]
        cos = cos_table.index_select(0, state.positions)[:, None, :]
        sin = sin_table.index_select(0, state.positions)[:, None, :]
        for layer, (key_cache, value_cache) in zip(self.decoder.layers, state.kv, strict=True):
            hidden = self._layer_step(layer, hidden, cos, sin, key_cache, value_cache, state.slot, mask)
        logits = self.model.lm_head(self.decoder.norm(hidden)[:, -1])
        self._choose(logits, state, stop_mask, min_new, pad)

    def _layer_step(self, *args) -> torch.Tensor:
        """One decoder layer of a decode step: compiled when asked and possible, else eager. A compilation that
        fails (no C compiler, no Triton, an unsupported op) fails at the first layer of the first step, before
        anything is written, so falling back to the eager layer there is safe."""
        if self._compiled_layer is None:
            return _decode_layer(*args)
        try:
            return self._compiled_layer(*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure means "run it eagerly"
            if self._compile_checked:
                raise  # it compiled and ran before: this is a real error, not a missing compiler
            self._compiled_layer = None
            self.compile_error = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
            warnings.warn(
                f"fast decoder: torch.compile is unavailable here, decoding eagerly ({self.compile_error})",
                stacklevel=2,
            )
            return _decode_layer(*args)
        finally:
            if self._compiled_layer is not None:
                self._compile_checked = True

    # -- generation ------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        inputs: Mapping[str, torch.Tensor],
        *,
        max_new_tokens: int,
        min_new_tokens: int = 0,
        stop_token_ids: Sequence[int] = (),
        pad_token_id: int,
        return_logprobs: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """New tokens (B, n <= max_new_tokens) for a left-padded batch; rows that stopped early are padded.

        `return_logprobs=True` also returns each new token's log-probability (B, n; float32, 0 after a row's stop):
        log_softmax of the step's logits at the chosen token, the same numbers `compute_transition_scores` gives
        for `generate()` (after its logits processors, i.e. with `min_new_tokens`' masking)."""
        if self.device.type != "cuda":
            tokens, logprobs = self._generate(inputs, max_new_tokens, min_new_tokens, stop_token_ids, pad_token_id)
        else:
            # Streams, graph capture and synchronisation follow the current device: make it the model's (a shard
            # of `--gpus` runs its model on cuda:N without changing the process's current device).
            with torch.cuda.device(self.device):
                tokens, logprobs = self._generate(
                    inputs, max_new_tokens, min_new_tokens, stop_token_ids, pad_token_id
                )
        return (tokens, logprobs) if return_logprobs else tokens

    def _generate(
        self, inputs, max_new_tokens, min_new_tokens, stop_token_ids, pad_token_id
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import time

        input_ids = inputs["input_ids"]
        batch, prompt_len = input_ids.shape
        attention_mask = inputs.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if max_new_tokens < 1:
            return input_ids.new_empty(batch, 0).cpu(), torch.zeros(batch, 0)
        if not isinstance(pad_token_id, int):
            raise ValueError("pad_token_id must be an int (the tokenizer's pad token)")
        if bool((attention_mask[:, -1] == 0).any()):
            raise ValueError(
                "the fast decoder needs left-padded prompts (pad on the left, as for generate())"
            )
        max_len = prompt_len + max_new_tokens
        cos_table, sin_table = self._rope_table(max_len + 1)
        stop_mask = self._stop_mask(stop_token_ids)
        min_new = min(min_new_tokens, max_new_tokens)
        synchronize = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

        started = time.perf_counter()
        state, captured = self._prepare_state(
            batch, max_len, max_new_tokens, min_new, pad_token_id, stop_mask
        )

        position_ids = attention_mask.long().cumsum(-1) - 1
        position_ids = position_ids.masked_fill(attention_mask == 0, 0)
        model_inputs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        cache = _CopyToStaticCache(self.config, state.kv)
        # Handed over under the installed transformers' name for it: any Phi-3 model may run here, not only ours.
        output = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{CACHE_KEYWORD: cache},
            logits_to_keep=1,
            **model_inputs,
        )
        logits = output.logits[:, -1, :]
        del output, cache

        # Reset the state for this batch; the prompt's slots are [0, prompt_len), its padding masked out.
        state.mask.zero_()
        state.mask[:, 0, 0, :prompt_len] = attention_mask.bool()
        state.positions.copy_(position_ids[:, -1])
        state.slot.fill_(prompt_len - 1)
        state.step.zero_()
        state.unfinished.fill_(True)
        state.out.fill_(pad_token_id)
        state.logprobs.zero_()
        self._choose(logits, state, stop_mask, min_new, pad_token_id)
        synchronize()
        prefilled = time.perf_counter()

        steps = 1
        can_stop = stop_mask.any().item()
        while steps < max_new_tokens:
            if state.graph is not None:
                state.graph.replay()
            else:
                self._decode_step(state, cos_table, sin_table, stop_mask, min_new, pad_token_id)
            steps += 1
            check = state.graph is None or steps % STOP_CHECK_EVERY == 0
            if can_stop and steps >= min_new and check and not bool(state.unfinished.any()):
                break
        out = state.out.cpu()
        logprobs = state.logprobs.cpu()
        finished = time.perf_counter()
        lengths = _answer_lengths(out, set(stop_token_ids), steps)
        self.last_timing = {
            "prefill_s": prefilled - started,
            "decode_s": finished - prefilled,
            "steps": steps,
            "graph_captured": captured,
        }
        totals = self.totals
        totals["batches"] += 1
        totals["sequences"] += batch
        totals["prompt_tokens"] += int(attention_mask.sum())
        totals["new_tokens"] += sum(lengths)
        totals["prefill_s"] += prefilled - started
        totals["decode_s"] += finished - prefilled
        totals["steps"] += steps
        width = max(lengths, default=0)
        return out[:, :width], logprobs[:, :width]

    def _prepare_state(
        self, batch: int, max_len: int, max_new: int, min_new: int, pad: int, stop_mask: torch.Tensor
    ) -> tuple[_DecodeState, bool]:
        """The static state (and on CUDA the captured graph) for this shape, and whether it was just captured."""
        key = (batch, max_len, max_new, min_new, pad, stop_mask.data_ptr())
        kv = self._kv_views(batch, max_len)  # may drop every state if the storage had to grow
        if key in self._states:
            return self._states[key], False
        device = self.device
        state = _DecodeState(
            kv=kv,
            tokens=torch.zeros(batch, dtype=torch.long, device=device),
            positions=torch.zeros(batch, dtype=torch.long, device=device),
            slot=torch.zeros(1, dtype=torch.long, device=device),
            step=torch.zeros(1, dtype=torch.long, device=device),
            mask=torch.zeros(batch, 1, 1, max_len + 1, dtype=torch.bool, device=device),
            unfinished=torch.ones(batch, dtype=torch.bool, device=device),
            out=torch.full((batch, max_new), pad, dtype=torch.long, device=device),
            logprobs=torch.zeros(batch, max_new, dtype=torch.float32, device=device),
        )
        self._states[key] = state
        if not self.cuda_graphs or max_new < 2:
            return state, False
        cos_table, sin_table = self._rope_table(max_len + 1)
        # Warm up and capture at a harmless state: writes go to the last slot, which a real run overwrites before
        # it is ever attended to; the state is reset from the prefill before every replay.
        state.slot.fill_(max_len - 2)
        state.mask[..., : max_len - 1] = True
        state.step.fill_(max_new - 2)
        step_args = (state, cos_table, sin_table, stop_mask, min_new, pad)
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            self._decode_step(*step_args)
            state.slot.fill_(max_len - 2)
            state.step.fill_(max_new - 2)
        torch.cuda.current_stream(device).wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._decode_step(*step_args)
        state.graph = graph
        return state, True

    def reset_totals(self) -> None:
        self.totals = {
            "batches": 0,
            "sequences": 0,
            "prompt_tokens": 0,
            "new_tokens": 0,
            "prefill_s": 0.0,
            "decode_s": 0.0,
            "steps": 0,
        }

    def release(self) -> None:
        """Free the KV buffers and captured graphs (their memory pool goes with them)."""
        self._states.clear()
        self._storage = []
        self._pool = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()


def _answer_lengths(out: torch.Tensor, stop_ids: set[int], steps: int) -> list[int]:
    """Tokens each row generated, its stop token included; generate() returns max(lengths) columns."""
    lengths = []
    for row in out.tolist():
        length = next((i + 1 for i, token in enumerate(row[:steps]) if token in stop_ids), steps)
        lengths.append(length)
    return lengths
