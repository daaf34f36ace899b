#!/usr/bin/env bash
# Measures a single node through its HTTP API with `slurp bench` (release
# build, fresh data directory, node and load generator on this machine).
#
#   testnet/bench-node.sh [SECONDS]        (default 10 s per run)
#
# Runs, in order: cached gets with 1 client, durable puts with 1 client,
# the 80% get / 15% put / 5% search mix with 32 clients, and searches with
# 1 client over 100,000 contexts. Prints each report; docs/performance.md
# records the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
cargo build --release -p slurp-node --bin slurp
BIN="$PWD/target/release/slurp"
DATA=$(mktemp -d)
PORT=${SLURP_BENCH_PORT:-7079}
"$BIN" node run --data "$DATA/node" --listen "127.0.0.1:$PORT" >"$DATA/node.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
export SLURP_NODE="http://127.0.0.1:$PORT"
for _ in $(seq 1 200); do
  [ -f "$DATA/node/admin.token" ] && "$BIN" health --token x >/dev/null 2>&1 && break
  sleep 0.1
done
export SLURP_TOKEN
SLURP_TOKEN=$(cat "$DATA/node/admin.token")

run() { echo; echo "== slurp bench $*"; "$BIN" bench --duration "${secs}s" "$@"; }
run --mix get=100 --clients 1 --keys 1000 --prefix small
run --mix put=100 --clients 1 --keys 1000 --prefix small --no-load
run --mix get=80,put=15,search=5 --clients 32 --keys 1000 --prefix small --no-load
run --mix search=100 --clients 1 --keys 100000 --value-size 300 --prefix large
echo
"$BIN" status
