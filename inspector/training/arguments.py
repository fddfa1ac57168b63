"""`TrainConfig` -> transformers' `TrainingArguments`, in one declared place.

Every TrainConfig setting is in exactly one of three tables (tests/test_training_arguments.py fails otherwise, so
a new setting cannot be silently ignored):

- `SAME_VALUE`: passed on unchanged, under TrainingArguments' name(s) for it;
- `DERIVED`: turned into TrainingArguments by a rule (in `training_arguments`), often with other settings or the
  machine;
- `USED_ELSEWHERE`: not a TrainingArguments matter; the table says what uses it.

Like trl's config dataclasses, which forward their settings to TrainingArguments, but kept as a function of the
config and the machine: whether there is a validation split, a GPU and bf16 is only known when a run starts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from inspector.training.config import TrainConfig

#: TrainConfig setting -> the TrainingArguments that take its value unchanged.
SAME_VALUE: dict[str, tuple[str, ...]] = {
    "batch_size": ("per_device_train_batch_size", "per_device_eval_batch_size"),
    "grad_accum": ("gradient_accumulation_steps",),
    "lr": ("learning_rate",),
    "warmup_steps": ("warmup_steps",),
    "weight_decay": ("weight_decay",),
    "adam_epsilon": ("adam_epsilon",),
    "max_grad_norm": ("max_grad_norm",),
    "logging_steps": ("logging_steps",),
    "seed": ("seed", "data_seed"),  # one seed: the split, the model's random parts and the data order
    "workers": ("dataloader_num_workers",),  # (and persistent workers when there are any)
}

#: TrainConfig setting -> the rule that turns it into TrainingArguments (written in `training_arguments`).
DERIVED: dict[str, str] = {
    "output": "output_dir; the default run_name is its folder's name",
    "run_name": "run_name (the wandb run's name), default: the output folder's name",
    "epochs": "num_train_epochs, unless max_steps > 0 (then 1.0: max_steps wins)",
    "max_steps": "max_steps; 0 means epochs, which TrainingArguments writes -1",
    "schedule": "lr_scheduler_type; constant with warmup_steps is constant_with_warmup",
    "gradient_checkpointing": "(gradient|activation)_checkpointing and its kwargs, under the installed "
    "release's names (use_reentrant=False)",
    "eval_every": "eval_steps (with a validation split) and save_steps",
    "eval_at_start": "eval_on_start, with a validation split",
    "best_metric": "metric_for_best_model (eval_ prefixed) and greater_is_better, with a validation split",
    "save_total_limit": "save_total_limit; 0 (keep all) is None",
    "wandb": 'report_to: ["wandb"] or "none"',
}

#: TrainConfig setting -> what uses it instead of TrainingArguments.
USED_ELSEWHERE: dict[str, str] = {
    **dict.fromkeys(
        ("truth", "images", "truth_columns", "truth_key", "val_fraction", "val_truth"),
        "the catalogue examples and their split (training.data)",
    ),
    **dict.fromkeys(
        ("reviews", "runs", "reviewed_only"), "the reviewed scans' examples (training.reviews)"
    ),
    "write_dataset": "train_cli: writes the examples and stops before any training",
    **dict.fromkeys(
        ("prompt", "prompt_file", "sizes", "fields_file", "answer_style"),
        "the question and the target answers (training.data)",
    ),
    **dict.fromkeys(
        ("model", "trust_remote_code", "num_crops", "fuse"),
        "loading the model and processor through TrainConfig.backend_options (trainer.train); num_crops also "
        "the collator and the evaluation",
    ),
    "precision": "resolve_run_precision: the weights' dtype and the bf16 argument, which depend on the machine",
    "resume": "Trainer.train(resume_from_checkpoint=...) (trainer._find_resume_checkpoint)",
    **dict.fromkeys(
        ("method", "lora_r", "lora_alpha", "lora_dropout", "lora_targets"),
        "which parameters train (trainer.apply_method)",
    ),
    "keep_adapter": "how best/ and final/ are saved (trainer.export)",
    "max_minutes": "trainer.TimeLimitCallback",
    **dict.fromkeys(
        ("eval_samples", "max_new_tokens", "price_tolerance", "title_threshold"),
        "the generated-answer evaluation (evaluation.GenerationEvaluator)",
    ),
    "wandb_project": "trainer._wandb_setup (WANDB_PROJECT)",
}


def training_arguments(config: TrainConfig, *, cuda: bool, bf16: bool, has_val: bool, save: bool) -> dict:
    """The keyword arguments of `TrainingArguments` for `config` on this machine: `cuda` (a GPU trains),
    `bf16` (bf16 autocast, from `resolve_run_precision`), `has_val` (a validation split: evaluations and the
    best model) and `save` (checkpoints; benchmarks write none)."""
    schedule = config.schedule
    if schedule == "constant" and config.warmup_steps:
        schedule = "constant_with_warmup"
    arguments: dict = {
        name: getattr(config, setting) for setting, names in SAME_VALUE.items() for name in names
    }
    arguments.update(
        # DERIVED
        output_dir=str(Path(config.output)),
        run_name=config.run_name or Path(config.output).resolve().name,
        num_train_epochs=config.epochs if config.max_steps == 0 else 1.0,
        max_steps=config.max_steps if config.max_steps > 0 else -1,
        lr_scheduler_type=schedule,
        **checkpointing_arguments(config.gradient_checkpointing),
        eval_strategy="steps" if has_val else "no",
        eval_steps=config.eval_every if has_val else None,
        eval_on_start=config.eval_at_start and has_val,
        save_strategy="steps" if save else "no",
        save_steps=config.eval_every,
        save_total_limit=config.save_total_limit or None,
        metric_for_best_model=config.best_metric_key if has_val else None,
        greater_is_better=config.greater_is_better if has_val else None,
        report_to=["wandb"] if config.wandb else "none",
        # the machine
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        use_cpu=not cuda,
        bf16=bf16,
        dataloader_pin_memory=cuda,
        dataloader_persistent_workers=config.workers > 0,
        # fixed
        adam_beta1=0.9,  # AdamW betas (0.9, 0.95), as Phi-3.5-vision's recipes use
        adam_beta2=0.95,
        logging_strategy="steps",
        logging_first_step=True,
        load_best_model_at_end=False,  # BestExporter writes best/ at each better evaluation
        remove_unused_columns=False,  # the collator reads the examples' own keys
        label_names=["labels"],
        disable_tqdm=True,  # the command line draws its own progress
    )
    return arguments


def checkpointing_arguments(enabled: bool) -> dict:
    """Activation checkpointing (recompute in backward, use_reentrant=False) under the names the installed
    transformers declares: 5.23 renamed `gradient_checkpointing(_kwargs)` to `activation_checkpointing(_kwargs)`
    and keeps the old names only as deprecated aliases."""
    from transformers import TrainingArguments

    names = {field.name for field in dataclasses.fields(TrainingArguments)}
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    return {
        f"{prefix}_checkpointing": enabled,
        f"{prefix}_checkpointing_kwargs": {"use_reentrant": False} if enabled else None,
    }
