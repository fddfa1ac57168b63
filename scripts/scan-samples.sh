#!/usr/bin/env bash
# Set up, then scan sample_images/ against its truth CSV: writes inspector.db and report.html.
#   scripts/scan-samples.sh                       # offline: a tiny RANDOM model (answers are noise)
#   scripts/scan-samples.sh microsoft/Phi-3.5-vision-instruct   # the real model (hub id or local folder)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MODEL=${1:-}
if [ -z "$MODEL" ]; then
  MODEL=models/tiny-demo
  if [ ! -f "$MODEL/config.json" ]; then
    if [ -f ../shared/phi35v/tokenizer.json ]; then
      .venv/bin/inspector tiny-model "$MODEL" --family phi3v --tokenizer-dir ../shared/phi35v
    else
      .venv/bin/inspector tiny-model "$MODEL" --family llava
    fi
  fi
  echo "note: scanning with $MODEL, a tiny model with RANDOM weights: pass a real model to get real answers" >&2
  shift || true
else
  shift
fi
# sample_images/fields.toml adds the cards' colour (a visual attribute) to the six built-in fields.
.venv/bin/inspector scan sample_images --truth sample_images/truth.csv --fields sample_images/fields.toml \
  --model "$MODEL" --db inspector.db --report report.html "$@"
