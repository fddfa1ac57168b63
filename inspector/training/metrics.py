"""The names of the figures a training evaluation logs, per field set.

Kept apart from `inspector.training.evaluation` (which generates and scores) so that `TrainConfig` can check
`--best-metric` without importing the evaluation, its data loading or the model code.
"""

from __future__ import annotations

from inspector.fields import BUILTIN_FIELDS, FieldSet
from inspector.kinds import kind_of


def scored_names(fieldset: FieldSet) -> tuple[str, ...]:
    """Names scored per answer: each declared field, a size table's sizes summed up as "size_price"."""
    return tuple(kind_of(spec).result_group(spec) for spec in fieldset)


def amount_names(fieldset: FieldSet) -> tuple[str, ...]:
    """Names with a mean absolute error: price and number fields, and the size prices."""
    return tuple(kind_of(spec).result_group(spec) for spec in fieldset if kind_of(spec).amount)


def metric_names(fieldset: FieldSet = BUILTIN_FIELDS) -> tuple[str, ...]:
    """Every figure an evaluation logs (without the "eval_" prefix); any can be the best-model metric."""
    return (
        "loss",
        "field_accuracy",
        "exact_match",
        "parsed",
        *(f"{name}_accuracy" for name in scored_names(fieldset)),
        *(f"{name}_mae" for name in amount_names(fieldset)),
    )
