"""`ScanConfig`: everything that defines a scan, and its run key.

Light on purpose: the CLI builds scan's options from it, so importing it must not import SQLAlchemy, PIL or a
model backend (`inspector --help` starts fast; tests/test_architecture.py keeps it so); library code, no click.
`inspector.scan` re-exports everything here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from inspector.fields import BUILTIN_FIELDS, FieldSet, load_fields
from inspector.prompts import Prompt, get_prompt
from inspector.registry import registered
from inspector.settings import setting
from inspector.speedups import FUSIONS, QUANTIZATIONS

if TYPE_CHECKING:  # the backends import PIL: loaded when a scan runs
    from inspector.backends import Backend, BackendOptions, GenerationSettings

DEFAULT_MODEL = "microsoft/Phi-3.5-vision-instruct"

_T = TypeVar("_T")


#: ScanConfig fields that cannot change a scan's answers, so they are not part of its run key: rerunning with
#: another batch size, device, worker count, limit or shard resumes the same run. Everything else is in the key.
#: (`fuse`, like `batch_size`, changes kernels, not the computation: bf16 rounding aside; `quantize` does change it.)
NOT_IN_RUN_KEY: frozenset[str] = frozenset(
    {"db", "report", "batch_size", "device", "workers", "limit", "shard", "fuse"}
)

#: The format of run keys: what identifies a run and how it is hashed. The rule is `ScanConfig.run_key`'s.
RUN_KEY_FORMAT = 1


@dataclass
class ScanConfig:
    """Everything that defines a scan. Printed at the start and stored with the run.

    Each field but `inputs` (the PATHS) and `shard` is an `inspector scan` option of its name, listed by `--help`
    in the fields' order: a scan-only setting declares its option here (`settings.setting`: help, range,
    choices; `inspector scan` builds it with `options.options_from`), the others are options shared with train
    or the other commands (`inspector.options`). The fields' order is not part of the run key (`run_key` hashes
    them by name)."""

    #: Folders, files and http(s) URLs to scan.
    inputs: list[str]
    #: Ground-truth CSV, its column mapping (field -> column) and key column.
    truth: str | None = None
    truth_columns: dict[str, str] | None = None
    truth_key: str | None = None
    #: Hugging Face id or local folder of a vision-language model, a registered name (`demo`, inspector.registry),
    #: or `fake:FILE` for tests.
    model: str = DEFAULT_MODEL
    #: SQLite file or SQLAlchemy URL.
    db: str = "inspector.db"
    #: None: no report (scan's --no-report).
    report: str | None = setting("report.html", "HTML report to write.")
    #: 0 is "auto", the default.
    batch_size: int = setting(
        0,
        "Images per model call, or 'auto': sized from free GPU memory (up to 128), 8 on CPU.",
        reader="batch size",
    )
    #: Built-in prompt name, or a file holding a custom prompt; sizes to ask per-size prices for.
    prompt: str | None = None
    prompt_file: str | None = None
    sizes: list[str] = field(default_factory=list)
    #: A fields file (TOML) declaring fields on top of (or instead of) the built-ins; see docs/fields.md.
    fields_file: str | None = None
    max_new_tokens: int = setting(256, "Longest answer the model may write, in tokens.", minimum=1)
    #: Benchmarks force every answer to full length (min = max) so timings don't depend on when a model stops.
    min_new_tokens: int = setting(0, "Force answers this long (benchmarks).", minimum=0, show_default=False)
    device: str = setting("auto", "auto, cpu, cuda, cuda:1 ...")
    dtype: str = setting("auto", "auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32.")
    #: Phi-3.5-vision's crops per image (None: the checkpoint's setting).
    num_crops: int | None = None
    attn_implementation: str | None = setting(
        None, "Attention kernel: sdpa (default), eager, flash_attention_2.", opts=("--attn",)
    )
    #: Fused element-wise kernels (inspector.speedups).
    fuse: str = setting(
        "auto",
        "Fused kernels: auto (torch.compile on a GPU, none on CPU), compile, liger (pip extra), none.",
        choices=FUSIONS,
    )
    #: Opt-in quantisation that may change answers; "none" keeps the model's own precision.
    quantize: str = setting(
        "none",
        "fp8: float8 language-model layers (H100/H200, pip extra; faster, answers may change).",
        choices=QUANTIZATIONS,
    )
    limit: int | None = setting(None, "Scan only the first N images found.", minimum=1)
    run_name: str | None = setting(None, "Name for this run (reuse it to resume or compare).")
    #: Price tolerance: absolute ("0.01") or relative ("2%"); title similarity threshold.
    price_tolerance: str = "0.005"
    title_threshold: float = 0.6
    #: Threads that read and decode images ahead of the model.
    workers: int = setting(4, "Image decoding threads.", minimum=1)
    trust_remote_code: bool = False
    #: Process shard `index` of `count` (one process per GPU); all shards write into the same run.
    shard: tuple[int, int] = (0, 1)

    def load_backend(self) -> Backend:
        """The model this scan runs, loaded once."""
        from inspector.backends import load_backend

        return load_backend(self.model, self.backend_options())

    def backend_options(self) -> BackendOptions:
        """The backend settings among this scan's settings (those of the same names), as one object."""
        from inspector.backends import BackendOptions

        return BackendOptions(**{option.name: getattr(self, option.name) for option in fields(BackendOptions)})

    def fieldset(self) -> FieldSet:
        """The fields this scan reads: the built-ins, extended or replaced by `fields_file`. Read once (see
        `_resolved`)."""
        return self._resolved("fields", (self.fields_file,), lambda: load_fields(self.fields_file))

    def scan_prompt(self) -> Prompt:
        """The question asked: the named prompt or prompt file; the default one asks for the declared fields.
        Read once (see `_resolved`)."""
        return self._resolved(
            "prompt",
            (self.prompt, self.prompt_file, tuple(self.sizes), self.fields_file),
            lambda: get_prompt(self.prompt, self.prompt_file, self.sizes or None, self.fieldset()),
        )

    def _resolved(self, what: str, settings: tuple, resolve: Callable[[], _T]) -> _T:
        """`resolve()`'s result, computed on the first call and held by this config (not a dataclass field: not in
        the run key, the saved settings or `==`), so that a fields or prompt file edited during a scan cannot make
        its prompt, scoring and run key disagree. Computed again only if `settings` (what it was read from)
        changed. It travels with the config to shard processes and Ray actors (pickled) and through `derive`."""
        held = self.__dict__.setdefault("_resolved_files", {})
        if what not in held or held[what][0] != settings:
            held[what] = (settings, resolve())
        return held[what][1]

    def derive(self, **changes) -> ScanConfig:
        """`dataclasses.replace(self, **changes)` that keeps the fields and prompt already resolved (each one is
        read again only if a setting it depends on changed)."""
        derived = replace(self, **changes)
        derived.__dict__["_resolved_files"] = dict(self.__dict__.get("_resolved_files", {}))
        return derived

    def generation_settings(self) -> GenerationSettings:
        from inspector.backends import GenerationSettings

        return GenerationSettings(max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens)

    def run_key(self, prompt: Prompt) -> str:
        """What makes two scans the same run: every setting except those in `NOT_IN_RUN_KEY`, which change speed
        or bookkeeping but not answers (greedy decoding). Derived, not listed, so a new setting is part of a run's
        identity unless someone decides otherwise. Paths are resolved and the prompt is its text, so the same
        scan started from another folder or with a copied prompt file is still the same run. Likewise the fields
        count by their declarations, not the fields file's path; the built-ins (no file) add nothing. Likewise an
        option not given (None, False or empty, and that is its default) adds nothing, so an opt-in setting added
        in a later release keeps existing runs' keys and they resume; defaults with a value (model, dtype, lengths,
        tolerances) always count, so changing one of them in a release never resumes a run made under the old one.
        A registered model (`demo`) also counts by a digest of its weights.

        The key has a format, `RUN_KEY_FORMAT`. Keys are compared, never parsed, so the rule is: a change to what
        goes into the identity or how it is hashed either keeps every existing key (as an opt-in setting does) and
        the format stays, or it changes some existing key, and then the format goes up by one and the README says
        which runs stop resuming. Format 1 hashes the identity alone (every key stored before formats were
        numbered); later formats hash their number with it, so their keys never equal an older format's."""
        defaults = _config_defaults(type(self))
        identity = {
            k: v
            for k, v in asdict(self).items()
            if k not in NOT_IN_RUN_KEY and not (v in (None, False, [], {}, "") and v == defaults.get(k, ...))
        }
        identity["inputs"] = sorted(str(Path(i).resolve()) if "://" not in i else i for i in self.inputs)
        if self.truth:
            identity["truth"] = str(Path(self.truth).resolve())
        identity.pop("prompt_file", None)
        identity["prompt"] = prompt.text
        identity.pop("fields_file", None)
        fieldset = self.fieldset()
        if fieldset != BUILTIN_FIELDS:
            identity["fields"] = fieldset.to_json()
        entry = registered(self.model)
        if entry is not None:  # `demo` is replaced in place when retrained: new weights are a new run
            identity["model_revision"] = entry.revision()
        return run_key_digest(identity, RUN_KEY_FORMAT)


def run_key_digest(identity: dict[str, object], key_format: int) -> str:
    """A run's key from its identity in one format (see `ScanConfig.run_key`)."""
    if key_format > 1:
        identity = {**identity, "run_key_format": key_format}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _config_defaults(config_class: type) -> dict[str, object]:
    """Each setting's default value (settings without one, like `inputs`, are absent)."""
    defaults = {}
    for setting_field in fields(config_class):
        if setting_field.default is not MISSING:
            defaults[setting_field.name] = setting_field.default
        elif setting_field.default_factory is not MISSING:
            defaults[setting_field.name] = setting_field.default_factory()
    return defaults
