#!/usr/bin/env bash
# The fuzzing harness (fuzz/, issue 26): runs every cargo-fuzz (libFuzzer + AddressSanitizer)
# target for SECONDS each (default 15) and exits non-zero on any crash, leak, timeout or
# out-of-memory. Installs what it needs: cargo-fuzz from crates.io; the stable toolchain takes its
# -Z flags with RUSTC_BOOTSTRAP=1, and rustup's std ships the ASan runtime. Seeds the corpora
# (fuzz/corpus/TARGET, kept between runs) from the test fixtures' photographs and from small
# models, metadata, a manifest and a shard that `examples/fuzz_seeds.rs` writes. A crash leaves
# its input in fuzz/artifacts/TARGET/: make it a regression test.
#
#     scripts/fuzz.sh 15             # every target, 15 s each
#     scripts/fuzz.sh 1800 model_read  # one target, 30 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
secs=${1:-15}
shift || true
export RUSTC_BOOTSTRAP=1
# libFuzzer with the release profile's optimisations; debug assertions on (overflow checks).
fuzz_flags=(--release --debug-assertions --fuzz-dir fuzz)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

corpus=fuzz/corpus
if [ ! -d "$corpus/model_read" ]; then
    cargo run --release --quiet --example fuzz_seeds -- "$corpus" >&2
fi
mkdir -p "$corpus/image_decode"
for f in "$CBR_FIXTURES"/formats/*; do
    [ -f "$f" ] && [ "$(stat -c %s "$f")" -lt 1000000 ] && cp -n "$f" "$corpus/image_decode/" || true
done

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
cargo fuzz build "${fuzz_flags[@]}"

failed=()
for t in "${targets[@]}"; do
    mkdir -p "$corpus/$t"
    echo "fuzz: $t for ${secs}s" >&2
    # -rss_limit_mb: a decode or a model that needs more is a finding (a bomb), not noise.
    if ! cargo fuzz run "${fuzz_flags[@]}" "$t" "$corpus/$t" -- \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        2> >(tee "fuzz/$t.log" | grep -E "^(stat::|#[0-9]+ +DONE|==[0-9]+==ERROR|SUMMARY)" >&2); then
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/, logs in fuzz/<target>.log)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${secs}s each: no crash" >&2
