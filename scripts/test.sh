#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite on the CPU, lint included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Debian's Chromium drives the report's browser test; it is skipped, with a reason, where it cannot be installed.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
    || echo "note: could not install chromium; the browser test will be skipped"
fi
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
