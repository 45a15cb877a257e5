#!/usr/bin/env bash
# bench/rootfs-pair.sh OUTDIR
#
# Builds a reproducible pair of Debian root filesystems and 512 MiB ext4
# images for designing and benchmarking delta updates:
#
#   OUTDIR/v1-root   debootstrap --variant=minbase bookworm
#   OUTDIR/v2-root   v1-root + curl openssh-client python3-minimal
#   OUTDIR/v1.ext4   mke2fs -d v1-root (512 MiB, deterministic)
#   OUTDIR/v2.ext4   mke2fs -d v2-root (512 MiB, deterministic)
#
# Idempotent: every step is skipped when its output already exists (stamp
# files OUTDIR/.v1-root.ok / .v2-root.ok mark complete trees; images are
# written to a temporary name and renamed at the end). Rebuilding v1-root
# invalidates v2-root and both images; rebuilding v2-root invalidates v2.ext4.
#
# Must run as root on Debian 12 (or similar) with access to a Debian mirror.
# Environment overrides: SUITE, MIRROR, SOURCE_DATE_EPOCH, IMG_SIZE,
# FS_UUID, HASH_SEED, V2_PACKAGES.
#
# Determinism notes:
#   * both images use the SAME filesystem UUID and hash seed: with
#     metadata_csum the checksum seed derives from the UUID, so distinct UUIDs
#     would change every metadata block checksum between v1 and v2;
#   * mke2fs reads features from /etc/mke2fs.conf; a private MKE2FS_CONFIG
#     pins them so the host's config does not matter;
#   * E2FSPROGS_FAKE_TIME pins superblock times and crtime, but mke2fs -d
#     copies atime/ctime from the source tree (ctime cannot be set from user
#     space, atime moves whenever a file is read), so a debugfs pass sets
#     atime and ctime of every in-use inode to SOURCE_DATE_EPOCH afterwards;
#   * mke2fs -E takes only the LAST -E option, so all extended options are
#     passed in one -E;
#   * mke2fs 1.47.0 walks the source tree in readdir() order, so inode
#     numbering can depend on the host filesystem holding OUTDIR.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "$0: must run as root (debootstrap, chroot, mount)" >&2
    exit 1
fi

OUT=$1
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
IMG_SIZE=${IMG_SIZE:-512M}
FS_UUID=${FS_UUID:-6a6f7461-0000-4000-8000-000000000001}
HASH_SEED=${HASH_SEED:-6a6f7461-0000-4000-8000-000000000002}
V2_PACKAGES=${V2_PACKAGES:-curl openssh-client python3-minimal}
HOSTNAME_FIXED=jota-bench
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600} # 2025-01-01 UTC
export E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
export LC_ALL=C TZ=UTC DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

TMPD=$(mktemp -d)
MOUNTED=()
cleanup() {
    local m
    for m in "${MOUNTED[@]}"; do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$TMPD"
}
trap cleanup EXIT

