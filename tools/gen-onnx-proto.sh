#!/usr/bin/env bash
# Regenerates src/onnx/proto.rs from onnx.proto (shipped in the `onnx` PyPI wheel).
# Needs protoc (Debian: protobuf-compiler). The output is committed; normal builds need neither.
set -euo pipefail
ONNX_VERSION=1.23.2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip download --no-deps --only-binary=:all: "onnx==$ONNX_VERSION" -d "$work" >/dev/null
(cd "$work" && unzip -q -o onnx-*.whl 'onnx/onnx.proto')
mkdir -p "$work/gen/src"
cat > "$work/gen/Cargo.toml" <<'TOML'
[package]
name = "gen"
version = "0.0.0"
edition = "2021"
[dependencies]
prost-build = "0.14"
TOML
cat > "$work/gen/src/main.rs" <<'RS'
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let mut c = prost_build::Config::new();
    c.out_dir(&a[3]);
    c.compile_protos(&[&a[1]], &[&a[2]]).unwrap();
}
RS
mkdir -p "$work/out"
cargo run -q --manifest-path "$work/gen/Cargo.toml" -- "$work/onnx/onnx.proto" "$work" "$work/out"
cp "$work/out/onnx.rs" "$(dirname "$0")/../src/onnx/proto.rs"
echo "wrote src/onnx/proto.rs from onnx $ONNX_VERSION"
