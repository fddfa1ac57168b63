"""Model backends: anything that turns (image, prompt) pairs into answers."""

from inspector.backends.base import Backend, BackendError, GenerationSettings

__all__ = ["Backend", "BackendError", "GenerationSettings"]
