#!/usr/bin/env bash
# Runs the whole test suite (unit, integration and end-to-end tests on real
# images; the end-to-end tests use ../shared/datasets). Does the set-up first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --release --locked
