"""Loading the model for training, what to train (full, LoRA, frozen vision tower) and how to save the result.

The vision part of a VLM is found by `inspector.modelparts` (shared with inference); LoRA adapts every linear
layer outside it except the output head, unless told which.
"""

from __future__ import annotations

from pathlib import Path

from inspector.backends.base import BackendError, BackendOptions
from inspector.errors import TrainingError
from inspector.modelparts import VISION_MODULE_NAMES, language_linear_names, vision_modules


def vision_parameters(model) -> dict[str, object]:
    """Parameters of the vision tower and projector, by qualified name (also bare parameters such as
    LLaVA-NeXT's image_newline)."""
    prefixes = tuple(vision_modules(model))
    return {
        name: parameter
        for name, parameter in model.named_parameters()
        if name.startswith(tuple(p + "." for p in prefixes))
        or name in prefixes
        or name.rsplit(".", 1)[-1] in VISION_MODULE_NAMES  # a bare parameter: named_modules() misses it
    }


def freeze_vision(model) -> int:
    """Freeze the vision tower and projector; returns how many parameters were frozen."""
    parameters = vision_parameters(model)
    if not parameters:
        raise TrainingError(
            f"Cannot find the vision tower of this {type(model).__name__} (looked for modules named "
            f"{', '.join(VISION_MODULE_NAMES)}); use --method full or --method lora"
        )
    for parameter in parameters.values():
        parameter.requires_grad_(False)
    return sum(p.numel() for p in parameters.values())


def apply_lora(model, r: int, alpha: int, dropout: float, targets: list[str] | None):
    """Wrap `model` with LoRA adapters (peft) on `targets` (default: `language_linear_names`)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise TrainingError(
            "--method lora needs peft: pip install 'inspector[train]' (or pip install peft)"
        ) from None
    target_modules = list(targets) if targets else language_linear_names(model)
    if not target_modules:
        raise TrainingError(f"No linear layers to adapt in this {type(model).__name__}; pass --lora-targets")
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, bias="none"
    )
    return get_peft_model(model, config)


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def merged_state_dict(peft_model) -> dict:
    """The base model's weights with every LoRA update added in, without touching the training model.

    Keys are the base model's own (no ``base_layer`` or ``lora_`` entries), so `save_pretrained` of the base
    model with this state dict writes an ordinary checkpoint that loads without peft.
    """
    import torch
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    adapter = peft_model.active_adapter
    state: dict[str, torch.Tensor] = {}
    for name, tensor in base.state_dict().items():
        if ".lora_" in name:
            continue
        state[name.replace(".base_layer.", ".")] = tensor.detach()
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer) and adapter in getattr(module, "lora_A", {}):
                weight = module.get_base_layer().weight
                delta = module.get_delta_weight(adapter)
                state[f"{name}.weight"] = (weight.float() + delta.float()).to(weight.dtype)
    return state


def save_model(model, folder: str | Path, *, keep_adapter: bool = False) -> None:
    """Save weights and config so that `from_pretrained(folder)` loads them: LoRA merged unless `keep_adapter`
    (then the adapter alone, which transformers loads on top of its base model)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if is_peft_model(model):
        if keep_adapter:
            model.save_pretrained(folder)
            return
        model.get_base_model().save_pretrained(folder, state_dict=merged_state_dict(model))
        return
    model.save_pretrained(folder)


def count_parameters(model) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    total = trainable = 0
    for parameter in model.parameters():
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return total, trainable


