#!/usr/bin/env bash
# Which allocator gives memory back after a burst, and what it costs in throughput.
#
# Builds Tollgate three times (`--no-default-features`: the system allocator, then with
# `--features mimalloc` and `--features jemalloc`, the default), then for each build, on one server process:
#   1. 5,000 connections opened and closed (the cost of a connection flood),
#   2. 10 s of QoS 1 pairs with 16 KiB payloads (message buffers),
# and reports the resident memory at start, at each peak, and 3 s and 15 s after each phase
# (jemalloc gives dirty pages back after ~10 s by default, mimalloc within ~1 s).
# Throughput is measured separately with `bench/run.sh --tollgate BIN --baseline BIN`.
#
#   bench/allocator.sh            # results on stdout (a Markdown table)
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/alloc
mkdir -p "$out"
for a in system mimalloc jemalloc; do
    if [ "$a" = system ]; then
        cargo build --release --locked -p tollgate --no-default-features
    else
        cargo build --release --locked -p tollgate --no-default-features --features "$a"
    fi
    cp target/release/tollgate "$out/tollgate-$a"
done
cargo build --release --locked -p tollgate -p tollgate-bench
gen=target/release/tollgate-bench
# The benchmark's data directory and 5,000 device certificates.
"$gen" run --quick --brokers tollgate --only connections --connections 5000 >/dev/null 2>&1 || true
work=target/bench-work
[ -d "$work/tollgate-data" ] && [ -f "$work/certs/ca.crt" ] || { echo "no benchmark data in $work" >&2; exit 1; }

rss() { awk '/^VmRSS:/ {print int($2/1024)}' "/proc/$1/status"; }
peak() { python3 -c 'import json,sys; print(int(json.load(sys.stdin).get("broker_peak_rss_kib") or 0)//1024)'; }

echo "| allocator | start MB | connections: peak | +3 s | +15 s | pairs 16 KiB: peak | +3 s | +15 s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for a in system mimalloc jemalloc; do
    data=$(mktemp -d)/data
    cp -a "$work/tollgate-data" "$data"
    rm -f "$data/run/lock" "$data/run/addresses.json"
    (ulimit -n "$(ulimit -Hn)"; exec taskset -c 0 "$out/tollgate-$a" serve --data "$data" \
        --mqtt-listen 127.0.0.1:29883 --admin-listen 127.0.0.1:29443) 2>/dev/null &
    pid=$!
    for _ in $(seq 200); do [ -f "$data/run/addresses.json" ] && break; sleep 0.05; done
    start=$(rss $pid)
    load() { (ulimit -n "$(ulimit -Hn)"; exec taskset -c 1 "$gen" load --addr 127.0.0.1:29883 \
        --certs "$work/certs" --broker-pid $pid "$@"); }
    p1=$(load --scenario connections --connections 5000 --concurrency 32 | peak)
    sleep 3; a1=$(rss $pid); sleep 12; b1=$(rss $pid)
    p2=$(load --scenario pairs --qos 1 --clients 8 --payload 16384 --duration 10 | peak)
    sleep 3; a2=$(rss $pid); sleep 12; b2=$(rss $pid)
    kill -TERM $pid; wait $pid || true
    rm -rf "$(dirname "$data")"
    echo "| $a | $start | $p1 | $a1 | $b1 | $p2 | $a2 | $b2 |"
done
