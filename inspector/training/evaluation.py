"""Evaluation by generation: the model answers validation images as a scan would, and the scan scorer grades it.

No teacher forcing: answers come from `generate()` (left padding, greedy, stop at end of turn), are read with
`parse_answer` and compared with the catalogue by `score_answer`; `summarise_answers` gives the per-field figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from inspector.fields import BUILTIN_FIELDS, FieldResult, FieldSet, Outcome
from inspector.parsing import parse_answer
from inspector.scoring import (
    SIZE_FIELD_PREFIX,
    PriceTolerance,
    score_answer,
    summarise_answers,
)
from inspector.training.collator import chat_prompt, stop_token_ids
from inspector.training.data import Example, ExampleDataset
from inspector.training.metrics import amount_names, scored_names


@dataclass
class AnswerRecord:
    """One validation image's generated answer and how it scored."""

    example: Example
    answer: str
    results: list[FieldResult]


@dataclass
class EvaluationOutcome:
    #: Trainer-style figures, all prefixed "eval_".
    metrics: dict[str, float]
    records: list[AnswerRecord]


def generation_metrics(
    records: list[AnswerRecord], scored_fields: list[str], fieldset: FieldSet = BUILTIN_FIELDS
) -> dict[str, float]:
    """eval_<field>_accuracy per field, eval_price_mae / eval_size_price_mae, eval_field_accuracy (the mean of
    the accuracies of `scored_fields`), eval_exact_match (every field right) and eval_parsed (answers that
    parse_answer read anything from)."""
    summary = summarise_answers([record.results for record in records], fieldset)
    # Every figure is always there (NaN when nothing was measured) so that any of them can pick the best model.
    metrics: dict[str, float] = {f"eval_{name}_accuracy": math.nan for name in scored_names(fieldset)}
    metrics.update({f"eval_{name}_mae": math.nan for name in amount_names(fieldset)})
    for name, figures in summary.items():
        if figures.accuracy is not None:
            metrics[f"eval_{name}_accuracy"] = figures.accuracy
        if figures.mean_abs_error is not None:
            metrics[f"eval_{name}_mae"] = figures.mean_abs_error
    accuracies = [
        metrics[f"eval_{n}_accuracy"] for n in scored_fields if not math.isnan(metrics[f"eval_{n}_accuracy"])
    ]
    metrics["eval_field_accuracy"] = sum(accuracies) / len(accuracies) if accuracies else 0.0
    right = (Outcome.CORRECT, Outcome.BOTH_EMPTY)
    exact = [all(r.outcome in right for r in record.results) for record in records]
    metrics["eval_exact_match"] = sum(exact) / len(exact) if exact else 0.0
    parsed = [not parse_answer(record.answer, fieldset).is_empty() for record in records]
    metrics["eval_parsed"] = sum(parsed) / len(parsed) if parsed else 0.0
    metrics["eval_generated"] = float(len(records))
    return metrics


class GenerationEvaluator:
    """Answers up to `limit` validation examples with `generate()` and scores them with scan's scorer."""

    def __init__(
        self,
        processor,
        question: str,
        examples: list[Example],
        scored_fields: list[str],
        *,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        num_crops: int | None = None,
        tolerance: PriceTolerance | None = None,
        title_threshold: float = 0.6,
        fieldset: FieldSet = BUILTIN_FIELDS,
    ) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.prompt_text = chat_prompt(processor, question)
        self.dataset = ExampleDataset(examples)
        self.scored_fields = scored_fields
        self.max_new_tokens = max_new_tokens
        self.batch_size = max(1, batch_size)
        self.processor_kwargs = {"num_crops": num_crops} if num_crops is not None else {}
        self.tolerance = tolerance or PriceTolerance()
        self.title_threshold = title_threshold
        self.fieldset = fieldset

    def generate(self, model, images: list) -> list[str]:
        """Greedy answers for `images`, batched with left padding, stopping at end of turn."""
        import torch

        parameter = next(model.parameters())
        self.tokenizer.padding_side = "left"
        inputs = self.processor(
            text=[self.prompt_text] * len(images),
            images=[[image] for image in images],
            padding=True,
            return_tensors="pt",
            **self.processor_kwargs,
        ).to(parameter.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(_compute_dtype(model))
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        with torch.inference_mode():
            output = model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                use_cache=True,
                eos_token_id=stop_token_ids(self.tokenizer, getattr(model, "generation_config", None)),
                pad_token_id=pad_id,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def run(self, model) -> EvaluationOutcome:
        was_training = model.training
        model.eval()
        records: list[AnswerRecord] = []
        try:
            for start in range(0, len(self.dataset), self.batch_size):
                items = [
                    self.dataset[i] for i in range(start, min(start + self.batch_size, len(self.dataset)))
                ]
                answers = self.generate(model, [item["image"] for item in items])
                for item, answer in zip(items, answers, strict=True):
                    example = self.dataset.examples[item["index"]]
                    results = score_answer(
                        parse_answer(answer, self.fieldset),
                        example.truth,
                        self.tolerance,
                        self.title_threshold,
                        self.fieldset,
                    )
                    if example.left_out:  # nobody confirmed a value for these: nothing to score against
                        results = [r for r in results if _field_of(r.field, self.fieldset) not in example.left_out]
                    records.append(AnswerRecord(example, answer, results))
        finally:
            model.train(was_training)
        return EvaluationOutcome(generation_metrics(records, self.scored_fields, self.fieldset), records)


def _field_of(result_name: str, fieldset: FieldSet) -> str:
    """The declared field a result is about ("size_price:8" is about the size table)."""
    sizes = fieldset.first("size_prices")
    if sizes is not None and result_name.startswith(SIZE_FIELD_PREFIX):
        return sizes.name
    return result_name


def _compute_dtype(model):
    """The dtype that the model's inputs should have: that of its (first) floating-point weights."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return None
