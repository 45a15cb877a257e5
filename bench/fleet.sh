#!/usr/bin/env bash
# Benchmark: the fleet server under `jota fleet loadgen` — 100,000 registered devices polling
# over HTTP on loopback (32 connections; each device's first poll reports its version, which
# the server commits before answering, and is timed apart from the steady state that follows),
# on SQLite and on the local PostgreSQL; once with no
# deployments, once after a rollout of a small bundle over all of them (its creation time is
# the first evaluation: target selection and 100,000 assignments; after the polling, one more
# evaluation is timed as the server's timer runs it). The load generator runs on
# the same machine and takes its share of the CPU. Prints one markdown table.
#
# Usage: bench/fleet.sh [DEVICES] [SECONDS]   (default 100000 10; PostgreSQL at JOTA_BENCH_POSTGRES,
#        default postgres://postgres@127.0.0.1:5432/test, in a schema of its own)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"
SECS="${2:-10}"
PG="${JOTA_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
. bench/common.sh
need_tools mke2fs:e2fsprogs psql:postgresql-client python3:python3

cargo build --release -q -p jota
J="$PWD/target/release/jota"
KEYS="$PWD/crates/jota-bundle/tests/fixtures/keys"
W="$(mktemp -d)"
SERVER=""
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$W"' EXIT
TOKEN="bench-admin-token-0123456789"

mkdir -p "$W/stage/etc" && echo 2.0.0 > "$W/stage/etc/version"
mke2fs -q -t ext4 -d "$W/stage" "$W/rootfs.ext4" 8M
"$J" bundle create -o "$W/v2.jota" --version 2.0.0 --key "$KEYS/ed25519.key.pem" \
    --rootfs "$W/rootfs.ext4" >/dev/null

port=18470
# run DB_LABEL DB_URL ROLLOUT(yes|no): one server, one loadgen; appends a JSON line.
run() {
    local label=$1 url=$2 rollout=$3 data="$W/data-$port"
    mkdir -p "$data/keyring" && cp "$KEYS/ed25519.pub.pem" "$data/keyring/release.pem"
    local db=()
    [ -n "$url" ] && db=(--database "$url")
    "$J" server --data-dir "$data" --listen "127.0.0.1:$port" --admin-token "$TOKEN" \
        --insecure-http "${db[@]}" --rollout-seconds 3600 >"$W/server-$port.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
    local F=("$J" fleet --server "http://127.0.0.1:$port" --token "$TOKEN")
    local extra=()
    if [ "$rollout" = yes ]; then
        extra=(--artifact "$("${F[@]}" upload "$W/v2.jota" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')")
    fi
    "${F[@]}" loadgen --devices "$N" --concurrency 32 --seconds "$SECS" "${extra[@]}" --json \
        | python3 -c "import json,sys; d=json.load(sys.stdin); d['db']='$label'; print(json.dumps(d))" >>"$W/results.jsonl"
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
    port=$((port + 1))
}

schema="jota_bench_$$"
PGOPTIONS=--client-min-messages=warning psql "$PG" -qc "CREATE SCHEMA $schema" >/dev/null
pg_url="$PG?options=-c%20search_path%3D$schema"
run SQLite "" no
run SQLite "" yes
PGOPTIONS=--client-min-messages=warning psql "$PG" -qc "DROP SCHEMA $schema CASCADE; CREATE SCHEMA $schema" >/dev/null
run PostgreSQL "$pg_url" no
PGOPTIONS=--client-min-messages=warning psql "$PG" -qc "DROP SCHEMA $schema CASCADE; CREATE SCHEMA $schema" >/dev/null
run PostgreSQL "$pg_url" yes
PGOPTIONS=--client-min-messages=warning psql "$PG" -qc "DROP SCHEMA $schema CASCADE" >/dev/null

python3 - "$W/results.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| database | devices | deployments | first polls/s | polls/s | p50 ms | p99 ms | max ms | errors | register s | rollout create + assign s | rollout evaluate s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    ro, ev = r["rollout_create_seconds"], r["rollout_evaluate_seconds"]
    print(f"| {r['db']} | {r['devices']:,} | {r['rollout_assigned'] or 0:,} | {r['first_polls_per_second']:,.0f} | {r['polls_per_second']:,.0f} | "
          f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} | {r['errors']} | "
          f"{r['register_seconds']:.1f} | {'-' if ro is None else f'{ro:.2f}'} | {'-' if ev is None else f'{ev:.2f}'} |")
EOF
