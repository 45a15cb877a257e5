#!/usr/bin/env bash
# Benchmark: `jota install` of a zstd-compressed 2 GiB ext4 rootfs into a file-backed slot of
# a simulated Orin (verify, decompress, write, fsync, read back), beside the same data in
# the same run through `zstd -d | dd conv=fsync` and through Debian's real `swupdate`
# installing the equivalent .swu (exported by jota) into a file. Prints a markdown table
# (throughput = image bytes / wall seconds; peak RSS from GNU time).
#
# Usage: bench/install.sh [WORKDIR]   (default /tmp/jota-bench-install; ~8 GiB free)
set -euo pipefail
cd "$(dirname "$0")/.."
W="${1:-/tmp/jota-bench-install}"
mkdir -p "$W"

. bench/common.sh
need_tools /usr/bin/time:time zstd:zstd swupdate:swupdate mke2fs:e2fsprogs

cargo build --release -q -p jota
J="$PWD/target/release/jota"
KEYS="$PWD/crates/jota-bundle/tests/fixtures/keys"

make_rootfs "$W/rootfs.ext4"
size=$(stat -c %s "$W/rootfs.ext4")

# A simulated Orin whose rootfs slots hold 2.25 GiB, a signed bundle, its .swu, a plain .zst.
rm -rf "$W/dev" "$W/r1"
"$J" sim make-release --version 1.0.0 -o "$W/r1" >/dev/null
"$J" sim create "$W/dev" --model orin-nano-8gb --rootfs-size 2304M --release "$W/r1" >/dev/null
"$J" sim boot "$W/dev" >/dev/null
mkdir -p "$W/dev/etc/jota/keyring"
cp "$KEYS/ed25519.pub.pem" "$W/dev/etc/jota/keyring/"
[ -s "$W/b.jota" ] || "$J" bundle create -o "$W/b.jota" --version 2.0.0 --key "$KEYS/ed25519.key.pem" --level 3 --rootfs "$W/rootfs.ext4" >/dev/null
[ -s "$W/r.zst" ] || zstd -T0 -3 -q -f "$W/rootfs.ext4" -o "$W/r.zst"
rm -f "$W/swu-target.img" && truncate -s "$size" "$W/swu-target.img"
"$J" bundle export-swu "$W/b.jota" -o "$W/b.swu" --cert "$KEYS/rsa4096.cert.pem" --key "$KEYS/rsa4096.key.pem" \
    --no-switch --map "rootfs=$W/swu-target.img" --level 3 >/dev/null

run() {
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    cat "$2" > /dev/null # the input in page cache for every tool alike
    /usr/bin/time -f "%e %M" -o "$W/time" "${@:3}" >"$W/out" 2>"$W/err" || { cat "$W/out" "$W/err" >&2; exit 1; }
    read -r secs rss < "$W/time"
    printf '%s %s\n' "$secs" "$rss" > "$W/res-$1"
}
mbps() { awk -v b="$size" -v s="$1" 'BEGIN { printf "%.0f", b / (s > 0 ? s : 0.001) / 1e6 }'; }

run jota "$W/b.jota" "$J" install --root "$W/dev" --no-switch "$W/b.jota"
# Every target is a fresh sparse range (the slot in the simulated disk is too), so every
# tool pays for block allocation alike.
rm -f "$W/dd-target.img" && truncate -s "$size" "$W/dd-target.img"
run dd "$W/r.zst" bash -c "zstd -d -q -c '$W/r.zst' | dd of='$W/dd-target.img' bs=1M iflag=fullblock conv=fsync,notrunc status=none"
mkdir -p "$W/swtmp"
SW=(env TMPDIR="$W/swtmp" swupdate -i "$W/b.swu" -k "$KEYS/rsa4096.cert.pem" -e stable,copy2 -H jetson:1.0 -m -M)
run swupdate "$W/b.swu" "${SW[@]}"
# SWUpdate does not fsync a file target: the same run with the data made durable after.
rm -f "$W/swu-target.img" && truncate -s "$size" "$W/swu-target.img"
run swsync "$W/b.swu" bash -c "$(printf '%q ' "${SW[@]}") && sync '$W/swu-target.img'"
cmp "$W/swu-target.img" "$W/rootfs.ext4"
cmp "$W/dd-target.img" "$W/rootfs.ext4"

read -r js jr < "$W/res-jota"; read -r ds dr < "$W/res-dd"; read -r ss sr < "$W/res-swupdate"; read -r ys yr < "$W/res-swsync"
ratio() { awk -v a="$(mbps "$1")" -v b="$(mbps "$2")" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
echo "| tool | what it does | seconds | MB/s | peak RSS MiB | jota / tool |"
echo "|---|---|---:|---:|---:|---:|"
echo "| jota install --no-switch | signature + payload hash, decompress, per-chunk sha256, write, fsync, read back from the medium + sha256 | $js | $(mbps "$js") | $((jr / 1024)) | |"
echo "| zstd -d \\| dd conv=fsync | decompress, write, fsync | $ds | $(mbps "$ds") | $((dr / 1024)) | $(ratio "$js" "$ds")× |"
echo "| swupdate (.swu, sha256, zstd) | CMS check, decompress, sha256, write (no fsync) | $ss | $(mbps "$ss") | $((sr / 1024)) | $(ratio "$js" "$ss")× |"
echo "| swupdate + sync | the same, then the data made durable | $ys | $(mbps "$ys") | $((yr / 1024)) | $(ratio "$js" "$ys")× |"
echo
echo "image: $size bytes ext4; CPU: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(zstd --version | head -1); swupdate $(dpkg-query -W -f='${Version}' swupdate 2>/dev/null)"
