#!/usr/bin/env bash
# A first look at jota: an A/B update of a simulated Orin Nano, by hand.
# (The full fleet demo, `jota demo`, arrives with the agent and server.)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
J="$PWD/target/release/jota"
W="$(mktemp -d -t jota-try.XXXXXX)"
echo "== working in $W"
run() { echo; echo "\$ jota $*"; "$J" "$@"; }
run sim make-release --version 1.0.0 -o "$W/rel-1.0.0"
run sim make-release --version 2.0.0 -o "$W/rel-2.0.0"
run sim create "$W/jetson" --model orin-nano-8gb --release "$W/rel-1.0.0"
run sim boot "$W/jetson"
run sim flash "$W/jetson" --release "$W/rel-2.0.0" --slot b
run bootctl --root "$W/jetson" set-active-boot-slot 1
run sim boot "$W/jetson"
run bootctl --root "$W/jetson" verify
run bootctl --root "$W/jetson" -t rootfs dump-slots-info
run bootctl --root "$W/jetson" dump-slots-info
echo; echo "== the simulated Jetson stays in $W/jetson (try: jota sim status $W/jetson)"