log() { printf '[rootfs-pair %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# --- host tools -------------------------------------------------------------
APT_UPDATED=0
need_host_pkgs() {
    local missing=() spec bin pkg
    for spec in "$@"; do
        bin=${spec%%:*} pkg=${spec#*:}
        command -v "$bin" >/dev/null 2>&1 || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    if ((APT_UPDATED == 0)); then
        log "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
    log "installing host packages: ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
need_host_pkgs debootstrap:debootstrap mke2fs:e2fsprogs debugfs:e2fsprogs \
    sha256sum:coreutils

# --- helpers ------------------------------------------------------------------
unmount_under() { # unmount anything still mounted below $1 (deepest first)
    local root=$1 m
    while read -r m; do
        umount -l "$m" || true
    done < <(awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r)
}

remove_tree() {
    [[ -e $1 ]] || return 0
    unmount_under "$1"
    rm -rf --one-file-system "$1"
}

chroot_mounts() {
    local root=$1
    mount -t proc proc "$root/proc"
    MOUNTED+=("$root/proc")
    mkdir -p "$root/dev/pts"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
    MOUNTED+=("$root/dev/pts")
}

chroot_umounts() {
    local root=$1
    umount "$root/dev/pts"
    umount "$root/proc"
    MOUNTED=()
}

# Strip state that differs from run to run and pin what is left.
normalize_tree() {
    local root=$1
    echo "$HOSTNAME_FIXED" >"$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
        "$HOSTNAME_FIXED" >"$root/etc/hosts"
    rm -f "$root/etc/resolv.conf"
    printf 'nameserver 127.0.0.53\n' >"$root/etc/resolv.conf"
    chmod 644 "$root/etc/hostname" "$root/etc/hosts" "$root/etc/resolv.conf"
    [[ ! -e $root/etc/machine-id ]] || : >"$root/etc/machine-id"
    rm -f "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    rm -rf "$root"/var/cache/apt/archives/partial/* "$root"/var/lib/apt/lists/*
    mkdir -p "$root/var/lib/apt/lists/partial"
    rm -f "$root"/var/cache/ldconfig/aux-cache
    rm -f "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
    rm -f "$root"/usr/sbin/policy-rc.d
    rm -rf "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.cache
    # Logs: drop files, keep the directory skeleton packages expect.
    find "$root/var/log" -type f -delete
    # Clamp every timestamp newer than SOURCE_DATE_EPOCH (files written at
    # install time); package-shipped mtimes stay as dpkg unpacked them.
    find "$root" -xdev -newermt "@$SOURCE_DATE_EPOCH" -print0 |
        xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"
}

# --- v1-root ------------------------------------------------------------------
V1=$OUT/v1-root V2=$OUT/v2-root
if [[ ! -e $OUT/.v1-root.ok ]]; then
    remove_tree "$V1"
    rm -f "$OUT/.v2-root.ok" "$OUT/v1.ext4" "$OUT/v2.ext4"
    arch=$(dpkg --print-architecture)
    log "debootstrap --variant=minbase $SUITE ($arch) from $MIRROR"
    t0=$(date +%s)
    debootstrap --variant=minbase --arch="$arch" --components=main \
        "$SUITE" "$V1" "$MIRROR" >"$TMPD/debootstrap.log" 2>&1 || {
        tail -n 40 "$TMPD/debootstrap.log" >&2
        [[ ! -f $V1/debootstrap/debootstrap.log ]] || tail -n 40 "$V1/debootstrap/debootstrap.log" >&2
        exit 1
    }
    log "debootstrap took $(($(date +%s) - t0)) s"
    normalize_tree "$V1"
    touch "$OUT/.v1-root.ok"
else
    log "v1-root exists, skipping debootstrap"
fi

# --- v2-root ------------------------------------------------------------------
if [[ ! -e $OUT/.v2-root.ok ]]; then
    remove_tree "$V2"
    rm -f "$OUT/v2.ext4"
    log "copying v1-root -> v2-root"
    cp -a --reflink=auto "$V1" "$V2"
    # Never start services inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$V2/usr/sbin/policy-rc.d"
    chmod 755 "$V2/usr/sbin/policy-rc.d"
    rm -f "$V2/etc/resolv.conf"
    cp -L /etc/resolv.conf "$V2/etc/resolv.conf"
    chroot_mounts "$V2"
    log "installing into v2-root: $V2_PACKAGES"
    chroot "$V2" apt-get update -qq
    # shellcheck disable=SC2086
    chroot "$V2" apt-get install -y -qq --no-install-recommends $V2_PACKAGES >/dev/null
    chroot "$V2" apt-get clean
    chroot_umounts "$V2"
    normalize_tree "$V2"
    touch "$OUT/.v2-root.ok"
else
    log "v2-root exists, skipping package install"
fi

# --- ext4 images --------------------------------------------------------------
cat >"$TMPD/mke2fs.conf" <<'EOF'
[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
EOF

# Set atime and ctime of every in-use inode (root dir and >= first_ino) to
# SOURCE_DATE_EPOCH: mke2fs -d copied them from the host tree.
pin_inode_times() {
    local img=$1 ninodes first
    ninodes=$(dumpe2fs -h "$img" 2>/dev/null | awk -F: '/^Inode count/ {gsub(/ /, "", $2); print $2}')
    first=$(dumpe2fs -h "$img" 2>/dev/null | awk -F: '/^First inode/ {gsub(/ /, "", $2); print $2}')
    seq 1 "$ninodes" | awk '{print "testi <" $1 ">"}' >"$TMPD/testi.cmd"
    debugfs -f "$TMPD/testi.cmd" "$img" 2>/dev/null |
        awk -v first="$first" -v t="@$SOURCE_DATE_EPOCH" '
            $1 == "Inode" && /is marked in use/ && ($2 == 2 || $2 >= first) {
                print "set_inode_field <" $2 "> atime " t
                print "set_inode_field <" $2 "> ctime " t
            }' >"$TMPD/pin.cmd"
    debugfs -w -f "$TMPD/pin.cmd" "$img" >"$TMPD/pin.log" 2>&1
    if grep -qiE 'error|invalid|usage' "$TMPD/pin.log"; then
        grep -iE 'error|invalid|usage' "$TMPD/pin.log" | head >&2
        return 1
    fi
}

make_image() {
    local src=$1 img=$2
    if [[ -s $img ]]; then
        log "$(basename "$img") exists, skipping"
        return 0
    fi
    local tmp=$img.tmp
    rm -f "$tmp"
    log "mke2fs -d $(basename "$src") -> $(basename "$img")"
    MKE2FS_CONFIG=$TMPD/mke2fs.conf mke2fs -q -F -t ext4 -b 4096 -I 256 -i 16384 \
        -m 5 -L APP -U "$FS_UUID" -J size=16 \
        -E "root_owner=0:0,hash_seed=$HASH_SEED,lazy_itable_init=0,lazy_journal_init=0,nodiscard" \
        -d "$src" "$tmp" "$IMG_SIZE" >/dev/null
    pin_inode_times "$tmp"
    e2fsck -fn "$tmp" >"$TMPD/fsck.log" 2>&1 || {
        cat "$TMPD/fsck.log" >&2
        exit 1
    }
    mv "$tmp" "$img"
}
make_image "$V1" "$OUT/v1.ext4"
make_image "$V2" "$OUT/v2.ext4"

# --- summary ------------------------------------------------------------------
echo "== rootfs-pair: $OUT (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
for v in v1 v2; do
    printf '%s-root: %s files, %s\n' "$v" \
        "$(find "$OUT/$v-root" -xdev | wc -l)" "$(du -sh --apparent-size "$OUT/$v-root" | cut -f1)"
done
for v in v1 v2; do
    img=$OUT/$v.ext4
    printf '%s.ext4: %s bytes (allocated %s), used %s blocks\n' "$v" \
        "$(stat -c %s "$img")" "$(du -h "$img" | cut -f1)" \
        "$(dumpe2fs -h "$img" 2>/dev/null | awk -F: '/^Block count/ {b=$2} /^Free blocks/ {f=$2} END {print b - f}')"
done
(cd "$OUT" && sha256sum v1.ext4 v2.ext4)
