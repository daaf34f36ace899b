#!/usr/bin/env bash
# A scenario against a running testnet (testnet/up.sh N, N >= 3):
#
#  1. write a context through node 1, read it through every other node
#     with node 1's token;
#  2. kill one of its replicas (not node 1), read it and write a new
#     version through node 1 (quorum 2 of 3 still met), read the new version
#     through every live node, search for it through another node;
#  3. restart the replica and check it catches up without any read that
#     could repair it: its own copy (read with r=1 through it, which asks
#     no other replica) reaches the new version, by hinted handoff when the
#     cluster has a fallback node (N > 3) and by anti-entropy in any case;
#  4. kill two replicas and wait until node 1 reports them down: a write
#     must fail with a quorum error (exit 6) and leave no version behind;
#     restart them and wait until node 1 reports them up.
#
# Exits non-zero at the first step that fails, saying what it expected and
# printing what it saw. Every command's output is captured before it is
# inspected (no pipes into grep), and every wait is a poll of a condition,
# bounded in time (SLURP_SMOKE_WAIT seconds, default 60). Needs jq.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
N=$(node_count)
[ "$N" -ge 3 ] || { echo "smoke needs a testnet of at least 3 nodes (testnet/up.sh 3)" >&2; exit 2; }
command -v jq >/dev/null 2>&1 || { echo "smoke.sh needs jq (apt-get install jq)" >&2; exit 2; }
for i in $(seq 1 "$N"); do node_alive "$i" || { echo "node $i is not running" >&2; exit 1; }; done
WAIT=${SLURP_SMOKE_WAIT:-60}

SCENARIO=SMOKE

# slurp through node I with node 1's token.
with_token1() { local i=$1; shift; SLURP_NODE=$(node_url "$i") SLURP_TOKEN=$(node_token 1) "$BIN" "$@"; }

TAG="smoke$$x$RANDOM"
A="ucxl://smoke:developer@smoke:run/*^/src/$TAG.rs"

# replicas_are STATE I...: node 1's placement of A shows each node I as
# a replica whose "up" is STATE (true or false).
replicas_are() {
  local state=$1 i got
  shift
  run as_node 1 cluster where "$A" --json --timeout 10s
  [ "$RC" = 0 ] || return 1
  for i in "$@"; do
    got=$(jq -r --arg n "node$i" '[.replicas[] | select(.name == $n) | .up] | first' <<<"$OUT" 2>/dev/null) || return 1
    [ "$got" = "$state" ] || return 1
  done
}

step "write through node 1"
must "put through node 1" as_node 1 put "$A" --summary "$TAG first version" --tag smoke --roles developer
echo "$OUT"

step "read through every other node (with node 1's token: tokens work on every member)"
for i in $(seq 2 "$N"); do
  must "get through node $i" with_token1 "$i" get "$A" --json
  expect_output "node $i reads the first version" "$TAG first version"
  echo "node $i reads it"
done

# The replicas of A, by node number, node 1 excluded.
must "cluster where through node 1" as_node 1 cluster where "$A" --json
names=$(jq -r '.replicas[].name' <<<"$OUT") || fail "cluster where: expected JSON with replicas, got $(seen)"
replicas=()
for name in $names; do
  if [[ $name =~ ^node([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" != 1 ]; then replicas+=("${BASH_REMATCH[1]}"); fi
done
[ ${#replicas[@]} -ge 1 ] || fail "no replica of $A besides node 1: $(seen)"
K=${replicas[0]}
K2=${replicas[1]:-}
echo "replicas of the address besides node 1: ${replicas[*]}"

step "kill replica node $K, read and write through node 1"
"$ROOT/testnet/kill.sh" "$K"
must "get through node 1 with node $K down" as_node 1 get "$A" --json
expect_output "node 1 reads the first version with node $K down" "$TAG first version"
must "put of the second version through node 1 with node $K down" \
  as_node 1 put "$A" --summary "$TAG second version" --tag smoke --roles developer
for i in $(seq 1 "$N"); do
  [ "$i" = "$K" ] && continue
  must "get through node $i" as_node "$i" get "$A" --json
  expect_output "node $i reads the second version" "$TAG second version"
done
echo "every live node reads the second version"
other=2; [ "$K" = 2 ] && other=3
search_finds() {
  run as_node "$other" search "$TAG second" --json
  [ "$RC" = 0 ] && [[ $OUT == *"$TAG second version"* ]]
}
wait_for "$WAIT" "a search through node $other to find \"$TAG second version\"" search_finds ||
  fail "search through node $other does not find the second version; last search: $(seen)"
echo "search through node $other finds it"

step "restart node $K and check it catches up"
"$ROOT/testnet/start.sh" "$K"
since=$SECONDS
caught_up() {
  run as_node "$K" get "$A" --r 1 --json --timeout 10s
  [ "$RC" = 0 ] && [[ $OUT == *"$TAG second version"* ]]
}
wait_for "$WAIT" "node $K's own copy (r=1) to reach \"$TAG second version\"" caught_up ||
  fail "node $K did not catch up; its last read: $(seen)"
echo "node $K caught up after about $((SECONDS - since)) s, with no read to repair it"

if [ -n "$K2" ]; then
  step "kill replicas $K and $K2: a write must fail with a quorum error"
  "$ROOT/testnet/kill.sh" "$K"
  "$ROOT/testnet/kill.sh" "$K2"
  wait_for "$WAIT" "node 1 to report nodes $K and $K2 down (cluster where)" replicas_are false "$K" "$K2" ||
    fail "node 1 does not report nodes $K and $K2 down; last placement: $(seen)"
  echo "node 1 reports nodes $K and $K2 down"
  run as_node 1 put "$A" --summary "$TAG third version" --roles developer
  [ "$RC" = 6 ] || fail "a write with 2 of 3 replicas down: expected exit 6 (quorum error), got $(seen)"
  [[ $ERR == *"replicas needed"* ]] ||
    fail "a write with 2 of 3 replicas down: expected a quorum error (\"... of the 2 replicas needed answered\"), got $(seen)"
  echo "the write failed as it must (exit 6): $ERR"
  "$ROOT/testnet/start.sh" "$K"
  "$ROOT/testnet/start.sh" "$K2"
  wait_for "$WAIT" "node 1 to report nodes $K and $K2 up again (cluster where)" replicas_are true "$K" "$K2" ||
    fail "node 1 does not report nodes $K and $K2 up again; last placement: $(seen)"
  echo "node 1 reports nodes $K and $K2 up again"
  must "history through node 1" as_node 1 history "$A" --json
  [[ $OUT != *"third version"* ]] || fail "the refused write left a version: $(seen)"
  must "get through node 1" as_node 1 get "$A" --json
  expect_output "the second version is still the latest" "$TAG second version"
  echo "no version was left behind; the second version is still the latest"
fi

rm -f "$ERRFILE"
echo
echo "SMOKE OK ($N nodes)"
