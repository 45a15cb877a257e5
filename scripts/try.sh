#!/usr/bin/env bash
# A first look at jota: a signed A/B update of a simulated Orin Nano, step by step —
# build two releases, sign a bundle, install it, reboot, validate, commit.
# (The whole fleet, server and rollout: `cargo run --release -- demo`.)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
J="$PWD/target/release/jota"
W="$(mktemp -d -t jota-try.XXXXXX)"
echo "== working in $W"
run() { echo; echo "\$ jota $*"; "$J" "$@"; }
run sim make-release --version 1.0.0 -o "$W/rel-1.0.0"
run sim make-release --version 2.0.0 -o "$W/rel-2.0.0"
run keys generate --algo ed25519 -o "$W/keys"
run bundle create -o "$W/update-2.0.0.jota" --version 2.0.0 --hw-compat '3767-000[0-5]' \
    --key "$W/keys/jota-signing.key.pem" --rootfs "$W/rel-2.0.0/rootfs.ext4" \
    --kernel "$W/rel-2.0.0/Image" --dtb "$W/rel-2.0.0/kernel.dtb" --capsule "$W/rel-2.0.0/TEGRA_BL.Cap"
run sim create "$W/jetson" --model orin-nano-8gb --release "$W/rel-1.0.0"
mkdir -p "$W/jetson/etc/jota/keyring"
cp "$W/keys/jota-signing.pub.pem" "$W/jetson/etc/jota/keyring/"
cat > "$W/jetson/etc/jota/agent.toml" <<'TOML'
[[validate.checks]]
name = "application"
command = ["sh", "-c", "jota sim health \"$JOTA_ROOT\""]
TOML
run sim boot "$W/jetson"
run install --root "$W/jetson" "$W/update-2.0.0.jota"
run sim boot "$W/jetson"
run agent validate --root "$W/jetson"
run status --root "$W/jetson"
echo; echo "== the simulated Jetson stays in $W/jetson (try: jota sim status $W/jetson)"
