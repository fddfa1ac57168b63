#!/usr/bin/env bash
# Runs bench/train_demo.py on a lent GPU machine across several device calls: the training outlives one call
# (a new process session), later calls watch it and collect the results into $OUT.
#   bash bench/train_demo_device.sh start [train_demo.py args]   # copy the repo to /tmp/repo, start, watch
#   bash bench/train_demo_device.sh watch                       # watch up to WATCH_S seconds (default 540)
#   bash bench/train_demo_device.sh collect                     # demo.md/json, logs, demo_model as tar parts
#   bash bench/train_demo_device.sh chunk [train_demo.py args]   # all in one call, in the foreground: train, collect
# A chunk survives the machine being given back between calls: pass `--init .carry/demo_init --seed K` to go on
# from the demo_model an earlier chunk brought back (unpacked into the ignored .carry/demo_init and carried).
set -uo pipefail
WORK=${WORK:-/tmp/demo}
WATCH_S=${WATCH_S:-540}
watch() {
  local start=$SECONDS
  while [ $((SECONDS - start)) -lt "$WATCH_S" ]; do
    if [ -f "$WORK/demo.md" ] || [ -f "$WORK/failed" ]; then break; fi
    sleep 15
    printf '== %s\n' "$(date +%T)"
    for log in "$WORK"/runs/*.log; do [ -f "$log" ] && grep -E '^\[' "$log" | tail -n 2; done
  done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  tail -n 5 "$WORK/launcher.log"
}
collect() {
  cp "$WORK"/demo.md "$WORK"/demo.json "$OUT"/ 2>/dev/null
  tail -n 200 "$WORK"/launcher.log > "$OUT"/launcher.log
  for log in "$WORK"/runs/*.log; do grep -E '^\[|Error|error' "$log"; done > "$OUT"/runs.log
  if [ -d "$WORK/demo_model" ]; then
    tar -C "$WORK" -cf - demo_model | split -b 15m - "$OUT"/demo_model.tar.part-
  fi
  ls -la "$OUT"
}
case "${1:-}" in
  start)
    shift
    rm -rf /tmp/repo "$WORK" && mkdir -p "$WORK" && cp -r . /tmp/repo
    (cd /tmp/repo && setsid nohup python3 bench/train_demo.py --out "$WORK" "$@" >"$WORK/launcher.log" 2>&1 </dev/null ||
      touch "$WORK/failed") &
    sleep 5
    watch
    ;;
  chunk)
    shift
    rm -rf "$WORK" && mkdir -p "$WORK/runs"
    python3 bench/train_demo.py --out "$WORK" "$@" >"$WORK/launcher.log" 2>&1 || touch "$WORK/failed"
    grep -hE '^\[' "$WORK"/runs/*.log | grep -E 'eval|step [0-9]*000 ' | tail -n 20
    collect
    ;;
  watch) watch ;;
  collect) collect ;;
  *) echo "usage: $0 start|watch|collect|chunk" >&2; exit 2 ;;
esac
