#!/usr/bin/env bash
# Runs every fuzz target for a while (default 20 s each), starting from the committed seeds.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(cargo +nightly fuzz list))
# Seeds: fuzz/seeds/<target> plus the project's own layouts and tool samples.
extra_seeds() {
    case "$1" in
        layout) echo ../crates/jota-tegra/layouts ;;
        device_text) echo ../crates/jota-tegra/tests/fixtures/samples ;;
    esac
}
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    echo "== fuzz $t for ${secs}s"
    # shellcheck disable=SC2046
    cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" $(extra_seeds "$t") -- -max_total_time="$secs" 2>&1 \
        | grep -E "^Done|ERROR|panicked|SUMMARY" || true
    if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
        echo "fuzz target $t found a crash: $(ls "artifacts/$t")" >&2
        exit 1
    fi
done
