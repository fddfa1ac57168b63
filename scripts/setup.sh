#!/usr/bin/env bash
# Create a virtual environment with inspector and everything it needs (idempotent). Used by the README's two
# commands and CI.
#   scripts/setup.sh                                   # .venv on the tested floor (constraints.txt)
#   VENV=.venv-newest TRANSFORMERS=newest scripts/setup.sh   # the newest transformers the package index offers
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TRANSFORMERS=${TRANSFORMERS:-floor}
# torch first, pinned: an unpinned `torch` can resolve to a multi-GB CUDA build where a CPU build would do.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
pip_install() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -c "import torch" 2>/dev/null || pip_install "$TORCH_SPEC"
case "$TRANSFORMERS" in
  floor)
    pip_install -c constraints.txt -e ".[train,test]"
    ;;
  newest)
    pip_install -e ".[train,test]"
    # Newest on the index even above pyproject's cap, on purpose: a release that breaks us must turn CI red before
    # the cap is raised (pip then reports the conflict with inspector's declared range; expected there).
    pip_install --upgrade transformers
    ;;
  *)
    echo "TRANSFORMERS must be floor or newest, not '$TRANSFORMERS'" >&2
    exit 2
    ;;
esac
