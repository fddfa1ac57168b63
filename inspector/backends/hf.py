"""Any Hugging Face vision-language model that `AutoModelForImageTextToText` + `AutoProcessor` can load."""

from __future__ import annotations

import copy
import importlib
import os
import queue
import threading
import time
from pathlib import Path

from PIL import Image

from inspector.backends.base import BackendError, Generation, GenerationSettings
from inspector.errors import InputError

#: Tokens that end an assistant turn in common chat formats; whichever exist in the vocabulary stop generation.
END_OF_TURN_TOKENS = ("<|end|>", "<|endoftext|>", "<end_of_utterance>", "<|im_end|>", "<|eot_id|>", "</s>")


def resolve_device(device: str = "auto") -> str:
    """The torch device to run on: `auto` is the first GPU if there is one, else the CPU. Anything else is checked
    (see `check_device`) so a typo or a missing GPU is one clear error before a model loads, not a traceback after."""
    import torch

    if device != "auto":
        return check_device(device)
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def check_device(device: str) -> str:
    """`device` if this machine has it; otherwise an InputError saying what is there instead."""
    if device in ("auto", "cpu"):
        return device
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cpu":
        return device
    if parsed.type == "mps" and torch.backends.mps.is_available():
        return device
    if parsed.type != "cuda":
        raise InputError(f"--device {device}: not available here; use auto, cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise InputError(
            f"--device {device}: no CUDA GPU is visible to torch {torch.__version__} (check nvidia-smi and "
            "CUDA_VISIBLE_DEVICES, or that torch was built with CUDA); use --device cpu or auto"
        )
    if parsed.index is not None and parsed.index >= count:
        raise InputError(f"--device {device}: only {count} CUDA GPU(s) visible (cuda:0 to cuda:{count - 1})")
    return device


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
    names = [
        name for name in missing if name == module_name or (name.endswith("Pil") and hasattr(module, name))
    ]
    for name in names:
        missing.pop(name)
        vars(package).pop(name, None)  # a placeholder cached by the failed attempt
    return bool(names)


