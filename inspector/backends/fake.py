"""A backend that replays queued answers: CLI and pipeline tests run in milliseconds without any model."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from PIL import Image

from inspector.backends.base import BackendError, GenerationSettings


class FakeBackend:
    """Answers from a queue (or a function of image and prompt); records every call for assertions.

    `fake:FILE` on the command line loads answers from FILE: a JSON list of strings, or one answer per line.
    When the queue runs dry it answers `default` (an empty answer unless given).
    """

    def __init__(
        self,
        answers: Iterable[str] | Callable[[Image.Image, str], str] = (),
        *,
        model_name: str = "fake",
        default: str = "",
        fail_on: Callable[[Image.Image, str], BaseException | None] | None = None,
    ) -> None:
        self.model_name = model_name
        self._answer_fn = answers if callable(answers) else None
        self._queue: deque[str] = deque() if callable(answers) else deque(answers)
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
        try:
            answers = json.loads(text)
            if not isinstance(answers, list):
                raise ValueError
            answers = [a if isinstance(a, str) else json.dumps(a) for a in answers]
        except ValueError:
            answers = text.splitlines()
        return cls(answers, model_name=f"fake:{path.name}")

    def queue(self, *answers: str) -> None:
        self._queue.extend(answers)

    def describe(self) -> dict:
        return {"backend": "fake", "model": self.model_name, "device": "cpu", "dtype": None}

    def batch_key(self, image: Image.Image) -> object:
        return None

    def generate(self, images: list[Image.Image], prompts: list[str], settings: GenerationSettings) -> list[str]:
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
