"""`import inspector` is light, and registers Phi-3.5-vision with transformers' Auto classes once it loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden" / "phi3v"


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_pure_modules_do_not_import_torch():
    out = run_python(
        "import sys, inspector, inspector.parsing, inspector.truth, inspector.scoring, inspector.store, "
        "inspector.report, inspector.discovery, inspector.images\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    assert out.split() == ["False", "False"]


def test_auto_classes_know_phi3v_after_import_inspector():
    out = run_python(
        "import inspector\n"
        "from transformers import AutoConfig, AutoModelForImageTextToText\n"
        f"config = AutoConfig.from_pretrained({str(GOLDEN)!r})\n"
        "model = AutoModelForImageTextToText.from_config(config)\n"
        "print(type(config).__name__, type(model).__name__)"
    )
    assert out.split() == ["Phi3VConfig", "Phi3VForConditionalGeneration"]


def test_registration_when_transformers_was_imported_first():
    out = run_python(
        "import transformers\n"
        "import inspector\n"
        "from transformers import AutoConfig\n"
        f"print(type(AutoConfig.from_pretrained({str(GOLDEN)!r})).__name__)"
    )
    assert out.strip() == "Phi3VConfig"
