#!/usr/bin/env bash
# Builds cbr-core as WebAssembly (crates/cbr-wasm) into web/pkg/cbr_core.wasm and prints that
# path on its last line. rustup has no wasm32 target on these machines, so the module is built
# by Debian's Rust (rustc-web, cargo-web, rust-web-src: a toolchain with its library sources),
# which compiles std for wasm32-unknown-unknown itself (-Zbuild-std), linked by rustup's
# rust-lld. Native builds stay on rustup's toolchain. Installs the Debian packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/rustc ] || [ ! -d /usr/lib/rustlib/src/rust/library ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  echo "wasm: installing Debian's rustc-web, cargo-web and rust-web-src (apt-get) ..." >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq rustc-web cargo-web rust-web-src >&2
fi
lld="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
[ -x "$lld" ] || { echo "wasm: rustup's rust-lld not found at $lld" >&2; exit 1; }

# A target directory of its own (another compiler), under the workspace's.
target=${CARGO_TARGET_DIR:-$PWD/target}/wasm
# Size over debug info: no debug lines, one codegen unit with LTO, symbols stripped. SIMD128
# (every current browser and Node >= 16) lets the independent sums of the kernels run 4 wide;
# the order of operations, and so every bit of the result, is unchanged.
RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc CARGO_TARGET_DIR="$target" RUSTFLAGS="-C target-feature=+simd128" \
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$lld" \
  CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true \
  CARGO_PROFILE_RELEASE_LTO=true CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
  /usr/bin/cargo build --release --locked --quiet -p cbr-wasm \
  -Zbuild-std=std,panic_abort --target wasm32-unknown-unknown >&2
mkdir -p web/pkg
cp "$target/wasm32-unknown-unknown/release/cbr_core_wasm.wasm" web/pkg/cbr_core.wasm.tmp
mv web/pkg/cbr_core.wasm.tmp web/pkg/cbr_core.wasm
echo "wasm: $(stat -c %s web/pkg/cbr_core.wasm) bytes" >&2
echo "$PWD/web/pkg/cbr_core.wasm"
