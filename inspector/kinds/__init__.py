"""Field kinds as a table: one `FieldKind` object per kind, one module per kind (see `inspector.kinds.base`).

Importing the package imports every module in it, so a new kind is one file here with one class decorated by
`@register_kind`.
"""

from __future__ import annotations

import importlib
import pkgutil

from inspector.kinds.base import (
    AnswerValues,
    CellReading,
    FieldKind,
    JsonReading,
    LabelLine,
    ScoreSettings,
    kind_names,
    kind_of,
    register_kind,
    registered_kinds,
    unregister_kind,
)

__all__ = [
    "AnswerValues",
    "CellReading",
    "FieldKind",
    "JsonReading",
    "LabelLine",
    "ScoreSettings",
    "kind_names",
    "kind_of",
    "register_kind",
    "registered_kinds",
    "unregister_kind",
]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")
