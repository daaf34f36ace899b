#!/usr/bin/env bash
# Measures a key rotation on one node (release build, fresh data
# directory): how fast the key-rewrap worker moves stored records onto the
# new epoch, and what it adds to foreground latency.
#
#   testnet/bench-rotation.sh [RECORDS] [SECONDS]   (default 20000, 10)
#
# Loads RECORDS developer contexts, runs the 80% get / 20% put mix with 8
# clients for SECONDS as a baseline, then rotates the developer key and
# runs the same load again at once, while the rewrap runs with its default
# throttle (rotation.rewrap_batch 256, rotation.rewrap_pause 10ms). Prints
# both reports, the rewrap pass's note and its rate (records rewrapped per
# second of the pass); docs/performance.md records the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
export SLURP_TESTNET_PROFILE=${SLURP_TESTNET_PROFILE:-release}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source testnet/lib.sh
records=${1:-20000}
secs=${2:-10}
build
start_bench_node
"$BIN" cluster init >/dev/null

load() { "$BIN" bench --mix get=80,put=20 --clients 8 --duration "${secs}s" --keys "$records" --prefix rot "$@"; }
echo "== loading $records contexts, then the baseline (no rotation)"
load
echo
echo "== rotate developer, and the same load during the rewrap"
rewrap_runs() { "$BIN" workers --json | jq -r '.workers[] | select(.name == "key-rewrap") | .runs'; }
before=$(rewrap_runs)
"$BIN" keys rotate --role developer
load --no-load
pass_done() {
  local w
  w=$("$BIN" workers --json | jq -c '.workers[] | select(.name == "key-rewrap")')
  [ "$(jq -r .runs <<<"$w")" -gt "$before" ] && [ "$(jq -r .state <<<"$w")" = idle ]
}
wait_for 600 "the rewrap pass to finish" pass_done
w=$("$BIN" workers --json | jq -c '.workers[] | select(.name == "key-rewrap")')
echo
echo "== the rewrap pass"
jq -r '"note: \(.last_note)\npass: \(.last_duration_ms) ms, \(.last_items) records rewrapped: \((.last_items * 1000 / (.last_duration_ms + 0.001)) | floor) records/s"' <<<"$w"
"$BIN" keys status
