"""Model backends: anything that turns (image, prompt) pairs into answers."""

from __future__ import annotations

from inspector.backends.base import Backend, BackendError, GenerationSettings

__all__ = ["Backend", "BackendError", "GenerationSettings", "backend_name", "load_backend"]


def backend_name(model: str) -> str:
    """Which backend `load_backend(model)` builds, without building it (what a run records before any loads)."""
    return "fake" if model.startswith("fake:") else "hf"


def load_backend(
    model: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    num_crops: int | None = None,
    fuse: str = "auto",
    quantize: str = "none",
) -> Backend:
    """`fake:FILE` replays answers from FILE (for tests and demos); a registered name (`demo`) loads its folder;
    anything else is a Hugging Face id or folder."""
    if backend_name(model) == "fake":
        from inspector.backends.fake import FakeBackend

        return FakeBackend.from_file(model.removeprefix("fake:"))
    from inspector.backends.hf import HFBackend
    from inspector.registry import resolve_model

    return HFBackend(
        resolve_model(model),
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        attn_implementation=attn_implementation,
        num_crops=num_crops,
        fuse=fuse,
        quantize=quantize,
    )
