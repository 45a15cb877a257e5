#!/usr/bin/env bash
# Benchmark: what a device holding v1 downloads to get v2, and how long applying takes, for
# jota's chunked delta (a simulated Orin installing v2 from a plain HTTP server with Range
# support, seeding from its running slot) and jota's static patch (`jota bundle delta`,
# installed from the same server on a second simulated Orin) beside casync, xdelta3, zstd --patch-from and the
# full bundle, on the same two Debian root filesystems (bench/rootfs-pair.sh: debootstrap
# minbase bookworm, then + curl openssh-client python3-minimal; 512 MiB ext4 each).
# Prints one markdown table.
#
# Usage: bench/delta.sh [WORKDIR]   (default /work/bench-data; root; network for debootstrap)
set -euo pipefail
cd "$(dirname "$0")/.."
W="${1:-/work/bench-data}"
mkdir -p "$W"
. bench/common.sh
need_tools /usr/bin/time:time zstd:zstd xdelta3:xdelta3 casync:casync sfdisk:fdisk debootstrap:debootstrap python3:python3

bash bench/rootfs-pair.sh "$W" >/dev/null
V1="$W/v1.ext4"; V2="$W/v2.ext4"
size=$(stat -c %s "$V2")
cargo build --release -q -p jota
J="$PWD/target/release/jota"
KEYS="$PWD/crates/jota-bundle/tests/fixtures/keys"
B="$W/delta-bench"
rm -rf "$B" && mkdir -p "$B/www"

# timed NAME CMD...: wall seconds and peak RSS (KiB) into $B/NAME.
timed() {
    local name=$1; shift
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    /usr/bin/time -f "%e %M" -o "$B/$name" "$@" > "$B/$name.out" 2> "$B/$name.err" || { cat "$B/$name.err" >&2; exit 1; }
}
secs() { cut -d' ' -f1 "$B/$1"; }
rss() { awk '{ printf "%.0f", $2 / 1024 }' "$B/$1"; }

# --- jota: v1 bundle, v2 bundle grouped against it, served by a static Range server.
"$J" bundle create -o "$B/v1.jota" --version 1.0.0 --key "$KEYS/ed25519.key.pem" --rootfs "$V1" >/dev/null
"$J" bundle create -o "$B/www/v2.jota" --version 2.0.0 --key "$KEYS/ed25519.key.pem" --rootfs "$V2" --base "$B/v1.jota" >/dev/null
full=$(stat -c %s "$B/www/v2.jota")
port=$((20000 + RANDOM % 20000))
python3 bench/range_server.py "$port" "$B/www" & srv=$!
trap 'kill $srv 2>/dev/null || true' EXIT
# A simulated Orin with 600 MiB rootfs slots whose slot A holds v1.
"$J" sim make-release --version 1.0.0 -o "$B/r1" >/dev/null
"$J" sim create "$B/dev" --model orin-nano-8gb --rootfs-size 600M --release "$B/r1" >/dev/null
"$J" sim boot "$B/dev" >/dev/null
start=$(sfdisk --json "$B/dev/nvme.img" | python3 -c 'import json,sys; t=json.load(sys.stdin)["partitiontable"]; print([p["start"] for p in t["partitions"] if p.get("name")=="APP"][0] * t.get("sectorsize", 512))')
dd if="$V1" of="$B/dev/nvme.img" bs=1M seek="$start" oflag=seek_bytes conv=notrunc,fsync status=none
mkdir -p "$B/dev/etc/jota/keyring" && cp "$KEYS/ed25519.pub.pem" "$B/dev/etc/jota/keyring/"
sleep 0.5
timed jota "$J" install --root "$B/dev" --no-switch --json "http://127.0.0.1:$port/v2.jota"
jota_bytes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["delta"]["downloaded_bytes"])' "$B/jota.out")

# --- jota static patch (jota bundle delta), installed on a second simulated Orin holding v1.
/usr/bin/time -f "%e %M" -o "$B/patch-build" "$J" bundle delta "$B/v1.jota" "$B/www/v2.jota" \
    -o "$B/www/v2.jotapatch" --key "$KEYS/ed25519.key.pem" --json > "$B/patch-build.out"
