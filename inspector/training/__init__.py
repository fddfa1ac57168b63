"""Fine-tuning a vision-language model on product images and a catalogue CSV (`inspector train`).

`TrainConfig` (pure Python, cheap to import) holds every setting; `train(config)` runs transformers' Trainer and
returns a `TrainResult`. The heavy modules are imported on first use.
"""

from __future__ import annotations

from inspector.training.config import TrainConfig

__all__ = ["TrainConfig", "TrainResult", "train"]


def __getattr__(name: str):
    if name in ("TrainResult", "train"):
        from inspector.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'inspector.training' has no attribute {name!r}")
