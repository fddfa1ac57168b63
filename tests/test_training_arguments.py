"""TrainConfig -> TrainingArguments (`inspector.training.arguments`): real `TrainingArguments` built from the
keyword arguments for representative configs, and every TrainConfig setting accounted for. No model is loaded."""

from __future__ import annotations

import warnings
from dataclasses import fields, replace
from pathlib import Path

import pytest
from transformers import TrainingArguments

from inspector.training import TrainConfig
from inspector.training.arguments import (
    DERIVED,
    SAME_VALUE,
    USED_ELSEWHERE,
    checkpointing_arguments,
    training_arguments,
)

MACHINE = {"cuda": False, "bf16": False, "has_val": True, "save": True}


def _arguments(config: TrainConfig, **machine) -> TrainingArguments:
    """The real TrainingArguments of `config` on a CPU (no deprecation warnings about our arguments)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arguments = TrainingArguments(**training_arguments(config, **{**MACHINE, **machine}))
    assert [str(w.message) for w in caught if "deprecat" in str(w.message).lower()] == []
    return arguments


def _checkpointing(arguments: TrainingArguments) -> tuple[bool, dict | None]:
    """(enabled, kwargs) of activation checkpointing, under whichever names the installed release uses."""
    (flag, _), (kwargs, _) = checkpointing_arguments(True).items()
    return bool(getattr(arguments, flag)), getattr(arguments, kwargs)


def test_defaults_with_a_validation_split(tmp_path):
    config = TrainConfig(output=str(tmp_path / "run-7"))
    args = _arguments(config)
    assert (args.output_dir, args.run_name) == (str(tmp_path / "run-7"), "run-7")
    assert (args.per_device_train_batch_size, args.per_device_eval_batch_size) == (4, 4)
    assert (args.gradient_accumulation_steps, args.learning_rate, args.warmup_steps) == (1, 2e-5, 0)
    assert (args.num_train_epochs, args.max_steps) == (3.0, -1)
    assert args.lr_scheduler_type == "linear"
    assert (args.weight_decay, args.adam_beta1, args.adam_beta2, args.adam_epsilon) == (0.01, 0.9, 0.95, 1e-7)
    assert args.max_grad_norm == 1.0
    assert _checkpointing(args) == (True, {"use_reentrant": False})
    assert (args.logging_strategy, args.logging_steps, args.logging_first_step) == ("steps", 10, True)
    assert (args.eval_strategy, args.eval_steps, args.eval_on_start) == ("steps", 100, False)
    assert (args.save_strategy, args.save_steps, args.save_total_limit) == ("steps", 100, 2)
    assert (args.metric_for_best_model, args.greater_is_better) == ("eval_field_accuracy", True)
    assert args.load_best_model_at_end is False
    assert args.report_to in ([], "none", ["none"])  # "none": no integration (5.17 keeps [] after parsing)
    assert (args.seed, args.data_seed) == (0, 0)
    assert (args.dataloader_num_workers, args.dataloader_persistent_workers) == (2, True)
    assert (args.remove_unused_columns, args.label_names, args.disable_tqdm) == (False, ["labels"], True)


def test_the_cpu_and_the_gpu():
    config = TrainConfig(output="out")
    cpu = _arguments(config)
    assert (cpu.optim, cpu.use_cpu, cpu.bf16, cpu.dataloader_pin_memory) == ("adamw_torch", True, False, False)
    gpu = training_arguments(config, cuda=True, bf16=True, has_val=True, save=True)  # no GPU here to build it on
    assert (gpu["optim"], gpu["use_cpu"], gpu["bf16"], gpu["dataloader_pin_memory"]) == (
        "adamw_torch_fused", False, True, True,
    )  # fmt: skip


def test_without_a_validation_split_nothing_is_evaluated_and_no_best_metric_is_set():
    config = TrainConfig(output="out", eval_at_start=True, eval_every=7, best_metric="loss")
    args = _arguments(config, has_val=False)
    assert (args.eval_strategy, args.eval_on_start) == ("no", False)
    assert (args.metric_for_best_model, args.greater_is_better) == (None, None)
    assert (args.save_strategy, args.save_steps) == ("steps", 7)  # checkpoints are still written
    with_val = _arguments(config)
    assert (with_val.eval_strategy, with_val.eval_steps, with_val.eval_on_start) == ("steps", 7, True)
    assert (with_val.metric_for_best_model, with_val.greater_is_better) == ("eval_loss", False)


def test_no_checkpoints_when_not_saving():
    args = _arguments(TrainConfig(output="out"), save=False)
    assert args.save_strategy == "no"


@pytest.mark.parametrize(
    ("schedule", "warmup", "expected"),
    [("constant", 5, "constant_with_warmup"), ("constant", 0, "constant"), ("cosine", 5, "cosine")],
)
def test_a_constant_schedule_with_warmup_is_constant_with_warmup(schedule, warmup, expected):
    args = _arguments(TrainConfig(output="out", schedule=schedule, warmup_steps=warmup))
    assert (args.lr_scheduler_type, args.warmup_steps) == (expected, warmup)


def test_max_steps_wins_over_epochs():
    by_steps = _arguments(TrainConfig(output="out", epochs=5.0, max_steps=40))
    assert (by_steps.max_steps, by_steps.num_train_epochs) == (40, 1.0)
    by_epochs = _arguments(TrainConfig(output="out", epochs=0.5))
    assert (by_epochs.max_steps, by_epochs.num_train_epochs) == (-1, 0.5)


def test_wandb_on_and_off():
    on = _arguments(TrainConfig(output="runs/a", wandb=True, run_name="lr sweep 3"))
    assert (on.report_to, on.run_name) == (["wandb"], "lr sweep 3")
    off = _arguments(TrainConfig(output="runs/a"))
    assert "wandb" not in off.report_to and off.run_name == "a"


def test_other_settings_arrive():
    config = TrainConfig(
        output="out", batch_size=2, grad_accum=8, lr=3e-4, weight_decay=0.0, adam_epsilon=1e-8, max_grad_norm=0.5,
        logging_steps=3, seed=11, workers=0, save_total_limit=0, gradient_checkpointing=False,
    )  # fmt: skip
    args = _arguments(config)
    assert (args.per_device_train_batch_size, args.per_device_eval_batch_size) == (2, 2)
    assert (args.gradient_accumulation_steps, args.learning_rate) == (8, 3e-4)
    assert (args.weight_decay, args.adam_epsilon, args.max_grad_norm) == (0.0, 1e-8, 0.5)
    assert (args.logging_steps, args.seed, args.data_seed) == (3, 11, 11)
    assert (args.dataloader_num_workers, args.dataloader_persistent_workers) == (0, False)
    assert args.save_total_limit is None  # 0: keep every checkpoint
    assert _checkpointing(args) == (False, None)


# ---------------------------------------------------------------------------------- every setting accounted for


def _other(value):
    """A value of the same kind that differs from `value`."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "x"]
    if isinstance(value, dict):
        return {**value, "x": "y"}
    assert value is None, value
    return "x"


