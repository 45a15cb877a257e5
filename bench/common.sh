# Shared by the bench/ scripts (sourced): peer tools, the release build, test inputs.

# need_tools CMD:PACKAGE...: apt-get installs the packages of missing commands.
need_tools() {
    local need=() t
    for t in "$@"; do
        command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
    done
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

# make_rootfs FILE: a 2 GiB ext4 made by mke2fs -d from ~1.2 GiB of /usr/lib (files,
# metadata, free space), kept between runs.
make_rootfs() {
    [ -s "$1" ] && return 0
    local stage="$1.stage" d
    rm -rf "$stage" && mkdir -p "$stage"
    for d in /usr/lib/x86_64-linux-gnu /usr/lib/jvm /usr/lib/gcc; do
        [ -d "$d" ] && cp -a "$d" "$stage/" 2>/dev/null || true
    done
    mke2fs -q -t ext4 -b 4096 -d "$stage" "$1" 2G
    rm -rf "$stage"
}
