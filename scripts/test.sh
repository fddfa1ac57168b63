#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite on the CPU, lint included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Debian's Chromium drives the report's browser test and PostgreSQL backs the store's Postgres tests; both are
# skipped, with a reason, where they cannot be installed (installing needs root and apt).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if ! command -v chromium >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver postgresql) \
      >/dev/null 2>&1 || echo "note: could not install chromium/postgresql; their tests will be skipped"
  fi
fi
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
