#!/usr/bin/env bash
# Measures anti-entropy on a 3-node testnet (release build, its own data
# directory and ports, removed at the end):
#
#   testnet/bench-heal.sh [WRITES] [IDLE_SECONDS]   (default 10000, 60)
#
# 1. Stops node 3 (SIGKILL) and writes WRITES contexts through node 1
#    (`slurp bench --mix put=100`; every write acknowledged by nodes 1 and
#    2, W 2). Nothing reads them afterwards.
# 2. Starts node 3 and measures how long until it holds exactly what the
#    others hold (the store digests in `slurp cluster status` agree):
#    anti-entropy alone, since no client reads.
# 3. Once every node reports every partition converged, measures for
#    IDLE_SECONDS what the three idle nodes cost: CPU time of each process
#    (/proc/PID/stat) and the bytes on the loopback interface (everything
#    the nodes send each other: membership probes, token sync and the
#    digest comparisons; an upper bound on anti-entropy's share).
#
# docs/reliability.md records the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
export SLURP_TESTNET_PROFILE=${SLURP_TESTNET_PROFILE:-release}
export SLURP_TESTNET_DIR=${SLURP_TESTNET_DIR:-$PWD/.testnet-heal}
export SLURP_TESTNET_PORT=${SLURP_TESTNET_PORT:-7400}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source testnet/lib.sh
writes=${1:-10000}
idle=${2:-60}
cleanup() {
  testnet/down.sh >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
testnet/up.sh 3 >/dev/null
converged_all() {
  local i j
  for i in 1 2 3; do
    j=$(as_node "$i" cluster status --json --timeout 10s 2>/dev/null) || return 1
    [ "$(jq '.anti_entropy | .partitions > 0 and .converged == .partitions' <<<"$j")" = true ] || return 1
  done
}
wait_for 120 "every node to report every partition converged" converged_all
testnet/kill.sh 3 >/dev/null
echo "== node 3 down; writing $writes contexts through node 1"
SLURP_NODE=$(node_url 1) SLURP_TOKEN=$(node_token 1) \
  "$BIN" bench --mix put=100 --clients 8 --keys "$writes" --duration 100ms --prefix heal >/dev/null
ae_field() {
  local j
  j=$(as_node "$1" cluster status --json --timeout 10s 2>/dev/null) || return 1
  jq -r ".anti_entropy.$2" <<<"$j"
}
digest_of() { ae_field "$1" store_digest; }
versions_of() { ae_field "$1" store_versions; }
held=$(versions_of 1)
echo "node 1 holds $held versions"
start_ms=$(date +%s%3N)
testnet/start.sh 3 >/dev/null
up_ms=$(date +%s%3N)
same() {
  local d1 d2 d3
  d1=$(digest_of 1) && d2=$(digest_of 2) && d3=$(digest_of 3) || return 1
  [ -n "$d3" ] && [ "$d3" != null ] && [ "$d1" = "$d3" ] && [ "$d2" = "$d3" ]
}
wait_for 300 "node 3 to hold what nodes 1 and 2 hold" same
end_ms=$(date +%s%3N)
echo "node 3 converged $((end_ms - start_ms)) ms after it was started, $((end_ms - up_ms)) ms after it answered /health (it holds $(versions_of 3) versions, no client read)"

wait_for 120 "every node to report every partition converged" converged_all
echo "== $idle s idle"
ticks() { local s; s=$(cat "/proc/$1/stat"); s=${s##*) }; read -r -a f <<<"$s"; echo $((f[11] + f[12])); }
lo_bytes() { local l; l=$(grep ' lo:' /proc/net/dev); read -r -a f <<<"${l#*:}"; echo "${f[0]}"; }
declare -A t0
for i in 1 2 3; do t0[$i]=$(ticks "$(node_pid "$i")"); done
b0=$(lo_bytes)
sleep "$idle"
b1=$(lo_bytes)
hz=$(getconf CLK_TCK)
for i in 1 2 3; do
  t=$(($(ticks "$(node_pid "$i")") - t0[$i]))
  awk -v t="$t" -v hz="$hz" -v s="$idle" -v i="$i" 'BEGIN { printf "node %d: %.3f%% of a core\n", i, 100 * t / hz / s }'
done
awk -v b=$((b1 - b0)) -v s="$idle" 'BEGIN { printf "loopback: %.1f KB/s in all, %.1f KB/s per node\n", b / 1000 / s, b / 3000 / s }'
for i in 1 2 3; do
  w=$(as_node "$i" workers --json)
  jq -r '.workers[] | select(.name == "anti-entropy") | "node '"$i"' anti-entropy: \(.runs) passes, last \(.last_duration_ms) ms: \(.last_note)"' <<<"$w"
done
