"""The interface every model backend implements; the scan pipeline and training evaluation only use this."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

from PIL import Image

from inspector.errors import BackendError  # noqa: F401 - part of this module's API


@dataclass(frozen=True)
class GenerationSettings:
    """How answers are generated. Part of a run's identity: change any of these and it is a new run."""

    #: Longest answer, in tokens.
    max_new_tokens: int = 256
    #: Force every answer to this many tokens at least (benchmarks set it equal to max_new_tokens).
    min_new_tokens: int = 0
    #: Greedy decoding is the only mode scans use: it makes reruns reproducible.
    do_sample: bool = False


@dataclass(frozen=True)
class BackendOptions:
    """How a backend loads its model: one object from the scan (or benchmark) settings to the backend's loader,
    like llm's per-model `Options` or lmms-eval's `model_args`. Backends use the settings they know (the fake one
    none). `ScanConfig.backend_options()` fills it from the scan settings of the same names."""

    device: str = "auto"
    dtype: str = "auto"
    #: Let the model folder's own Python code run.
    trust_remote_code: bool = False
    #: Attention kernel: sdpa (None: the default), eager, flash_attention_2.
    attn_implementation: str | None = None
    #: Phi-3.5-vision's crops per image (None: the checkpoint's setting).
    num_crops: int | None = None
    #: Fused element-wise kernels (inspector.speedups.FUSIONS).
    fuse: str = "auto"
    #: Opt-in quantisation ("fp8"); "none" keeps the model's own precision.
    quantize: str = "none"

    def as_kwargs(self) -> dict[str, object]:
        return {setting.name: getattr(self, setting.name) for setting in fields(self)}


@dataclass(frozen=True)
class Generation:
    """One generated answer with, where the backend knows them, its tokens' text pieces and log-probabilities.

    `"".join(pieces)` is the decoded answer before stripping; `text` is it stripped (what parsing reads), so a
    token's characters in `text` start `lead` characters earlier than in the joined pieces. Backends that cannot
    say (or whose pieces do not add up to the text) leave both tuples empty: every confidence is then unknown.
    """

    text: str
    #: Decoded text of each generated token, in order (empty for special tokens and incomplete bytes).
    pieces: tuple[str, ...] = ()
    #: Natural-log probability of each generated token under the distribution it was picked from.
    logprobs: tuple[float, ...] = ()
    #: The generated token ids (up to and including the stop token), where known.
    token_ids: tuple[int, ...] = ()

    @classmethod
    def of(cls, value: Generation | str) -> Generation:
        """Backends may return plain strings (no token information)."""
        return value if isinstance(value, Generation) else cls(value)

    @property
    def has_tokens(self) -> bool:
        return bool(self.pieces) and len(self.pieces) == len(self.logprobs)

    def token_spans(self) -> list[tuple[int, int, float]]:
        """(start, end, logprob) of each token in `text` coordinates; an empty piece (a special token, or a byte
        of a character that a later token completes) gets the span of the next token that has characters."""
        if not self.has_tokens:
            return []
        joined = "".join(self.pieces)
        lead = len(joined) - len(joined.lstrip())
        spans: list[tuple[int, int, float]] = []
        position = -lead
        pending: list[float] = []
        for piece, logprob in zip(self.pieces, self.logprobs, strict=True):
            if not piece:
                pending.append(logprob)
                continue
            start, end = position, position + len(piece)
            spans.extend((start, end, value) for value in pending)
            pending = []
            spans.append((start, end, logprob))
            position = end
        return spans

    def span_logprob(self, start: int, end: int) -> float | None:
        """Sum of the log-probabilities of the tokens that overlap text[start:end] (None without tokens)."""
        spans = self.token_spans()
        if not spans or end <= start:
            return None
        total = [logprob for s, e, logprob in spans if s < end and e > start]
        return sum(total) if total else None

    def span_confidence(self, start: int, end: int) -> float | None:
        """Probability that the model writes text[start:end] as it did: exp of the summed log-probabilities."""
        logprob = self.span_logprob(start, end)
        return None if logprob is None else min(1.0, math.exp(logprob))


@runtime_checkable
class Backend(Protocol):
    """Turns a batch of images, each with its own prompt, into one answer string each."""

    #: Model id or folder, as the user gave it.
    model_name: str

    def describe(self) -> dict:
        """Facts stored with a run: backend name, model id/revision, device, dtype, library versions."""
        ...

    def generate(
        self, images: list[Image.Image], prompts: list[str], settings: GenerationSettings
    ) -> list[Generation | str]:
        """One answer per (image, prompt) pair, in order: a `Generation` with token log-probabilities where the
        backend has them, else a plain string. Raises on failure of the whole batch
        (`torch.OutOfMemoryError` propagates so the caller can retry smaller)."""
        ...

    def batch_key(self, image: Image.Image) -> object:
        """Images with equal keys batch together efficiently (e.g. Phi-3.5-vision's crop grid). Default: None."""
        ...
