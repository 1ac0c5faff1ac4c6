#!/usr/bin/env bash
# Runs the whole test suite (unit, integration and end-to-end tests on real
# images; the end-to-end tests use ../shared/datasets). Does the set-up first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --all-targets: the library, binary and integration tests (there are no doc tests).
cargo test --release --locked --all-targets 2>&1 | tee "$log"
# One total over all test binaries, as the closing line.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
