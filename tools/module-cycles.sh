#!/bin/sh
# Prints the library's module graph (top-level modules and what each imports
# through `crate::`) and fails on a cycle; the same check runs in `cargo test --lib`.
set -e
cd "$(dirname "$0")/.."
exec cargo test --release --lib module_graph -- --nocapture --test-threads 1
