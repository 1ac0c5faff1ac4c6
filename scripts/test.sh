#!/usr/bin/env bash
# Runs the test suite, after the set-up (scripts/setup.sh). Two tiers:
# - default: unit tests and the integration tests (tests/integration) on data from package
#   registries (the fixtures the set-up makes); passes on a fresh clone with nothing beside it;
# - extended (tests/integration/extended): CUB birds and the models in ../shared (or
#   $CBR_SHARED); run when ../shared/datasets exists. CBR_EXTENDED=1 (set by .ci/run) requires
#   it: without the data those tests fail instead of being left out.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
source scripts/env.sh
shared=${CBR_SHARED:-../shared}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
echo "test: default tier (cargo test --release --all-targets) ..."
# --all-targets: the library, binary and integration tests (there are no doc tests).
cargo test --release --locked --all-targets 2>&1 | tee "$log" || status=1

if [ -d "$shared/datasets" ] || [ "${CBR_EXTENDED:-}" = 1 ]; then
  [ -d "$shared" ] && shared=$(cd "$shared" && pwd)
  echo "test: extended tier on $shared (the ignored tests under extended::) ..."
  ext_log=$(mktemp)
  CBR_SHARED=$shared cargo test --release --locked --test integration -- --ignored extended:: \
    2>&1 | tee "$ext_log" || status=1
  cat "$ext_log" >>"$log"
  ran=$(awk '/^test result:/ { p += $4 + $6 } END { print p + 0 }' "$ext_log")
  rm -f "$ext_log"
  if [ "$ran" = 0 ]; then
    echo "extended tier: FAILED: no extended test ran"
    status=1
  else
    echo "extended tier: run on $shared ($ran tests)"
  fi
else
  echo "extended tier: not run (no $shared/datasets; CBR_EXTENDED=1 requires it)"
fi
# The Python package (python/, issue 13): the wheel is built once (scripts/wheel.sh, release, the
# same target directory), installed into .venv-wheel/ (made by the set-up from
# python/requirements.txt) and tested there with pytest, from the repository root so that the
# installed package is imported, not python/cbr/. Its counts join the total below as one more
# "test result:" line.
echo "test: Python package (scripts/wheel.sh, then pytest python/tests in .venv-wheel/) ..."
t_py=$(date +%s)
py_log=$(mktemp)
if wheel=$(scripts/wheel.sh | tail -n 1) && [ -f "$wheel" ]; then
  .venv-wheel/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
    --force-reinstall "$wheel"
  CBR_WHEEL=$wheel .venv-wheel/bin/pytest -p no:cacheprovider -q python/tests 2>&1 \
    | tee "$py_log" || status=1
else
  echo "wheel: FAILED to build"
  status=1
fi
# pytest's closing line, e.g. "12 passed, 1 failed in 41.20s".
py_summary=$(grep -E '(passed|failed|error).* in [0-9.]+s' "$py_log" | tail -n 1 || true)
py_passed=$(grep -Eo '[0-9]+ passed' <<<"$py_summary" | cut -d' ' -f1 || true)
py_failed=$(grep -Eo '[0-9]+ (failed|errors?)' <<<"$py_summary" | awk '{ n += $1 } END { print n + 0 }' || true)
if [ -z "$py_passed" ] && [ "$py_failed" = 0 ]; then
  echo "python tests: FAILED: pytest ran no test"
  py_failed=1
  status=1
fi
echo "test result: python. ${py_passed:-0} passed; $py_failed failed; (pytest python/tests, $(($(date +%s) - t_py))s with the wheel build)" | tee -a "$log"
rm -f "$py_log"

# One total over all test binaries and both tiers, as the closing line. Ignored tests (the
# extended tier when it is not run) are neither passed nor failed.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit $status
