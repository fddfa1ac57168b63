#!/usr/bin/env bash
# Set up and run lint and the whole test suite on the CPU, on the releases of transformers that CI gates on: the
# tested floor (constraints.txt, in .venv) and the newest release inside pyproject.toml's range (.venv-newest).
# When the package index has a release above the range's cap, the suite also runs on it as a canary
# (.venv-canary): its result is one line at the end ("canary: ..."), and it never changes the exit status, so an
# upstream release cannot block landing while the cap keeps users on tested releases. pytest arguments pass through:
#   scripts/test.sh                      # floor, newest and the canary (what CI runs, through .ci/run)
#   TEST_RELEASES=floor scripts/test.sh -k parsing -x   # one release, some tests
set -euo pipefail
cd "$(dirname "$0")/.."
TEST_RELEASES=${TEST_RELEASES:-floor newest canary}
started=$SECONDS
part() { printf '== %s (%ds)\n' "$1" $((SECONDS - started)); }

# Debian's Chromium + chromedriver drive the report's browser test and PostgreSQL backs the store's Postgres tests.
# Installed when any of them is missing (needs root and apt); where they cannot be, those tests skip with the
# reason, except where all tests are required (CI: INSPECTOR_REQUIRE_ALL_TESTS=1), where they fail.
have_system_programs() {
  command -v chromium >/dev/null 2>&1 &&
    { command -v chromedriver >/dev/null 2>&1 || [ -x /usr/lib/chromium/chromedriver ]; } &&
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if ! have_system_programs; then
  part "installing chromium, chromium-driver and postgresql"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log=$(mktemp)
    if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      chromium chromium-driver postgresql) >"$log" 2>&1; then
      tail -n 5 "$log" >&2
      echo "note: could not install chromium/chromium-driver/postgresql; their tests will skip (fail in CI)" >&2
    fi
    rm -f "$log"
  else
    echo "note: chromium, chromium-driver or postgresql is missing and cannot be installed here (needs root" \
      "and apt-get); their tests will skip (fail in CI)" >&2
  fi
fi

part "setting up .venv (transformers floor, constraints.txt)"
bash scripts/setup.sh
part "ruff"
.venv/bin/ruff check .

status=0
summary=()
canary_line=""
for release in $TEST_RELEASES; do
  junit=()
  case "$release" in
    floor) venv=.venv ;;
    newest)
      venv=.venv-newest
      part "setting up .venv-newest (newest transformers inside pyproject.toml's range)"
      VENV=$venv TRANSFORMERS=newest bash scripts/setup.sh
      ;;
    canary)
      venv=.venv-canary
      part "looking for a transformers release above the cap"
      if ! canary_version=$(.venv/bin/python scripts/releases.py canary); then
        canary_line="canary: could not look up transformers releases (see above)"
        continue
      fi
      if [ -z "$canary_version" ]; then
        canary_line=$(.venv/bin/python scripts/releases.py report)
        continue
      fi
      canary_junit=$(mktemp)
      junit=(--junitxml="$canary_junit")
      part "setting up .venv-canary (transformers $canary_version, above the cap)"
      if ! VENV=$venv TRANSFORMERS=$canary_version bash scripts/setup.sh; then
        canary_line=$(.venv/bin/python scripts/releases.py report "$canary_version")
        continue
      fi
      ;;
    *) echo "TEST_RELEASES holds floor, newest and/or canary, not '$release'" >&2; exit 2 ;;
  esac
  version=$("$venv/bin/python" -c "import transformers; print(transformers.__version__)") || version="?"
  part "tests on transformers $version ($release, $venv$([ "$release" != canary ] || echo ", not gating"))"
  tests_started=$SECONDS
  if "$venv/bin/python" -m pytest ${junit[@]+"${junit[@]}"} "$@"; then outcome=passed; else outcome=FAILED; fi
  if [ "$release" = canary ]; then
    canary_line=$(.venv/bin/python scripts/releases.py report "$canary_version" "$canary_junit")
    rm -f "$canary_junit"
    continue
  fi
  [ "$outcome" = passed ] || status=1
  summary+=("$release: transformers $version, tests $outcome in $((SECONDS - tests_started))s")
done
part "done"
[ ${#summary[@]} -eq 0 ] || printf '   %s\n' "${summary[@]}"
[ -z "$canary_line" ] || printf '   %s\n' "$canary_line"
exit $status
