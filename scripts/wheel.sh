#!/usr/bin/env bash
# Builds the Python wheel (python/pyproject.toml, distribution `classification-by-retrieval`,
# import name `cbr`) with maturin from .venv-wheel/ (scripts/setup.sh makes it): the bindings
# (crates/cbr-python) plus the release `cbr` binary as the wheel's script, so `pip install` gives
# both `import cbr` and the `cbr` command. Release builds in the usual cargo target directory
# ($CARGO_TARGET_DIR, else target/), so the library is compiled once for the binary and the
# bindings. Prints the wheel's path as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
target=${CARGO_TARGET_DIR:-$PWD/target}
maturin=${MATURIN:-$PWD/.venv-wheel/bin/maturin}
[ -x "$maturin" ] || { echo "wheel: no $maturin: run scripts/setup.sh (or set MATURIN)" >&2; exit 1; }

cargo build --release --locked --quiet --bin cbr
# The command goes in as the wheel's script (pip installs <name>.data/scripts/* into bin/),
# without its debug line tables: the wheel carries no debugger aids.
scripts=python/build/wheel-data/scripts
rm -rf python/build/wheel-data
mkdir -p "$scripts"
install -m 755 "$CBR_BIN" "$scripts/cbr"
strip --strip-debug "$scripts/cbr"

out=$target/wheels
rm -f "$out"/classification_by_retrieval-*.whl
(cd python && "$maturin" build --release --locked --quiet --out "$out" >&2)
wheel=$(ls "$out"/classification_by_retrieval-*.whl)
echo "$wheel"
