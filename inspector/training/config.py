"""Every setting of a fine-tuning run, in one dataclass: printed at the start, saved with every checkpoint."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from inspector.checkpoints import CONFIG_FILE, save_question_files
from inspector.errors import InputError
from inspector.fields import FieldSet, load_fields
from inspector.prompts import ANSWER_STYLES
from inspector.registry import resolve_model
from inspector.settings import check_settings, setting
from inspector.speedups import FUSIONS, check_extras
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
    """A fine-tuning run. Each field is an `inspector train` option of its name (``--lora-r`` -> lora_r): a
    train-only setting declares its option here (`settings.setting`: help, range, choices; `inspector train`
    builds it with `options.options_from`), the others are options shared with scan (`inspector.options`)."""

    # -- data: the catalogue CSV, read and matched exactly as `inspector scan --truth` does (scan's options)
    truth: str = ""  # ground-truth catalogue CSV (same column detection and mapping as scan)
    truth_columns: dict[str, str] | None = None  # field -> CSV column, like scan's --truth-columns (or its text)
    truth_key: str | None = None  # CSV column whose values appear in image file names

    # -- reviewed scans as training data (inspector.training.reviews), with or instead of `truth`
    reviews: list[str] = setting(
        [],
        "Learn from the scans in this database with the inspectors' imported decisions applied (repeatable; "
        "with or instead of --truth). Images moved since the scan are looked for by sha256 under --images.",
        metavar="DB",
    )
    runs: list[str] = setting(
        [],
        "With --reviews: learn from this run (id or name; repeatable).  [default: every run with decisions]",
        opts=("--run",),
        metavar="RUN",
    )
    reviewed_only: bool = setting(False, "With --reviews: teach only the fields an inspector decided on.")
    write_dataset: str | None = setting(
        None,
        "Write the training examples (image, sha256, target answer, decisions) to this file and stop.",
        path="file",
        metavar="FILE.jsonl",
    )

    # -- the images and the validation split
    images: str | None = setting(None, "Folder of images.  [default: the CSV's folder]", path="folder")
    # whole catalogue rows are held out: a product's images are never both trained on and validated
    val_fraction: float = setting(
        0.1, "Share of catalogue rows held out for validation.", minimum=0, maximum=1, max_open=True
    )
    # images of a separate validation CSV are looked for under `images` or beside it
    val_truth: str | None = setting(
        None, "Validate on this catalogue CSV instead of a split of --truth.", path="file"
    )
    seed: int = setting(0, "Seed of the split, the data order and init.")

    # -- what the model is taught (scan's options, but for answer_style)
    model: str = ""  # Hugging Face model id, local folder (any VLM that scan runs) or a registered name (demo)
    trust_remote_code: bool = False  # let the model folder's own Python code run
    prompt: str | None = None  # built-in prompt (default "extract"): the question asked for every image
    prompt_file: str | None = None  # or a file holding the question
    sizes: list[str] = field(default_factory=list)  # also ask for (and teach) the prices in these sizes
    fields_file: str | None = None  # TOML file declaring more fields: labels, prompt and evaluation follow it
    answer_style: str | None = setting(
        None, "How target answers are written.  [default: the prompt's style]", choices=ANSWER_STYLES
    )
    num_crops: int | None = None  # Phi-3.5-vision crops per image (checkpoint default 4)

    # -- where results go
    # checkpoints, best/, final/, metrics.jsonl and train_config.json
    output: str = setting("", "Folder for checkpoints and models.", opts=("--output", "-o"), path="folder")
    resume: str | None = setting(
        None,
        "Continue from the newest checkpoint in --output, or from the checkpoint folder given.",
        flag_value="latest",
        metavar="[CHECKPOINT]",
    )

    # -- optimisation (transformers Trainer; AdamW betas (0.9, 0.95) as Phi-3.5-vision's recipes use)
    method: str = setting(
        "full", "full, lora, or frozen-vision (vision tower and projector frozen).", choices=METHODS
    )
    epochs: float = setting(
        3.0,
        "Passes over the training images (fractions allowed); --max-steps wins when given.",
        minimum=0,
        min_open=True,
    )
    max_steps: int = setting(0, "Optimizer steps; 0 = run --epochs.", minimum=0)
    max_minutes: float = setting(
        0.0, "Stop after this much wall time (evaluating and saving there); 0 = no limit.", minimum=0
    )
    lr: float = setting(2e-5, "Peak learning rate (LoRA: try 2e-4).", minimum=0, min_open=True)
    batch_size: int = setting(
        4, "Training images per forward pass (per optimizer step: this × --grad-accum).", minimum=1
    )
    grad_accum: int = setting(1, "Batches per optimizer step.", minimum=1)
    # a linear warm-up
    warmup_steps: int = setting(
        0, "Optimizer steps over which the learning rate rises from 0 to --lr.", minimum=0
    )
    schedule: str = setting("linear", "How the learning rate falls after the warm-up.", choices=SCHEDULES)
    weight_decay: float = setting(0.01, "AdamW weight decay.", minimum=0)
    adam_epsilon: float = setting(1e-7, "AdamW epsilon (numerical stability).", minimum=0, min_open=True)
    max_grad_norm: float = setting(1.0, "Clip gradients to this norm (0 = no clipping).", minimum=0)
    # mixed: fp32 weights, bf16 autocast; what auto picks: methods.resolve_precision
    precision: str = setting(
        "auto",
        "auto: fp32 on CPU; on GPU bf16 autocast, fp32 master weights when they fit.",
        choices=PRECISIONS,
    )
    # use_reentrant=False
    gradient_checkpointing: bool = setting(
        True, "Recompute activations in the backward pass: less memory, slower steps.", negatable=True
    )
    fuse: str = setting(
        "auto",
        "Fused kernels: auto (torch.compile on a GPU, none on CPU), compile, liger (pip extra), none.",
        choices=FUSIONS,
    )
    lora_r: int = setting(64, "LoRA rank.", minimum=1)
    lora_alpha: int = setting(128, "LoRA scaling numerator (scale = alpha / r).", minimum=1)
    lora_dropout: float = setting(0.0, "Dropout on the LoRA branch.", minimum=0, maximum=1)
    lora_targets: list[str] | None = setting(
        None,
        "Comma-separated module names to adapt.  [default: all language-model linears]",
        comma_separated=True,
    )
    keep_adapter: bool = setting(False, "LoRA: save the adapter instead of merging it into the weights.")

    # -- evaluation on the validation split
    # also one at the end of training
    eval_every: int = setting(100, "Optimizer steps between evaluations and checkpoints.", minimum=1)
    # 0: the validation loss only
    eval_samples: int = setting(
        64, "Validation images answered with generate() and scored at each evaluation.", minimum=0
    )
    eval_at_start: bool = setting(False, "Also evaluate before training (the 'before' figures).")
    max_new_tokens: int = setting(256, "Longest answer generated at each evaluation.", minimum=1)
    best_metric: str = setting("field_accuracy", "field_accuracy, <field>_accuracy, price_mae or loss.")
    price_tolerance: str = "0.005"  # as scan's --price-tolerance: absolute ("0.01") or relative ("2%")
    title_threshold: float = 0.6  # as scan's --title-threshold
    save_total_limit: int = setting(2, "Checkpoints kept besides the best (0 = all).", minimum=0)

    # -- machinery
    workers: int = setting(
        2,
        "Data loading processes (image decoding and processing; 0 = in the training process).",
        opts=("--dataloader-workers",),
        minimum=0,
    )
    logging_steps: int = setting(10, "Optimizer steps between logged training losses.", minimum=1)
    wandb: bool = setting(False, "Log to Weights & Biases (offline without an API key).", negatable=True)
    wandb_project: str = setting("inspector", "Weights & Biases project.")
    run_name: str | None = setting(
        None, "Run name in Weights & Biases.  [default: the output folder's name]", opts=("--wandb-name",)
    )

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
        check_settings(self)  # each setting's range or choices, declared on its field (settings.setting)
        check_extras(self.fuse, "none")
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
