#!/usr/bin/env bash
# Create a virtual environment with inspector and everything it needs (idempotent). Used by the README's two
# commands and CI.
#   scripts/setup.sh                                          # .venv on the tested floor (constraints.txt)
#   VENV=.venv-newest TRANSFORMERS=newest scripts/setup.sh    # the newest transformers inside pyproject's range
#   VENV=.venv-canary TRANSFORMERS=5.26.0 scripts/setup.sh    # one release, even above the cap (the canary)
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
    # The newest release inside the declared range, as pip resolves pyproject.toml's requirement (no second copy).
    pip_install --upgrade "$("$VENV/bin/python" scripts/releases.py spec)"
    ;;
  [0-9]*)
    pip_install -e ".[train,test]"
    # A release above the cap (scripts/test.sh's canary): pip then reports the conflict with inspector's declared
    # range, which is expected here.
    pip_install "transformers==$TRANSFORMERS"
    ;;
  *)
    echo "TRANSFORMERS must be floor, newest or a version, not '$TRANSFORMERS'" >&2
    exit 2
    ;;
esac