patch_bytes=$(stat -c %s "$B/www/v2.jotapatch")
"$J" sim create "$B/dev2" --model orin-nano-8gb --rootfs-size 600M --release "$B/r1" >/dev/null
"$J" sim boot "$B/dev2" >/dev/null
dd if="$V1" of="$B/dev2/nvme.img" bs=1M seek="$start" oflag=seek_bytes conv=notrunc,fsync status=none
mkdir -p "$B/dev2/etc/jota/keyring" && cp "$KEYS/ed25519.pub.pem" "$B/dev2/etc/jota/keyring/"
# Apply = download (the patch from the same static server) + the whole install.
timed jotapatch "$J" install --root "$B/dev2" --no-switch --json "http://127.0.0.1:$port/v2.jotapatch"
python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["patch"]; assert p["fallback_chunks"] == 0 and p["rebuilt_chunks"] > 0, p' "$B/jotapatch.out"

# --- zstd --patch-from (level 19, long window) and xdelta3.
zstd -q -19 --long=30 -T0 --patch-from="$V1" "$V2" -o "$B/v2.patch.zst"
timed zstd zstd -q -d --long=30 --patch-from="$V1" "$B/v2.patch.zst" -o "$B/zstd-out.img"
xdelta3 -9 -B "$size" -e -f -s "$V1" "$V2" "$B/v2.vcdiff"
timed xdelta3 xdelta3 -d -B "$size" -f -s "$V1" "$B/v2.vcdiff" "$B/xdelta-out.img"
cmp "$B/zstd-out.img" "$V2"; cmp "$B/xdelta-out.img" "$V2"

# --- casync: a v1 holder fetches the chunks of v2's index that v1's store lacks.
casync make --store="$B/store1" "$B/v1.caibx" "$V1" >/dev/null
casync make --store="$B/store2" "$B/v2.caibx" "$V2" >/dev/null
casync_bytes=$(python3 - "$B" <<'PY'
import os, sys
b = sys.argv[1]
def chunks(store):
    out = {}
    for root, _, files in os.walk(store):
        for f in files:
            if f.endswith(".cacnk"):
                out[f] = os.path.getsize(os.path.join(root, f))
    return out
old, new = chunks(b + "/store1"), chunks(b + "/store2")
print(sum(s for n, s in new.items() if n not in old) + os.path.getsize(b + "/v2.caibx"))
PY
)
timed casync casync extract --store="$B/store2" --seed="$V1" "$B/v2.caibx" "$B/casync-out.img"
cmp "$B/casync-out.img" "$V2"

pf=$(stat -c %s "$B/v2.patch.zst"); xd=$(stat -c %s "$B/v2.vcdiff")
r() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cs=$(secs casync)
echo "| method | bytes a v1 device downloads | vs zstd --patch-from | apply s | vs casync extract | peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|"
echo "| jota chunked delta (front + chunks + 400 B per request; apply = the whole install: fetch, seed, write, fsync, read-back) | $jota_bytes | $(r "$jota_bytes" "$pf")× | $(secs jota) | $(r "$(secs jota)" "$cs")× | $(rss jota) |"
echo "| jota static patch (jota bundle delta, zstd 22 against dropped base blocks; apply = download + whole install; build $(secs patch-build) s) | $patch_bytes | $(r "$patch_bytes" "$pf")× | $(secs jotapatch) | $(r "$(secs jotapatch)" "$cs")× | $(rss jotapatch) |"
echo "| zstd -19 --long=30 --patch-from | $pf | 1.00× | $(secs zstd) | $(r "$(secs zstd)" "$cs")× | $(rss zstd) |"
echo "| xdelta3 -9 -B $size | $xd | $(r "$xd" "$pf")× | $(secs xdelta3) | $(r "$(secs xdelta3)" "$cs")× | $(rss xdelta3) |"
echo "| casync (64 KiB avg chunks; new chunks + index) | $casync_bytes | $(r "$casync_bytes" "$pf")× | $cs | 1.00× | $(rss casync) |"
echo "| full jota bundle | $full | $(r "$full" "$pf")× | | | |"
echo
echo "v1 → v2: $(basename "$V1") → $(basename "$V2"), $size bytes each; CPU: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
