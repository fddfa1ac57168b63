"""Every setting of a fine-tuning run, in one dataclass: printed at the start, saved with every checkpoint."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from inspector.checkpoints import CONFIG_FILE, save_question_files
from inspector.errors import InputError
from inspector.fields import FieldSet, load_fields
from inspector.registry import resolve_model
from inspector.training.metrics import metric_names

if TYPE_CHECKING:  # the backends import PIL: TrainConfig stays light for the command line's --help
    from inspector.backends.base import BackendOptions

METHODS: tuple[str, ...] = ("full", "lora", "frozen-vision")
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "mixed", "fp32")
SCHEDULES: tuple[str, ...] = ("linear", "cosine", "constant")
#: `BackendOptions` settings that are not TrainConfig settings, and why. Every other backend setting is the
#: TrainConfig setting of its name (`TrainConfig.backend_options`), declared once for scan and train.
BACKEND_OPTIONS_NOT_IN_TRAIN: dict[str, str] = {
    "device": "the Trainer places the model: a GPU when there is one",
    "dtype": "from --precision and the machine (trainer.resolve_run_precision)",
    "attn_implementation": "no train option: the model's default attention kernel",
    "quantize": "training never quantizes",
}
#: Metrics where lower is better; every other metric (accuracies) is better higher.
_LOWER_IS_BETTER_SUFFIXES = ("loss", "mae")


@dataclass
class TrainConfig:
    """A fine-tuning run. Field names match the `inspector train` options one to one (``--lora-r`` -> lora_r)."""

    # -- data: read and matched exactly as `inspector scan --truth` does
    truth: str = ""  # ground-truth catalogue CSV (same column detection and mapping as scan)
    images: str | None = None  # folder of images; default: the CSV's folder
    truth_columns: dict[str, str] | None = None  # field -> CSV column, like scan's --truth-columns (or its text)
    truth_key: str | None = None  # CSV column whose values appear in image file names
    val_fraction: float = 0.1  # catalogue rows held out for validation (whole rows, never trained on)
    val_truth: str | None = None  # or a separate validation CSV (images under `images` or beside it)
    seed: int = 0  # seed of the train/val split, the model's random parts and the data order

    # -- reviewed scans as training data (inspector.training.reviews), with or instead of `truth`
    reviews: list[str] = field(default_factory=list)  # databases holding scans with imported decisions
    runs: list[str] = field(default_factory=list)  # runs (id or name) to learn from; default: every reviewed run
    reviewed_only: bool = False  # teach only the fields an inspector decided on
    write_dataset: str | None = None  # write the examples to this JSON Lines file and stop (nothing is trained)

    # -- what the model is taught
    model: str = ""  # Hugging Face model id, local folder (any VLM that scan runs) or a registered name (demo)
    trust_remote_code: bool = False  # let the model folder's own Python code run
    prompt: str | None = None  # built-in prompt (default "extract"): the question asked for every image
    prompt_file: str | None = None  # or a file holding the question
    sizes: list[str] = field(default_factory=list)  # also ask for (and teach) the prices in these sizes
    fields_file: str | None = None  # TOML file declaring more fields: labels, prompt and evaluation follow it
    answer_style: str | None = None  # "json" | "original" | "free"; default: the prompt's own style
    num_crops: int | None = None  # Phi-3.5-vision crops per image (checkpoint default 4)

    # -- where results go
    output: str = ""  # folder for checkpoints, best/, final/, metrics.jsonl and train_config.json
    resume: str | None = None  # "latest" (newest checkpoint in output) or a checkpoint folder

    # -- optimisation (transformers Trainer; AdamW betas (0.9, 0.95) as Phi-3.5-vision's recipes use)
    method: str = "full"  # full | lora | frozen-vision (vision tower and projector frozen)
    epochs: float = 3.0  # passes over the training split (ignored when max_steps > 0)
    max_steps: int = 0  # optimizer steps to run; 0 = use epochs
    max_minutes: float = 0.0  # stop after this much wall time (evaluating and saving there); 0 = no limit
    lr: float = 2e-5  # peak learning rate (LoRA usually wants ~2e-4)
    batch_size: int = 4  # images per forward pass
    grad_accum: int = 1  # forward passes per optimizer step (effective batch = batch_size * grad_accum)
    warmup_steps: int = 0  # linear warmup from 0 to lr
    schedule: str = "linear"  # learning-rate decay after warmup: linear | cosine | constant
    weight_decay: float = 0.01  # AdamW weight decay
    adam_epsilon: float = 1e-7  # AdamW epsilon
    max_grad_norm: float = 1.0  # gradient clipping
    precision: str = "auto"  # auto | bf16 | mixed (fp32 weights, bf16 autocast) | fp32; see resolve_precision
    gradient_checkpointing: bool = True  # recompute activations in backward (use_reentrant=False)
    fuse: str = "auto"  # fused kernels: auto (compile on a GPU, none on CPU) | compile | liger | none
    lora_r: int = 64  # LoRA rank
    lora_alpha: int = 128  # LoRA scaling numerator (scale = alpha / r)
    lora_dropout: float = 0.0  # dropout on the LoRA branch
    lora_targets: list[str] | None = None  # modules to adapt; default: every language-model linear layer
    keep_adapter: bool = False  # LoRA: save the adapter instead of merging it into the base weights

    # -- evaluation on the validation split
    eval_every: int = 100  # optimizer steps between evaluations and checkpoints (also one at the end)
    eval_samples: int = 64  # validation images answered with generate() and scored (0 = loss only)
    eval_at_start: bool = False  # also evaluate before the first step (the "before training" figures)
    max_new_tokens: int = 256  # longest generated answer during evaluation
    best_metric: str = "field_accuracy"  # picks best/: field_accuracy, <field>_accuracy, price_mae, loss
    price_tolerance: str = "0.005"  # as scan's --price-tolerance: absolute ("0.01") or relative ("2%")
    title_threshold: float = 0.6  # as scan's --title-threshold
    save_total_limit: int = 2  # checkpoints kept besides the best one (0 = all)

    # -- machinery
    workers: int = 2  # dataloader worker processes (image decoding and processing)
    logging_steps: int = 10  # optimizer steps between logged training loss figures
    wandb: bool = False  # log to Weights & Biases (offline when no API key is set)
    wandb_project: str = "inspector"  # wandb project name
    run_name: str | None = None  # name of the run in wandb; default: the output folder's name

    def __post_init__(self) -> None:
        """Settings in their command-line form (as `inspector train` and a `--config` file give them) in their
        own: --truth-columns read against this run's fields, the repeatable options' tuples as lists."""
        if isinstance(self.truth_columns, str):
            from inspector.truth import parse_column_mapping

            self.truth_columns = parse_column_mapping(self.truth_columns, self.fieldset())
        self.reviews, self.runs = list(self.reviews), list(self.runs)

    def validate(self) -> None:
        """Raise InputError with a fix for the first setting that cannot work."""
        if not self.truth and not self.reviews:
            raise InputError(
                "No training data: pass the catalogue CSV with --truth or reviewed scans' databases with --reviews"
            )
        if (self.runs or self.reviewed_only) and not self.reviews:
            option = "--run" if self.runs else "--reviewed-only"
            raise InputError(f"{option} chooses among reviewed scans: pass their database with --reviews")
        # --write-dataset only writes the examples: it needs no model and no output folder.
        if not self.model and self.write_dataset is None:
            raise InputError("No model: pass a Hugging Face model id or local folder with --model")
        if self.model:
            resolve_model(self.model)  # a registered name (demo) without its folder: one line, before the data loads
        if not self.output and self.write_dataset is None:
            raise InputError("No output folder: pass one with --output")
        if self.method not in METHODS:
            raise InputError(f"Unknown method {self.method!r}; use one of: {', '.join(METHODS)}")
        if self.precision not in PRECISIONS:
            raise InputError(f"Unknown precision {self.precision!r}; use one of: {', '.join(PRECISIONS)}")
        from inspector.speedups import FUSIONS, check_extras

        if self.fuse not in FUSIONS:
            raise InputError(f"Unknown fuse {self.fuse!r}; use one of: {', '.join(FUSIONS)}")
        check_extras(self.fuse, "none")
        if self.schedule not in SCHEDULES:
            raise InputError(f"Unknown schedule {self.schedule!r}; use one of: {', '.join(SCHEDULES)}")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("batch_size", "grad_accum", "eval_every", "max_new_tokens", "logging_steps", "lora_r"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in (
            "max_steps",
            "max_minutes",
            "warmup_steps",
            "eval_samples",
            "workers",
            "save_total_limit",
        ):
            if getattr(self, name) < 0:
                option = "dataloader-workers" if name == "workers" else name.replace("_", "-")
                raise InputError(f"--{option} must not be negative, got {getattr(self, name)}")
        if self.max_steps == 0 and self.epochs <= 0:
            raise InputError("Nothing to train: pass --epochs above 0 or --max-steps")
        if self.lr <= 0:
            raise InputError(f"--lr must be positive, got {self.lr}")
        if self.keep_adapter and self.method != "lora":
            raise InputError("--keep-adapter only applies to --method lora")
        if self.num_crops is not None and self.num_crops < 1:
            raise InputError(f"--num-crops must be at least 1, got {self.num_crops}")
        metric = self.best_metric_key
        names = metric_names(self.fieldset())
        if metric.removeprefix("eval_") not in names:
            raise InputError(f"Unknown --best-metric {self.best_metric!r}; use one of: {', '.join(names)}")
        if metric != "eval_loss" and self.eval_samples == 0:
            raise InputError(
                f"--best-metric {self.best_metric} needs generated answers; set --eval-samples above 0 "
                "or use --best-metric loss"
            )

    def backend_options(self, dtype: str = "auto") -> BackendOptions:
        """How the model and processor load (`training.methods.load_model`): the backend settings among this
        run's settings (those of the same names), with the weights' `dtype` (torch's name or scan's bf16/fp32)."""
        from inspector.backends.base import BackendOptions

        shared = [setting.name for setting in fields(BackendOptions) if setting.name not in BACKEND_OPTIONS_NOT_IN_TRAIN]
        return BackendOptions(dtype=dtype, **{name: getattr(self, name) for name in shared})

    def fieldset(self) -> FieldSet:
        """The fields taught and evaluated: the built-ins, extended or replaced by `fields_file`."""
        return load_fields(self.fields_file)

    @property
    def best_metric_key(self) -> str:
        """The Trainer metric name ("eval_" prefix) that picks the best checkpoint."""
        name = self.best_metric.strip().lower().replace("-", "_")
        name = name.removeprefix("eval_")
        return f"eval_{name}"

    @property
    def greater_is_better(self) -> bool:
        return not self.best_metric_key.endswith(_LOWER_IS_BETTER_SUFFIXES)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, folder: str | Path) -> Path:
        """Write train_config.json into `folder`, with copies of the question's files (fields file, prompt file)
        beside it, so that a model folder carries the question it learned wherever it goes (inspector.checkpoints)."""
        path = Path(folder) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        save_question_files(self.to_dict(), folder)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a train_config.json (a folder holding one, or the file); unknown keys are an error."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILE
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{path}: unknown settings {', '.join(unknown)}")
        return cls(**data)

    def describe(self) -> str:
        """One "name = value" line per setting, for the start of a run."""
        return "\n".join(f"{f.name} = {getattr(self, f.name)!r}" for f in fields(self))
