"""The interface every model backend implements; the scan pipeline and training evaluation only use this."""

from __future__ import annotations

from dataclasses import dataclass
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


@runtime_checkable
class Backend(Protocol):
    """Turns a batch of images, each with its own prompt, into one answer string each."""

    #: Model id or folder, as the user gave it.
    model_name: str

    def describe(self) -> dict:
        """Facts stored with a run: backend name, model id/revision, device, dtype, library versions."""
        ...

    def generate(self, images: list[Image.Image], prompts: list[str], settings: GenerationSettings) -> list[str]:
        """One answer per (image, prompt) pair, in order. Raises on failure of the whole batch
        (`torch.OutOfMemoryError` propagates so the caller can retry smaller)."""
        ...

    def batch_key(self, image: Image.Image) -> object:
        """Images with equal keys batch together efficiently (e.g. Phi-3.5-vision's crop grid). Default: None."""
        ...
