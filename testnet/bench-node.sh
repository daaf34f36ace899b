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
# Benchmarks measure the optimised build, whatever the testnet default.
export SLURP_TESTNET_PROFILE=release
# BIN, build, pid_alive and wait_for.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source testnet/lib.sh
secs=${1:-10}
build
start_bench_node

run() { echo; echo "== slurp bench $*"; "$BIN" bench --duration "${secs}s" "$@"; }
run --mix get=100 --clients 1 --keys 1000 --prefix small
run --mix put=100 --clients 1 --keys 1000 --prefix small --no-load
run --mix get=80,put=15,search=5 --clients 32 --keys 1000 --prefix small --no-load
run --mix search=100 --clients 1 --keys 100000 --value-size 300 --prefix large
echo
"$BIN" status