def test_every_setting_is_mapped_or_said_to_be_used_elsewhere():
    """A new TrainConfig setting fails here until it is in one table of inspector/training/arguments.py."""
    settings = [f.name for f in fields(TrainConfig)]
    tables = {"SAME_VALUE": SAME_VALUE, "DERIVED": DERIVED, "USED_ELSEWHERE": USED_ELSEWHERE}
    unaccounted = [name for name in settings if not any(name in table for table in tables.values())]
    assert unaccounted == [], "add each to SAME_VALUE, DERIVED or USED_ELSEWHERE with its reason"
    in_two = [name for name in settings if sum(name in table for table in tables.values()) > 1]
    assert in_two == []
    assert [name for table in tables.values() for name in table if name not in settings] == []  # no stale names


@pytest.mark.parametrize("setting", [f.name for f in fields(TrainConfig)])
def test_each_setting_reaches_training_arguments_exactly_as_its_table_says(setting):
    """SAME_VALUE settings arrive unchanged under their names; DERIVED ones change something; the ones used
    elsewhere change nothing (if one does, it belongs in a mapping table)."""
    base = TrainConfig(output="out")
    other = {"title": "Name"} if setting == "truth_columns" else _other(getattr(base, setting))  # text is parsed
    changed = replace(base, **{setting: other})
    before = training_arguments(base, **MACHINE)
    after = training_arguments(changed, **MACHINE)
    differ = sorted(name for name in before if before[name] != after[name])
    if setting in SAME_VALUE:
        assert differ == sorted(SAME_VALUE[setting])
        assert all(after[name] == getattr(changed, setting) for name in SAME_VALUE[setting])
    elif setting in DERIVED:
        assert differ != []
    else:
        assert differ == [], f"{setting} is said to be used elsewhere but changes {differ}"


def test_run_name_defaults_to_the_output_folder_name_from_any_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert training_arguments(TrainConfig(output="."), **MACHINE)["run_name"] == Path(tmp_path).name
