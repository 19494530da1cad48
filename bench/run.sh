#!/usr/bin/env bash
# Side-by-side benchmark of Tollgate, Mosquitto and rumqttd over mutual TLS.
# Builds Tollgate and the load generator in release mode, installs what is missing
# (mosquitto from Debian, rumqttd with client-certificate verification from crates.io),
# then runs every scenario. Arguments go to `tollgate-bench run` (see --help):
#   bench/run.sh                      # full run: 3 repetitions, results in bench/results/
#   bench/run.sh --quick              # < 2 minutes, results in target/bench-work/results/
#   bench/run.sh --brokers tollgate,mosquitto --only latency,pairs
#   bench/run.sh --brokers tollgate --only scale --scale 100000 --connections 100   # 100,000 connections, revocation timing
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p tollgate -p tollgate-bench
exec target/release/tollgate-bench run "$@"