def _adapter_base_model(folder: Path) -> str | None:
    """The base model a peft adapter folder was trained from, or None if `folder` holds no adapter."""
    import json

    try:
        return json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
        fast_decode: bool | None = None,
        fuse: str = "auto",
        quantize: str = "none",
    ) -> None:
        self.model_name = model_name
        self.device = resolve_device(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self.trust_remote_code = trust_remote_code
        self.num_crops = num_crops
        started = time.perf_counter()
        self.model, self.processor = self._load(attn_implementation)
        self.load_seconds = time.perf_counter() - started
        self._setup(fast_decode, fuse, quantize)

    @classmethod
    def from_loaded(
        cls,
        model,
        processor,
        model_name: str,
        *,
        num_crops: int | None = None,
        fast_decode: bool | None = None,
        fuse: str = "auto",
        quantize: str = "none",
    ) -> HFBackend:
        """Wrap a model and processor already in memory (benchmarks build one model and time several paths)."""

        backend = cls.__new__(cls)
        backend.model_name = model_name
        parameter = next(model.parameters())
        backend.device = str(parameter.device)
        backend.torch_dtype = parameter.dtype
        backend.trust_remote_code = False
        backend.num_crops = num_crops
        backend.model, backend.processor = model.eval(), processor
        backend.load_seconds = 0.0
        backend._setup(fast_decode, fuse, quantize)
        return backend

    def _setup(self, fast_decode: bool | None, fuse: str = "none", quantize: str = "none") -> None:
        from inspector.speedups import fuse as fuse_model
        from inspector.speedups import quantize as quantize_model
        from inspector.speedups import resolve_fusion

        model_name = self.model_name
        self.quantization = quantize
        quantize_model(self.model, quantize)  # before fusing: compiled modules then see the fp8 layers
        self.fusion = resolve_fusion(fuse, self.device)
        fuse_model(self.model, self.fusion)
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
        self._pieces = TokenPieces(self.tokenizer)
        self._spare_processors: queue.SimpleQueue = queue.SimpleQueue()
        self._prompt_lock = threading.Lock()
        self._prompt_cache: dict[str, str] = {}
        self.fast_decoder = self._fast_decoder(fast_decode)

    def _fast_decoder(self, wanted: bool | None):
        """inspector.fastgen's greedy decoder where the model supports it (Phi-3.5-vision); None otherwise.

        `fast_decode=None` means: use it when supported, unless the environment sets INSPECTOR_FAST_DECODE=0."""
        if wanted is None:
            wanted = os.environ.get("INSPECTOR_FAST_DECODE", "1") != "0"
        if not wanted:
            return None
        from inspector.fastgen import GreedyDecoder, unsupported_reason

        if unsupported_reason(self.model) is not None:
            return None  # any other model: transformers' generate()
        return GreedyDecoder(self.model, compile=self.fusion == "compile")

    # -- loading -------------------------------------------------------------------------------------------

    def _load(self, attn_implementation: str | None):
        from transformers import AutoConfig, AutoModelForImageTextToText

        name = self.model_name
        folder = Path(name).expanduser()
        config_source = name
        if _is_local(name) and not (folder / "config.json").is_file():
            config_source = _adapter_base_model(
                folder
            )  # `inspector train --keep-adapter` output: its base model
            if config_source is None:
                raise BackendError(
                    f"{name}: not a model folder (it has no config.json); pass a checkpoint folder"
                )
        try:
            config = AutoConfig.from_pretrained(config_source, trust_remote_code=self.trust_remote_code)
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
            raise BackendError(
                f"{name}: transformers does not know this model type ({error}){hint}"
            ) from None
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
            "decoder": "fastgen" if self.fast_decoder is not None else "generate",
            "fuse": self.fusion,
            "quantize": self.quantization,
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
        text = self._prompt_cache.get(prompt)
        if text is None:
            with self._prompt_lock:  # loader threads may ask at once; render on the shared processor once
                messages = [
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
                ]
                text = self.processor.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
                self._prompt_cache[prompt] = text
        return text

    def _processor_kwargs(self) -> dict:
        return {"num_crops": self.num_crops} if self.num_crops is not None else {}

    def prepare(self, images: list[Image.Image], prompts: list[str], padding_side: str = "left"):
        """Processor outputs for a batch, on the model's device and dtype."""
        texts = [self.build_prompt(p) for p in prompts]
        self.tokenizer.padding_side = padding_side
        inputs = self.processor(
            text=texts,
            images=[[image] for image in images],
            padding=True,
            return_tensors="pt",
            **self._processor_kwargs(),
        )
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.torch_dtype)
        return inputs

    # -- inputs prepared ahead, off the model's thread ---------------------------------------------------------

    @property
    def prepares_items(self) -> bool:
        """Whether `prepare_item` + `generate_prepared` work for this processor: each image's inputs can be made
        alone (in a loader thread) and stacked later. True for Phi-3.5-vision, whose images of any shape stack."""
        image_processor = getattr(self.processor, "image_processor", None)
        return hasattr(image_processor, "crop_grid")

    def _borrow_processor(self):
        """A processor copy no other thread is using (fast tokenizers must not be used from two threads at once).
        Copies are kept for the next call and the next scan: a copy takes ~0.1-0.2 s, under the GIL."""
        try:
            return self._spare_processors.get_nowait()
        except queue.Empty:
            processor = copy.deepcopy(self.processor)
            processor.tokenizer.padding_side = "left"
            return processor

    def prepare_item(self, image: Image.Image, prompt: str) -> dict:
        """One image's model inputs on the CPU (pixels already in the model's dtype, in pinned memory when the
        model is on a GPU, so the copy to it is asynchronous). Safe to call from several threads."""
        import torch

        text = self.build_prompt(prompt)
        processor = self._borrow_processor()
        try:
            inputs = processor(
                text=[text], images=[[image]], padding=False, return_tensors="pt", **self._processor_kwargs()
            )
        finally:
            self._spare_processors.put(processor)
        item = dict(inputs)
        pixels = item.get("pixel_values")
        if pixels is not None and pixels.is_floating_point():
            pixels = pixels.to(self.torch_dtype)
            if self.device.startswith("cuda") and torch.cuda.is_available():
                pixels = pixels.pin_memory()
            item["pixel_values"] = pixels
        return item

    def collate(self, items: list[dict]):
        """Stack `prepare_item` outputs into one left-padded batch on the model's device (what `prepare` gives)."""
        import torch
        from transformers import BatchFeature

        lengths = [item["input_ids"].shape[-1] for item in items]
        longest = max(lengths)
        input_ids = torch.full((len(items), longest), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, (item, length) in enumerate(zip(items, lengths, strict=True)):
            input_ids[row, longest - length :] = item["input_ids"][0]
            attention_mask[row, longest - length :] = item["attention_mask"][0]
        batch = {
            "input_ids": input_ids.to(self.device, non_blocking=True),
            "attention_mask": attention_mask.to(self.device, non_blocking=True),
        }
        for key in items[0]:
            if key in batch:
                continue
            parts = [item[key] for item in items]
            batch[key] = torch.cat([part.to(self.device, non_blocking=True) for part in parts])
        return BatchFeature(batch)

    def generate_prepared(self, items: list[dict], settings: GenerationSettings) -> list[Generation]:
        """Answers for inputs made by `prepare_item` (in order)."""
        return self._generate_inputs(self.collate(items), settings)

    # -- answering ---------------------------------------------------------------------------------------------

    def memory_per_image(self, settings: GenerationSettings) -> int | None:
        """Rough GPU bytes one image of a batch needs (KV cache for the longest prompt plus the answer, and prefill
        activations), for `--batch-size auto`; None when unknown."""
        if self.fast_decoder is None:
            return None
        image_processor = self.processor.image_processor
        num_crops = self.num_crops or image_processor.num_crops
        grids = [
            (h, w) for h in range(1, num_crops + 1) for w in range(1, num_crops + 1) if h * w <= num_crops
        ]
        image_tokens = max(image_processor._tokens_for_grid(h, w) for h, w in grids)
        tokens = image_tokens + 256 + settings.max_new_tokens
        activation_per_token = 40 * self.model.config.hidden_size
        return tokens * (self.fast_decoder.kv_bytes_per_token() + activation_per_token) + 64 * 2**20

    def generate(
        self, images: list[Image.Image], prompts: list[str], settings: GenerationSettings
    ) -> list[Generation]:
        if len(images) != len(prompts):
            raise ValueError("one prompt per image")
        return self._generate_inputs(self.prepare(images, prompts), settings)

    def _fast_decoder_fits(self, inputs, settings: GenerationSettings) -> bool:
        """The fast decoder declines sequences past long-rope's original length (its factors switch there)."""
        limit = getattr(self.model.config, "original_max_position_embeddings", None)
        return not limit or inputs["input_ids"].shape[-1] + settings.max_new_tokens + 1 <= limit

    def _generate_inputs(self, inputs, settings: GenerationSettings) -> list[Generation]:
        import torch
        from transformers import LogitsProcessorList

        logprobs = None
        if self.fast_decoder is not None and not settings.do_sample and self._fast_decoder_fits(inputs, settings):
            new_tokens, logprobs = self.fast_decoder.generate(
                inputs,
                max_new_tokens=settings.max_new_tokens,
                min_new_tokens=settings.min_new_tokens,
                stop_token_ids=self.stop_token_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                return_logprobs=True,
            )
        else:
            recorder = None if settings.do_sample else GreedyLogprobRecorder()
            with torch.inference_mode():
                output = self.model.generate(
                    **inputs,
                    max_new_tokens=settings.max_new_tokens,
                    min_new_tokens=settings.min_new_tokens or None,
                    do_sample=settings.do_sample,
                    eos_token_id=self.stop_token_ids,
                    pad_token_id=self.tokenizer.pad_token_id,
                    logits_processor=LogitsProcessorList([recorder] if recorder else []),
                )
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            if recorder is not None:
                logprobs = recorder.logprobs(new_tokens.shape[1])
        return self._answers(new_tokens.cpu(), None if logprobs is None else logprobs.cpu())

    def _answers(self, new_tokens, logprobs) -> list[Generation]:
        """Decoded answers with each token's text piece and log-probability (pieces only where they add up to
        exactly the decoded text; otherwise the answer carries no token information, and no confidence)."""
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        if logprobs is None:
            return [Generation(text.strip()) for text in texts]
        stops = set(self.stop_token_ids)
        answers = []
        for row, text in enumerate(texts):
            ids = new_tokens[row].tolist()
            length = next((i + 1 for i, token in enumerate(ids) if token in stops), len(ids))
            pieces = self._pieces(ids[:length], text)
            if pieces is None:
                answers.append(Generation(text.strip()))
                continue
            answers.append(
                Generation(text.strip(), tuple(pieces), tuple(logprobs[row, :length].tolist()), tuple(ids[:length]))
            )
        return answers


class GreedyLogprobRecorder:
    """A logits processor, run last, that records the log-probability of the token greedy search picks at each
    step: the picked token is the arg-max of the processed scores, so its log-probability is max - logsumexp.
    Keeps (B,) floats per step instead of `output_scores`' (B, vocabulary) tensors."""

    def __init__(self) -> None:
        self._steps: list = []

    def __call__(self, input_ids, scores):
        scores32 = scores.float()
        self._steps.append(scores32.max(-1).values - scores32.logsumexp(-1))
        return scores

    def logprobs(self, width: int):
        """(B, width) log-probabilities of the generated tokens (steps past the recorded ones are 0)."""
        import torch

        if not self._steps:
            return None
        values = torch.stack(self._steps[:width], dim=1)
        if values.shape[1] < width:
            values = torch.nn.functional.pad(values, (0, width - values.shape[1]))
        return values


class TokenPieces:
    """Each token's text piece, fast: a token's piece is almost always the same wherever it stands, so pieces are
    cached per token id (decoded after a fixed anchor token, which keeps a leading space) and an answer costs one
    lookup per token. Where the cached pieces do not add up to the decoded answer (byte tokens of a multi-byte
    character, tokenizers that clean up spaces) the answer falls back to `token_pieces`' exact sliding window;
    where even those do not add up, None (the answer gets no token information)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}
        anchor = tokenizer.encode("a", add_special_tokens=False)
        self._anchor = anchor[-1:] if anchor else []
        self._anchor_text = tokenizer.decode(self._anchor, skip_special_tokens=True)

    def _piece(self, token: int) -> str:
        piece = self._cache.get(token)
        if piece is None:
            text = self.tokenizer.decode([*self._anchor, token], skip_special_tokens=True)
            piece = text[len(self._anchor_text) :] if text.startswith(self._anchor_text) else "\ufffd"
            self._cache[token] = piece
        return piece

    def __call__(self, ids: list[int], text: str) -> list[str] | None:
        """Pieces of `ids`, whose decoded text is `text`, consistent with it up to surrounding whitespace."""
        pieces = [self._piece(token) for token in ids]
        if "".join(pieces).strip() == text.strip():
            return pieces
        pieces = token_pieces(self.tokenizer, ids)
        return pieces if "".join(pieces).strip() == text.strip() else None


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """The text each token adds to the decoded answer (`skip_special_tokens=True`), so that the pieces joined
    equal the decoded text. Decodes a sliding window of a few tokens (SentencePiece drops the first token's
    leading space and multi-byte characters span several byte tokens, so tokens cannot be decoded one by one); a
    token that ends inside a character gets an empty piece and the token completing it gets the character."""
    pieces: list[str] = []
    start, prefix = 0, ""
    for index in range(len(ids)):
        text = tokenizer.decode(ids[start : index + 1], skip_special_tokens=True)
        if text.endswith("\ufffd") or not text.startswith(prefix):
            pieces.append("")
            continue
        pieces.append(text[len(prefix) :])
        start = max(start, index - 3)
        prefix = tokenizer.decode(ids[start : index + 1], skip_special_tokens=True)
    return pieces
