#!/usr/bin/env bash
# Create .venv with inspector and everything it needs (idempotent). Used by the README's two commands and CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# torch first, pinned: an unpinned `torch` can resolve to a multi-GB CUDA build where a CPU build would do.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[train,test]"
