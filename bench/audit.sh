#!/usr/bin/env bash
# The audit log's append rate, commit latency, memory and disk cost: runs
# `tollgate-audit`'s append_rate example several times per batch size and prints the median
# of each figure. Usage: bench/audit.sh [RUNS] [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
events=${2:-1000000}
cargo build --release -q -p tollgate-audit --example append_rate
bin=target/release/examples/append_rate
for batch in 512 64 1; do
    n=$events
    # One fsync per event is slow by design (that is a written-ahead control action): fewer.
    [ "$batch" = 1 ] && n=$((events / 200))
    for _ in $(seq "$runs"); do "$bin" --events "$n" --batch "$batch"; done |
        python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in sys.stdin if l.startswith("{")]
keys = [k for k in rows[0] if k not in ("events", "batch")]
med = {k: statistics.median(r[k] for r in rows) for k in keys}
print(json.dumps({"events": rows[0]["events"], "batch": rows[0]["batch"], "runs": len(rows), **med}))
'
done
