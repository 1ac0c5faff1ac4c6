# Sourced by the scripts (from the repository root): where the set-up puts things.
# The tests read the same variables (tests/integration/fixtures.rs), so any of them can be
# pointed elsewhere.
export CBR_PYTHON=${CBR_PYTHON:-$PWD/.venv/bin/python}   # cbr's own `pip download` and the client tests
export CBR_FIXTURES=${CBR_FIXTURES:-$PWD/.fixtures}      # scripts/fixtures.py output
CBR_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/cbr
export CBR_BIN
