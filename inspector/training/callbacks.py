"""Trainer callbacks: metrics.jsonl, train_config.json in each checkpoint, progress reports, wandb run config."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Protocol

from transformers import TrainerCallback

from inspector.training.config import TrainConfig

METRICS_FILE = "metrics.jsonl"


class TrainProgress(Protocol):
    """What the CLI passes to `train()` to show progress; the library itself never prints."""

    def start(self, total_steps: int, first_step: int) -> None: ...

    def advance(self, step: int) -> None: ...

    def log(self, step: int, figures: dict) -> None: ...

    def message(self, text: str) -> None: ...


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class MetricsFileCallback(TrainerCallback):
    """Appends every logged figure (loss, learning rate, grad norm, eval metrics, samples/s) to metrics.jsonl,
    one JSON object per log event with its step, epoch and wall time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3)}
        record.update({key: _jsonable(value) for key, value in logs.items() if key not in record})
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


class SaveConfigCallback(TrainerCallback):
    """Writes train_config.json into each checkpoint folder the Trainer saves."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            self.config.save(folder)


class ProgressCallback(TrainerCallback):
    """Forwards the Trainer's events to a `TrainProgress`."""

    def __init__(self, progress: TrainProgress) -> None:
        self.progress = progress

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress.start(state.max_steps, state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.advance(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.progress.log(state.global_step, dict(logs))


class WandbConfigCallback(TrainerCallback):
    """Adds inspector's own run settings and data counts to the wandb run the Trainer's WandbCallback opened."""

    def __init__(self, config: TrainConfig, data_summary: dict) -> None:
        self.config = config
        self.data_summary = data_summary

    def on_train_begin(self, args, state, control, **kwargs):
        import wandb

        if wandb.run is not None:
            wandb.config.update(
                {"inspector": self.config.to_dict(), "data": self.data_summary}, allow_val_change=True
            )
