#!/usr/bin/env bash
# Prints the agent's performance figures (release build), all through the
# real agent (outbox, pipeline, receipts) against the in-process sandbox:
#  - sales/s end to end (create + submit + PDF) with the realistic latency
#    profile and a pool of 8 workers, at concurrency 1, 4, 8, as a fraction
#    of the pool's ceiling
#  - without latency, SALES sales: sales/s, CPU per sale, backend calls per sale
#  - inbox-to-outbox intake rate for FILES small files
#  - one shared login for 200 concurrent callers on an expired token
#  - QuickBooks invoices pushed per minute against the simulator enforcing
#    Intuit's limits (time scaled), with and without batch requests, as a
#    ratio of the limits' ceiling (`target/release/examples/bench qbo` alone)
#  - the QuickBooks cache against the simulator holding 50,000 customers and
#    20,000 items with Intuit's limits in real time: full load, incremental
#    refresh after 100 changes, search latency p50/p99
#    (`target/release/examples/bench cache` alone)
#  - idle RSS and CPU of `pos-connector run` after IDLE_SECS (default 60) with nothing to do
# Usage: scripts/bench.sh [SALES] [FILES] (defaults 1000 and 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
sales="${1:-1000}"
files="${2:-10000}"
idle="${IDLE_SECS:-60}"
cargo build --release --locked --quiet --workspace --bins
cargo build --release --locked --quiet -p pos-connector --example bench
target/release/examples/bench "$sales" "$files"

echo "== idle service (${idle} s)"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
target/release/pos-sandbox --port 0 > "$work/sandbox.out" 2>/dev/null &
for _ in $(seq 100); do grep -q "listening on" "$work/sandbox.out" 2>/dev/null && break; sleep 0.1; done
base="$(sed -n 's/^sandbox listening on //p' "$work/sandbox.out")"
cat > "$work/config.json" <<JSON
{"base_url": "$base", "email": "vendor@sandbox.test", "data_dir": "$work/data", "log_dir": "$work/logs",
 "invoice_folder": "$work/inbox", "receipts": {"dir": "$work/receipts"},
 "local_api": {"bind": "127.0.0.1:0", "api_key": "bench-local-api-key"}}
JSON
POS_CONNECTOR_PASSWORD=sandbox-password target/release/pos-connector --config "$work/config.json" run > "$work/run.out" 2>&1 &
pid=$!
sleep 2
ticks0=$(awk '{print $14+$15}' /proc/$pid/stat)
sleep "$idle"
ticks1=$(awk '{print $14+$15}' /proc/$pid/stat)
rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
hz=$(getconf CLK_TCK)
echo "idle run: RSS $((rss_kb / 1024)) MiB (${rss_kb} kB), CPU $(( (ticks1 - ticks0) * 1000 / hz )) ms over ${idle} s"
kill -TERM $pid; wait $pid || true
echo "stopped on SIGTERM: $(tail -1 "$work/run.out" | sed 's/\x1b\[[0-9;]*m//g')"
