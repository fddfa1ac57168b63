"""Chat-formatted training batches: right padding, loss only on the answer and its end-of-turn tokens.

The conversation is rendered with the processor's own chat template (user turn: image + question; assistant turn:
the target answer), so training sees exactly the prompt that `scan` sends at inference time followed by the
answer. Labels are -100 everywhere except the answer and whatever the template writes after it (``<|end|>`` and
friends), so the model learns to stop.
"""

from __future__ import annotations

from inspector.backends.hf import END_OF_TURN_TOKENS
from inspector.errors import TrainingError

IGNORE_INDEX = -100


def user_turn(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def chat_prompt(processor, question: str) -> str:
    """The prompt text scan sends for `question`: one user turn with an image, then the assistant's cue."""
    return processor.apply_chat_template(user_turn(question), add_generation_prompt=True, tokenize=False)


def chat_conversation(processor, question: str, answer: str) -> str:
    """The full training text: the user turn and the assistant's answer, closed as the template closes turns."""
    messages = user_turn(question) + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    return processor.apply_chat_template(messages, tokenize=False)


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Token ids that end an answer: the configured eos ids, the tokenizer's eos and known end-of-turn tokens."""
    ids: list[int] = []
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.append(configured)
    elif configured:
        ids.extend(configured)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.extend(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab)
    return sorted(set(ids))


class TrainingCollator:
    """Turns dataset items ({"image", "answer"}) into a model batch with `labels`.

    The answer's tokens are found by tokenising the full conversation and the prompt alone (text only, no image
    expansion): the answer is what the full text has beyond the prompt. In the processor's output (right padded)
    those tokens end each row's real tokens; the collator checks that they are there, id for id, and otherwise
    falls back to processing the prompts with their images to find where each answer starts.
    """

    def __init__(self, processor, question: str, *, num_crops: int | None = None, dtype=None) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.question = question
        self.prompt_text = chat_prompt(processor, question)
        self.processor_kwargs = {"num_crops": num_crops} if num_crops is not None else {}
        self.dtype = dtype
        self.stop_ids = set(stop_token_ids(self.tokenizer))
        self._prompt_ids = self._tokenise(self.prompt_text)
        # A template that closes the assistant turn with no stop token would teach the model never to stop.
        self.append_eos = not (set(self.answer_ids("x")) & self.stop_ids)

    def _tokenise(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def full_text(self, answer: str) -> str:
        text = chat_conversation(self.processor, self.question, answer)
        if getattr(self, "append_eos", False):
            text += self.tokenizer.eos_token
        return text

    def answer_ids(self, answer: str) -> list[int]:
        """The tokens trained on: the answer and the template's end of turn (plus eos when the template has none)."""
        full = self._tokenise(self.full_text(answer))
        prompt = self._prompt_ids
        if full[: len(prompt)] != prompt:
            raise TrainingError(
                "The chat template renders the prompt differently with and without the answer, so the answer's "
                "tokens cannot be told apart; use a model whose chat template appends the assistant turn to the "
                "generation prompt unchanged"
            )
        return full[len(prompt) :]

    def ignored_positions(self, answer: str, spans) -> list[int]:
        """Indexes into `answer_ids(answer)` of the tokens that touch a character span of `answer` in `spans`
        (a token that also holds a neighbouring quote or space is skipped whole)."""
        text = self.full_text(answer)
        at = text.find(answer, len(self.prompt_text)) if text.startswith(self.prompt_text) else -1
        if at < 0:
            raise TrainingError("The chat template changes the answer's text, so its values cannot be located")
        try:
            offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        except NotImplementedError:
            raise TrainingError(
                "Leaving unconfirmed values out of the loss needs a fast tokenizer (character offsets)"
            ) from None
        positions = []
        for index, (first, last) in enumerate(offsets[len(self._prompt_ids) :]):
            if last > first and any(first < at + end and last > at + start for start, end in spans):
                positions.append(index)
        return positions

    def _pad_side(self, side: str) -> None:
        self.tokenizer.padding_side = side

    def __call__(self, items: list[dict]):
        import torch

        answers = [item["answer"] for item in items]
        images = [[item["image"]] for item in items]
        self._pad_side("right")
        batch = self.processor(
            text=[self.full_text(a) for a in answers],
            images=images,
            padding=True,
            return_tensors="pt",
            **self.processor_kwargs,
        )
        input_ids, attention = batch["input_ids"], batch["attention_mask"]
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        lengths = attention.sum(dim=1).tolist()
        starts: list[int] | None = []
        for row, answer in enumerate(answers):
            target = self.answer_ids(answer)
            end = int(lengths[row])
            start = end - len(target)
            if start < 0 or input_ids[row, start:end].tolist() != target:
                starts = None
                break
            starts.append(start)
        if starts is None:
            starts = self._answer_starts_with_images(images, input_ids, lengths)
        for row, start in enumerate(starts):
            end = int(lengths[row])
            labels[row, start:end] = input_ids[row, start:end]
            spans = items[row].get("ignored_spans")
            if spans:
                if input_ids[row, start:end].tolist() != self.answer_ids(answers[row]):
                    raise TrainingError(
                        "Cannot leave unconfirmed values out of the loss: the processor tokenises the answer "
                        "differently inside the conversation; use another model, or train without the unconfirmed fields' runs"
                    )
                for position in self.ignored_positions(answers[row], spans):
                    labels[row, start + position] = IGNORE_INDEX
        batch["labels"] = labels
        if self.dtype is not None and "pixel_values" in batch and batch["pixel_values"].is_floating_point():
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        return batch

    def _answer_starts_with_images(self, images, input_ids, lengths) -> list[int]:
        """Slow path: process the prompts alone (images included) and check that each is a prefix of its row."""
        self._pad_side("right")
        prompts = self.processor(
            text=[self.prompt_text] * len(images),
            images=images,
            padding=True,
            return_tensors="pt",
            **self.processor_kwargs,
        )
        starts = []
        for row, prompt_length in enumerate(prompts["attention_mask"].sum(dim=1).tolist()):
            prompt_length = int(prompt_length)
            same = (
                input_ids[row, :prompt_length].tolist() == prompts["input_ids"][row, :prompt_length].tolist()
            )
            if not same or prompt_length >= int(lengths[row]):
                raise TrainingError(
                    "Cannot find where the answer starts in a training example: the processor tokenises the "
                    "prompt differently with and without the answer after it"
                )
            starts.append(prompt_length)
        return starts
