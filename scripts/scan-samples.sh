#!/usr/bin/env bash
# Set up, then scan sample_images/ against its truth CSV: writes inspector.db and report.html.
#   scripts/scan-samples.sh                                     # the demo model: offline, on CPU
#   scripts/scan-samples.sh microsoft/Phi-3.5-vision-instruct   # another model: hub id or local folder
# Options after the model go to `inspector scan` and win over the script's (e.g. `demo --device cuda`).
# Until a trained demo model is committed (inspector/demo_model/ with weights), the default is a tiny model with
# RANDOM weights built on the spot, and its answers are noise: the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MODEL=${1:-demo}
if [ $# -gt 0 ]; then shift; fi
if [ "$MODEL" = demo ] && ! .venv/bin/python -c "from inspector.registry import MODELS; MODELS['demo'].resolve()" 2>/dev/null; then
  MODEL=models/tiny-demo
  if [ ! -f "$MODEL/config.json" ]; then
    if [ -f ../shared/phi35v/tokenizer.json ]; then
      .venv/bin/inspector tiny-model "$MODEL" --family phi3v --tokenizer-dir ../shared/phi35v
    else
      .venv/bin/inspector tiny-model "$MODEL" --family llava
    fi
  fi
  echo "note: no trained demo model in inspector/demo_model/ yet; scanning with $MODEL, a tiny model with RANDOM" \
    "weights (answers are noise): pass a real model to get real answers" >&2
fi
if [ "$MODEL" = demo ]; then
  # inspector/demo_model/ ships in the package: a small model trained on synthetic cards like these only. It asks
  # the question it was trained on (its fields, colour included) by itself; no download, CPU whatever the machine.
  HF_HUB_OFFLINE=1 .venv/bin/inspector scan sample_images --truth sample_images/truth.csv --model demo \
    --device cpu --db inspector.db --report report.html "$@"
else
  # sample_images/fields.toml adds the cards' colour (a visual attribute) to the six built-in fields.
  .venv/bin/inspector scan sample_images --truth sample_images/truth.csv --fields sample_images/fields.toml \
    --model "$MODEL" --db inspector.db --report report.html "$@"
fi
