"""A backend that replays queued answers: CLI and pipeline tests run in milliseconds without any model."""

from __future__ import annotations

import hashlib
import json
import math
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from PIL import Image

from inspector.backends.base import BackendError, Generation, GenerationSettings


class FakeBackend:
    """Answers from a queue (or a function of image and prompt); records every call for assertions.

    `fake:FILE` on the command line loads answers from FILE: a JSON list of strings, or one answer per line, or
    `{"answers": [...]}` whose entries are strings or `{"answer": ..., "confidence": {"category": 0.97, ...}}`
    (answers whose named fields get exactly these confidences, to drive the review features in tests and demos);
    or a JSON object mapping `pixel_key(image)` to its answer (scans spread over several processes, where a
    queue's order would depend on which process got which image).
    When the queue runs dry it answers `default` (an empty answer unless given).
    """

    def __init__(
        self,
        answers: Iterable[str | Generation] | Callable[[Image.Image, str], str | Generation] = (),
        *,
        model_name: str = "fake",
        default: str = "",
        fail_on: Callable[[Image.Image, str], BaseException | None] | None = None,
    ) -> None:
        self.model_name = model_name
        self._answer_fn = answers if callable(answers) else None
        self._queue: deque[str | Generation] = deque() if callable(answers) else deque(answers)
        self.default = default
        self.fail_on = fail_on
        self.calls: list[tuple[int, list[str]]] = []

    @classmethod
    def from_file(cls, path: str | Path) -> FakeBackend:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise BackendError(f"fake model answers file {path}: {error.strerror or error}") from None
        answers: list[str | Generation]
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("answers"), list):
            answers = [_entry(entry, path, number) for number, entry in enumerate(data["answers"], 1)]
        elif isinstance(data, dict):  # {pixel_key: answer}: the same answer for an image whichever process asks
            by_pixels = {str(k): _as_text(v) for k, v in data.items()}
            return cls(
                lambda image, _prompt: by_pixels.get(pixel_key(image), ""), model_name=f"fake:{path.name}"
            )
        elif isinstance(data, list):
            answers = [_as_text(a) for a in data]
        else:
            answers = text.splitlines()
        return cls(answers, model_name=f"fake:{path.name}")

    def queue(self, *answers: str | Generation) -> None:
        self._queue.extend(answers)

    def describe(self) -> dict:
        return {"backend": "fake", "model": self.model_name, "device": "cpu", "dtype": None}

    def batch_key(self, image: Image.Image) -> object:
        return None

    def generate(
        self, images: list[Image.Image], prompts: list[str], settings: GenerationSettings
    ) -> list[str | Generation]:
        self.calls.append((len(images), list(prompts)))
        answers = []
        for image, prompt in zip(images, prompts, strict=True):
            if self.fail_on is not None and (error := self.fail_on(image, prompt)) is not None:
                raise error
            if self._answer_fn is not None:
                answers.append(self._answer_fn(image, prompt))
            else:
                answers.append(self._queue.popleft() if self._queue else self.default)
        return answers


def _entry(entry: object, path: Path, number: int) -> str | Generation:
    """One entry of an `{"answers": [...]}` file."""
    if isinstance(entry, str):
        return entry
    if not isinstance(entry, dict) or "answer" not in entry:
        raise BackendError(f'{path}: answer {number} must be a string or {{"answer": ..., "confidence": {{...}}}}')
    text = entry["answer"] if isinstance(entry["answer"], str) else json.dumps(entry["answer"])
    confidences = entry.get("confidence") or {}
    if not isinstance(confidences, dict) or not all(
        isinstance(p, (int, float)) and 0 < p <= 1 for p in confidences.values()
    ):
        raise BackendError(f"{path}: answer {number}: confidence must map field names to numbers in (0, 1]")
    return answer_with_confidences(text, confidences, f"{path}: answer {number}")


def answer_with_confidences(text: str, confidences: dict[str, float], where: str = "answer") -> Generation:
    """An Generation whose tokens (one per character) give each named field's value exactly that confidence under
    the real rule (the value's first character carries the probability, every other character 1)."""
    from inspector.confidence import field_values
    from inspector.parsing import parse_answer, value_spans

    values = field_values(parse_answer(text))
    spans = value_spans(text, {name: values.get(name) for name in confidences})
    missing = sorted(set(confidences) - set(spans))
    if missing:
        raise BackendError(f"{where}: it gives no value for {', '.join(missing)}, so it cannot have a confidence")
    logprobs = [0.0] * len(text)
    for name, (start, _end) in spans.items():
        logprobs[start] = math.log(confidences[name])
    return Generation(text, tuple(text), tuple(logprobs))


def pixel_key(image: Image.Image) -> str:
    """sha256 of a decoded image's pixels: what a keyed answers file maps to an answer."""
    return hashlib.sha256(image.tobytes()).hexdigest()


def _as_text(answer: object) -> str:
    return answer if isinstance(answer, str) else json.dumps(answer)
