"""Any Hugging Face vision-language model that `AutoModelForImageTextToText` + `AutoProcessor` can load."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from PIL import Image

from inspector.backends.base import BackendError, GenerationSettings

#: Tokens that end an assistant turn in common chat formats; whichever exist in the vocabulary stop generation.
END_OF_TURN_TOKENS = ("<|end|>", "<|endoftext|>", "<end_of_utterance>", "<|im_end|>", "<|eot_id|>", "</s>")


def resolve_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def resolve_dtype(dtype: str, device: str):
    """bf16 on a GPU that supports it, fp32 on CPU (bf16 matmuls on CPU are slow and less exact)."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "half": "float16", "float": "float32"}
    value = getattr(torch, names.get(dtype, dtype), None)
    if not isinstance(value, torch.dtype):
        raise BackendError(f"unknown dtype {dtype!r}; use auto, bf16, fp16 or fp32")
    return value


def _is_local(model_name: str) -> bool:
    return Path(model_name).expanduser().exists()


def load_processor(model_name: str, trust_remote_code: bool = False, **kwargs):
    """`AutoProcessor.from_pretrained`, working around PIL image processors that transformers wrongly flags as
    needing torchvision (Idefics3 in transformers 5.17, on machines without torchvision): unflag and retry."""
    from transformers import AutoConfig, AutoProcessor

    try:
        return AutoProcessor.from_pretrained(model_name, trust_remote_code=trust_remote_code, **kwargs)
    except ValueError as error:
        if "torchvision" not in str(error):
            raise
        model_type = AutoConfig.from_pretrained(model_name, trust_remote_code=trust_remote_code).model_type
        if not _unflag_pil_image_processor(model_type.replace("-", "_")):
            raise
        return AutoProcessor.from_pretrained(model_name, trust_remote_code=trust_remote_code, **kwargs)


def _unflag_pil_image_processor(module_type: str) -> bool:
    """Clear transformers' lazy-import "needs torchvision" mark on a PIL image processor that imports fine."""
    module_name = f"image_processing_pil_{module_type}"
    try:
        package = importlib.import_module(f"transformers.models.{module_type}")
        module = importlib.import_module(f"transformers.models.{module_type}.{module_name}")
    except ImportError:
        return False
    missing = getattr(package, "_object_missing_backend", None)
    if not isinstance(missing, dict):
        return False
    names = [name for name in missing if name == module_name or (name.endswith("Pil") and hasattr(module, name))]
    for name in names:
        missing.pop(name)
        vars(package).pop(name, None)  # a placeholder cached by the failed attempt
    return bool(names)


class HFBackend:
    """Loads a VLM once and answers batches: chat template, left padding, greedy decoding, per-sequence stop."""

    def __init__(
        self,
        model_name: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        attn_implementation: str | None = None,
        num_crops: int | None = None,
    ) -> None:
        self.model_name = model_name
        self.device = resolve_device(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self.trust_remote_code = trust_remote_code
        self.num_crops = num_crops
        started = time.perf_counter()
        self.model, self.processor = self._load(attn_implementation)
        self.load_seconds = time.perf_counter() - started
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None:
            raise BackendError(f"{model_name}: its processor has no tokenizer, so it cannot answer in text")
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.chat_template = self.processor.chat_template or getattr(self.tokenizer, "chat_template", None)
        if not self.chat_template:
            raise BackendError(
                f"{model_name} has no chat template, so inspector cannot build its prompts; "
                "use an instruction-tuned checkpoint (its processor or tokenizer config carries `chat_template`)"
            )
        self.stop_token_ids = self._stop_token_ids()

    # -- loading -------------------------------------------------------------------------------------------

    def _load(self, attn_implementation: str | None):
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText

        name = self.model_name
        if _is_local(name) and not (Path(name).expanduser() / "config.json").is_file():
            raise BackendError(f"{name}: not a model folder (it has no config.json); pass a checkpoint folder")
        try:
            config = AutoConfig.from_pretrained(name, trust_remote_code=self.trust_remote_code)
        except OSError as error:
            if _is_local(name):
                raise BackendError(f"{name}: cannot read the model folder: {error}") from None
            raise BackendError(
                f"cannot load model {name!r}: it is not a local folder and could not be fetched from the Hugging "
                f"Face Hub. On a machine with internet run `hf download {name} --local-dir DIR`, copy DIR here "
                "and pass --model DIR"
            ) from None
        except ValueError as error:
            hint = "" if self.trust_remote_code else "; if it ships its own code, add --trust-remote-code"
            raise BackendError(f"{name}: transformers does not know this model type ({error}){hint}") from None
        kwargs: dict = {"dtype": self.torch_dtype, "trust_remote_code": self.trust_remote_code}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        try:
            model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
        except ValueError as error:
            if "Unrecognized configuration class" in str(error):
                raise BackendError(
                    f"{name} is a {config.model_type!r} model, not a vision-language model that "
                    "AutoModelForImageTextToText can load; pass an image-text-to-text checkpoint"
                ) from None
            raise BackendError(f"{name}: cannot load the model: {error}") from None
        except OSError as error:
            raise BackendError(f"{name}: cannot load the weights: {error}") from None
        model.to(self.device)
        model.eval()
        try:
            processor = load_processor(name, trust_remote_code=self.trust_remote_code)
        except (OSError, ValueError) as error:
            raise BackendError(f"{name}: cannot load its processor: {error}") from None
        torch.set_grad_enabled(False)
        return model, processor

    def _stop_token_ids(self) -> list[int]:
        ids: list[int] = []
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.append(configured)
        elif configured:
            ids.extend(configured)
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        vocab = self.tokenizer.get_vocab()
        ids.extend(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab)
        return sorted(set(ids))

    # -- Backend protocol ----------------------------------------------------------------------------------

    def describe(self) -> dict:
        import torch
        import transformers

        return {
            "backend": "hf",
            "model": self.model_name,
            "model_type": self.model.config.model_type,
            "model_class": type(self.model).__name__,
            "revision": getattr(self.model.config, "_commit_hash", None),
            "device": self.device,
            "dtype": str(self.torch_dtype).removeprefix("torch."),
            "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "load_seconds": round(self.load_seconds, 3),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }

    def batch_key(self, image: Image.Image) -> object:
        """Phi-3.5-vision's crop grid (equal grids → equal prompt lengths, no padding waste); None otherwise."""
        grid = getattr(self.processor.image_processor, "crop_grid", None)
        if grid is None:
            return None
        return grid(image.width, image.height, self.num_crops)

    def build_prompt(self, prompt: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def prepare(self, images: list[Image.Image], prompts: list[str], padding_side: str = "left"):
        """Processor outputs for a batch, on the model's device and dtype."""
        texts = [self.build_prompt(p) for p in prompts]
        kwargs = {}
        if self.num_crops is not None:
            kwargs["num_crops"] = self.num_crops
        self.tokenizer.padding_side = padding_side
        inputs = self.processor(
            text=texts, images=[[image] for image in images], padding=True, return_tensors="pt", **kwargs
        )
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.torch_dtype)
        return inputs

    def generate(self, images: list[Image.Image], prompts: list[str], settings: GenerationSettings) -> list[str]:
        import torch

        if len(images) != len(prompts):
            raise ValueError("one prompt per image")
        inputs = self.prepare(images, prompts)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=settings.max_new_tokens,
                min_new_tokens=settings.min_new_tokens or None,
                do_sample=settings.do_sample,
                eos_token_id=self.stop_token_ids,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
