#!/usr/bin/env bash
# The project's test command (README, CI): formatting, lints, every test, and a short run of
# every fuzz target. Needs the stable toolchain with clippy/rustfmt, nightly and cargo-fuzz
# (.ci/run installs what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "fuzz targets build and run briefly"
(cd fuzz && cargo +nightly fuzz build)
fuzz/run.sh "${JOTA_FUZZ_SECONDS:-5}"

step "all tests passed"
