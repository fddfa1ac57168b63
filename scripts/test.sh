#!/usr/bin/env bash
# Set up and run lint and the whole test suite on the CPU, twice: on the tested floor of transformers
# (constraints.txt, in .venv) and on the newest release the package index offers (.venv-newest), so that a new
# transformers that breaks inspector turns CI red. pytest arguments pass through:
#   scripts/test.sh                      # both releases (what CI runs, through .ci/run)
#   TEST_RELEASES=floor scripts/test.sh -k parsing -x   # one release, some tests
set -euo pipefail
cd "$(dirname "$0")/.."
TEST_RELEASES=${TEST_RELEASES:-floor newest}
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
for release in $TEST_RELEASES; do
  case "$release" in
    floor) venv=.venv ;;
    newest)
      venv=.venv-newest
      part "setting up .venv-newest (newest transformers on the index)"
      VENV=$venv TRANSFORMERS=newest bash scripts/setup.sh
      ;;
    *) echo "TEST_RELEASES holds floor and/or newest, not '$release'" >&2; exit 2 ;;
  esac
  version=$("$venv/bin/python" -c "import transformers; print(transformers.__version__)")
  part "tests on transformers $version ($release, $venv)"
  tests_started=$SECONDS
  if "$venv/bin/python" -m pytest "$@"; then outcome=passed; else outcome=FAILED; status=1; fi
  summary+=("$release: transformers $version, tests $outcome in $((SECONDS - tests_started))s")
done
part "done"
printf '   %s\n' "${summary[@]}"
exit $status
