"""Speed-ups applied to a loaded model: fused element-wise work and fp8 linear layers.

A Phi-3.5-vision scan spends most of its GPU time in the prefill, whose matrix products already run near the card's
peak; what is left is memory traffic between them (RMSNorm in fp32, rotary embeddings, SiLU·up, CLIP's quick-GELU and
LayerNorms, residual adds), one kernel per element-wise op. Two ways to fuse it:

- ``compile``: `torch.compile` (Inductor) of the modules that hold that work — the language model's RMSNorms and
  MLPs and CLIP's encoder layers — in place. Always available with torch; the first batch of each shape compiles.
- ``liger``: liger-kernel's Triton kernels for Phi-3 (RMSNorm, rotary, SiLU·up), an optional extra
  (``pip install 'inspector[liger]'``); its rotary patch applies to every Phi-3 model in the process.

Both keep bf16 inputs and outputs; fused kernels round intermediates differently, so bf16 answers can differ in
rare near-ties (BENCHMARKS.md measures how often). ``fp8`` (opt-in, ``--quantize fp8``, torchao) turns the
language model's linear layers into float8 (per-row scales, dynamic activations): faster matrix products, answers
that may change (its agreement with bf16 is measured in BENCHMARKS.md).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from inspector.errors import InputError, MissingExtraError

#: How the prefill's element-wise work is fused: "auto" is "compile" on a GPU and "none" on the CPU.
FUSIONS: tuple[str, ...] = ("auto", "compile", "liger", "none")
#: Opt-in quantisations that may change answers.
QUANTIZATIONS: tuple[str, ...] = ("none", "fp8")

#: torch.compile backend of the compiled paths (tests switch to "aot_eager": same tracing, no code generation).
COMPILE_BACKEND = "inductor"

#: Module classes whose forward is compiled in place by `fuse(model, "compile")`.
COMPILED_CLASSES: tuple[str, ...] = ("Phi3RMSNorm", "Phi3MLP", "CLIPEncoderLayer")


def require(package: str, extra: str, flag: str) -> ModuleType:
    """Import an optional dependency, or fail with one line saying how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise MissingExtraError(
            f"{flag} needs the {package} package: pip install 'inspector[{extra}]' (or pip install {package})"
        ) from None


def check_extras(fusion: str, quantization: str) -> None:
    """Fail early (before a model loads) when a chosen fusion or quantisation needs a package that is missing."""
    if fusion == "liger" and importlib.util.find_spec("liger_kernel") is None:
        require("liger_kernel", "liger", "--fuse liger")
    if quantization == "fp8" and importlib.util.find_spec("torchao") is None:
        require("torchao", "fp8", "--quantize fp8")


def resolve_fusion(fusion: str, device: str) -> str:
    """The fusion a setting means on this device ("auto": compile on CUDA, none elsewhere)."""
    if fusion not in FUSIONS:
        raise InputError(f"unknown fusion {fusion!r}; use one of: {', '.join(FUSIONS)}")
    if fusion == "auto":
        # Inductor's GPU kernels are Triton kernels: no Triton (an unusual torch build), no compiled path.
        has_triton = importlib.util.find_spec("triton") is not None
        return "compile" if str(device).startswith("cuda") and has_triton else "none"
    return fusion


def fuse(model, fusion: str) -> list[str]:
    """Fuse the element-wise work of `model` in place ("compile", "liger" or "none"); returns what was changed."""
    if fusion == "none":
        return []
    if fusion == "compile":
        allow_recompiles()
        changed = []
        for name, module in model.named_modules():
            if type(module).__name__ in COMPILED_CLASSES:
                module.compile(backend=COMPILE_BACKEND, dynamic=None)
                changed.append(name)
        return changed
    if fusion == "liger":
        require("liger_kernel", "liger", "--fuse liger")
        from liger_kernel.transformers.monkey_patch import apply_liger_kernel_to_phi3

        decoder = _phi3_decoder(model)
        if decoder is None:
            raise InputError(
                f"--fuse liger supports Phi-3 language models; this is a {type(model).__name__}: use --fuse compile"
            )
        apply_liger_kernel_to_phi3(
            rope=True,
            rms_norm=True,
            swiglu=True,
            cross_entropy=False,
            fused_linear_cross_entropy=False,
            model=_Holder(decoder),
        )
        return [f"{len(decoder.layers)} Phi-3 layers"]
    raise InputError(f"unknown fusion {fusion!r}; use one of: {', '.join(FUSIONS)}")


def allow_recompiles(limit: int = 64) -> None:
    """Let Dynamo keep more compiled variants per function. Every compiled module shares `Module._call_impl`'s
    cache (RMSNorm, MLP and CLIP layers, each at prefill and decode shapes, static then dynamic): past the default
    limit of 8, new variants would silently run uncompiled."""
    from torch._dynamo import config

    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), limit))


def unfuse_compiled(model) -> None:
    """Undo `fuse(model, "compile")` (benchmarks compare paths on one model)."""
    for module in model.modules():
        if type(module).__name__ in COMPILED_CLASSES:
            module._compiled_call_impl = None


class _Holder:
    """What liger's instance patcher reads: `model.<base_model_prefix>` is the decoder with `.norm` and `.layers`."""

    base_model_prefix = "decoder"

    def __init__(self, decoder) -> None:
        self.decoder = decoder


def _phi3_decoder(model):
    """The Phi-3 decoder (with .layers of Phi3DecoderLayer and .norm) inside `model`, or None."""
    import torch
    from transformers.models.phi3.modeling_phi3 import Phi3DecoderLayer

    for module in model.modules():
        layers = getattr(module, "layers", None)
        if (
            hasattr(module, "norm")
            and isinstance(layers, torch.nn.ModuleList)
            and len(layers)
            and all(isinstance(layer, Phi3DecoderLayer) for layer in layers)
        ):
            return module
    return None


def quantize(model, quantization: str) -> int:
    """Apply an opt-in quantisation to the language model's linear layers; returns how many were converted.

    "fp8": torchao float8, dynamic per-row activation scales and per-row weight scales (H100/H200 or newer).
    The vision tower and the output head stay bf16."""
    if quantization == "none":
        return 0
    if quantization != "fp8":
        raise InputError(f"unknown quantization {quantization!r}; use one of: {', '.join(QUANTIZATIONS)}")
    import torch

    device = next(model.parameters()).device
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        raise InputError(
            "--quantize fp8 needs an NVIDIA GPU with fp8 (Ada, Hopper or newer); drop --quantize"
        )
    require("torchao", "fp8", "--quantize fp8")
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    from inspector.modelparts import language_linear_names

    names = set(language_linear_names(model))
    # A row of zeros (a padding token's embedding, a separator embedding that is still zero) has amax 0, hence a
    # scale of 0 and 0/0 = NaN everywhere after it: floor amax (a zero row then stays zero).
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), activation_value_lb=1e-12)
    quantize_(model, config, filter_fn=lambda module, name: name in names)
    return len(names)