def resolve_precision(
    precision: str, method: str, total_params: int, trainable_params: int
) -> tuple[str, bool]:
    """(weights dtype name, bf16 autocast) for a precision setting.

    "auto": fp32 on CPU or a GPU without bf16. On a bf16 GPU: LoRA keeps frozen base weights in bf16 (adapters
    stay fp32); full and frozen-vision training use fp32 master weights with bf16 autocast ("mixed") when fp32
    weights, gradients and AdamW states fit in 75% of the GPU's memory, otherwise bf16 weights ("bf16": the
    Phi-3 cookbook recipe; half the memory, but updates much smaller than a weight are rounded away).
    """
    import torch

    cuda = torch.cuda.is_available()
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if precision == "auto":
        if not bf16_ok:
            precision = "fp32"
        elif method == "lora":
            precision = "bf16"
        else:
            needed = total_params * 4 + trainable_params * 12  # weights + grads + two AdamW moments, fp32
            memory = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
            precision = "mixed" if needed < 0.75 * memory else "bf16"
    if precision in ("bf16", "mixed") and not bf16_ok:
        raise TrainingError(f"--precision {precision} needs a GPU with bf16 support; use --precision fp32")
    return {"bf16": ("bfloat16", True), "mixed": ("float32", True), "fp32": ("float32", False)}[precision]


def estimate_parameters(model_name: str, method: str, options: BackendOptions) -> tuple[int, int]:
    """(all, trainable) parameter counts, from the config alone (the model is built on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    trust = options.trust_remote_code
    try:
        config = AutoConfig.from_pretrained(model_name, trust_remote_code=trust)
    except (OSError, ValueError) as error:
        raise _load_error(model_name, error, trust) from None
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, trust_remote_code=trust)
    total = sum(p.numel() for p in model.parameters())
    if method == "frozen-vision":
        return total, total - sum(p.numel() for p in vision_parameters(model).values())
    return total, total


def load_model(model_name: str, options: BackendOptions):
    """The VLM and its processor for training, loaded as `options` say (`TrainConfig.backend_options`): weights
    in `options.dtype`, its own code only with `trust_remote_code`, `attn_implementation`, and fused kernels
    (`options.fuse`, resolved for the device training runs on); with errors that say what to do. (`num_crops`
    is a setting of each processor call: the collator's and the evaluation's.)"""
    import torch
    from transformers import AutoModelForImageTextToText

    from inspector.backends.hf import load_processor, resolve_dtype
    from inspector.speedups import fuse, resolve_fusion

    device = "cuda" if torch.cuda.is_available() else "cpu"
    trust = options.trust_remote_code
    kwargs: dict = {"dtype": resolve_dtype(options.dtype, device), "trust_remote_code": trust}
    if options.attn_implementation:
        kwargs["attn_implementation"] = options.attn_implementation
    try:
        model = AutoModelForImageTextToText.from_pretrained(model_name, **kwargs)
    except (OSError, ValueError) as error:
        raise _load_error(model_name, error, trust) from None
    try:
        processor = load_processor(model_name, trust_remote_code=trust)
    except (OSError, ValueError) as error:
        raise BackendError(f"{model_name}: cannot load its processor: {error}") from None
    if getattr(processor, "tokenizer", None) is None:
        raise BackendError(
            f"{model_name}: its processor has no tokenizer, so it cannot be trained to answer in text"
        )
    if not (processor.chat_template or getattr(processor.tokenizer, "chat_template", None)):
        raise BackendError(
            f"{model_name} has no chat template, so inspector cannot build its prompts; use an instruction-tuned "
            "checkpoint (its processor or tokenizer config carries `chat_template`)"
        )
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    fuse(model, resolve_fusion(options.fuse, device))
    return model, processor


def _load_error(model_name: str, error: Exception, trust_remote_code: bool) -> BackendError:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, OSError):
        if Path(model_name).expanduser().exists():
            return BackendError(f"{model_name}: not a loadable model folder ({first_line})")
        return BackendError(
            f"cannot load model {model_name!r}: it is not a local folder and could not be fetched from the Hugging "
            f"Face Hub; download it on a machine with internet (`hf download {model_name} --local-dir DIR`) and "
            "pass --model DIR"
        )
    if "Unrecognized configuration class" in str(error):
        return BackendError(
            f"{model_name} is not a vision-language model that AutoModelForImageTextToText can load; "
            "pass an image-text-to-text checkpoint"
        )
    hint = "" if trust_remote_code else " (if it ships its own code, add --trust-remote-code)"
    return BackendError(f"{model_name}: cannot load the model: {first_line}{hint}")
