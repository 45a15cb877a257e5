#!/usr/bin/env bash
# Benchmark: `jota bundle create` and `jota bundle verify` on >= 1 GiB images, beside the
# peer pipeline on the same input in the same run: `zstd -T0 -3` + `sha256sum` (create),
# `zstd -d | sha256sum` (verify). Prints one markdown table (throughput = input bytes /
# wall seconds; peak RSS from GNU time).
#
# Usage: bench/bundle.sh [WORKDIR]   (default /tmp/jota-bench-bundle; needs ~6 GiB free)
# Inputs (made once, kept in WORKDIR):
#   usr.img      1 GiB of real files from /usr/lib concatenated (no zero blocks, no
#                4 KiB alignment: nothing for jota to skip or deduplicate)
#   rootfs.ext4  2 GiB ext4 made by mke2fs -d from ~1.2 GiB of /usr/lib (a realistic
#                partition image: files, metadata, free space)
set -euo pipefail
cd "$(dirname "$0")/.."
W="${1:-/tmp/jota-bench-bundle}"
mkdir -p "$W"

. bench/common.sh
need_tools /usr/bin/time:time zstd:zstd mke2fs:e2fsprogs

cargo build --release -q -p jota
J="$PWD/target/release/jota"
KEY="$PWD/crates/jota-bundle/tests/fixtures/keys/ed25519.key.pem"
RING="$W/keyring"
mkdir -p "$RING"
cp crates/jota-bundle/tests/fixtures/keys/ed25519.pub.pem "$RING/"

if [ ! -s "$W/usr.img" ]; then
    find /usr/lib -type f -size +4k -print0 | sort -z | xargs -0 cat 2>/dev/null | head -c 1073741824 > "$W/usr.img" || true
fi
make_rootfs "$W/rootfs.ext4"

# run NAME CMD...: wall seconds and peak RSS (KiB) into $secs / $rss
run() {
    /usr/bin/time -f "%e %M" -o "$W/time" "$@" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; exit 1; }
    read -r secs rss < "$W/time"
}
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / (s > 0 ? s : 0.001) / 1e6 }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

echo "| input | step | tool | seconds | MB/s | peak RSS MiB | output bytes | jota / peer |"
echo "|---|---|---|---:|---:|---:|---:|---:|"
for input in usr.img rootfs.ext4; do
    f="$W/$input"
    size=$(stat -c %s "$f")
    cat "$f" > /dev/null # page cache: both sides read from memory
    if [ "$input" = rootfs.ext4 ]; then comp=(--rootfs "$f"); else comp=(--component "img:raw-image:$f:kernel"); fi

    # create: jota (chunk, hash, compress on all CPUs) vs zstd -T0 -3 then sha256sum
    run "$J" bundle create -o "$W/b.jota" --version 1.0 --key "$KEY" --level 3 "${comp[@]}"
    js=$secs; jr=$rss; jo=$(stat -c %s "$W/b.jota")
    run zstd -T0 -3 -q -f "$f" -o "$W/z.zst"; zs=$secs; zr=$rss; zo=$(stat -c %s "$W/z.zst")
    run sha256sum "$f"; ss=$secs; sr=$rss
    ps=$(awk -v a="$zs" -v b="$ss" 'BEGIN { print a + b }')
    pr=$(( zr > sr ? zr : sr ))
    echo "| $input | create | jota bundle create -l3 | $js | $(mbps "$size" "$js") | $(mib "$jr") | $jo | $(ratio "$(mbps "$size" "$js")" "$(mbps "$size" "$ps")")× speed |"
    echo "| $input | create | zstd -T0 -3 + sha256sum | $ps | $(mbps "$size" "$ps") | $(mib "$pr") | $zo | size $(ratio "$jo" "$zo")× |"

    # verify: jota (signature, every chunk, component sha256) vs zstd -d | sha256sum
    run "$J" bundle verify "$W/b.jota" --keyring "$RING"
    vs=$secs; vr=$rss
    run bash -c "zstd -d -q -c '$W/z.zst' | sha256sum"
    ds=$secs; dr=$rss
    echo "| $input | verify | jota bundle verify | $vs | $(mbps "$size" "$vs") | $(mib "$vr") | | $(ratio "$(mbps "$size" "$vs")" "$(mbps "$size" "$ds")")× speed |"
    echo "| $input | verify | zstd -d \\| sha256sum | $ds | $(mbps "$size" "$ds") | $(mib "$dr") | | |"
done
echo
echo "CPU: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(zstd --version | head -1)"
