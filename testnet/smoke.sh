#!/usr/bin/env bash
# A scenario against a running testnet (testnet/up.sh N, N >= 3):
#
#  1. write a context through node 1, read it through every other node
#     with node 1's token;
#  2. kill one of its replicas (not node 1), read it and write a new
#     version through node 1 (quorum 2 of 3 still met), read the new version
#     through every live node, search for it through another node;
#  3. restart the replica and check it catches up: its own copy (read with
#     r=1 through it) reaches the new version, by hinted handoff when the
#     cluster has a fallback node (N > 3), else by read repair;
#  4. kill two replicas: a write must fail with a quorum error (exit 6)
#     and leave no version behind; restart them.
#
# Exits non-zero at the first step that fails. Every wait is bounded.
source "$(dirname "$0")/lib.sh"
N=$(node_count)
[ "$N" -ge 3 ] || { echo "smoke needs a testnet of at least 3 nodes (testnet/up.sh 3)" >&2; exit 2; }
for i in $(seq 1 "$N"); do node_alive "$i" || { echo "node $i is not running" >&2; exit 1; }; done

step() { echo; echo "== $*"; }
fail() { echo "SMOKE FAILED: $*" >&2; exit 1; }
TAG="smoke$$x$RANDOM"
A="ucxl://smoke:developer@smoke:run/*^/src/$TAG.rs"

step "write through node 1"
as_node 1 put "$A" --summary "$TAG first version" --tag smoke --roles developer

step "read through every other node (with node 1's token: tokens work on every member)"
for i in $(seq 2 "$N"); do
  SLURP_NODE=$(node_url "$i") SLURP_TOKEN=$(node_token 1) "$BIN" get "$A" --json | grep -q "$TAG first version" \
    || fail "node $i does not read the first version"
  echo "node $i reads it"
done

# The replicas of A, by node number, node 1 excluded.
replicas=$(as_node 1 cluster where "$A" --json | grep -o '"name": *"node[0-9]*"' | grep -o '[0-9]*' | grep -vx 1 || true)
K=$(echo "$replicas" | head -1)
K2=$(echo "$replicas" | sed -n 2p)
[ -n "$K" ] || fail "no replica of $A besides node 1"
echo "replicas of the address besides node 1: $(echo $replicas | tr '\n' ' ')"

step "kill replica node $K, read and write through node 1"
"$ROOT/testnet/kill.sh" "$K"
as_node 1 get "$A" --json | grep -q "$TAG first version" || fail "read with node $K down"
as_node 1 put "$A" --summary "$TAG second version" --tag smoke --roles developer
for i in $(seq 1 "$N"); do
  [ "$i" = "$K" ] && continue
  as_node "$i" get "$A" --json | grep -q "$TAG second version" || fail "node $i does not read the second version"
done
echo "every live node reads the second version"
other=2; [ "$K" = 2 ] && other=3
found=0
for _ in $(seq 1 50); do
  if as_node "$other" search "$TAG second" --json | grep -q "$TAG second version"; then found=1; break; fi
  sleep 0.2
done
[ $found = 1 ] || fail "search through node $other does not find the second version"
echo "search through node $other finds it"

step "restart node $K and check it catches up"
"$ROOT/testnet/start.sh" "$K"
caught=""
for n in $(seq 1 150); do
  if as_node "$K" get "$A" --r 1 --json 2>/dev/null | grep -q "$TAG second version"; then
    caught=yes; break
  fi
  # After 15 s without handoff (e.g. no fallback node), a full read
  # through node 1 repairs every replica.
  if [ "$n" = 75 ]; then as_node 1 get "$A" --r 3 >/dev/null 2>&1 || true; fi
  sleep 0.2
done
[ -n "$caught" ] || fail "node $K did not catch up within 30 s"
echo "node $K caught up after about $((n / 5)) s"

if [ -n "$K2" ]; then
  step "kill replicas $K and $K2: a write must fail with a quorum error"
  "$ROOT/testnet/kill.sh" "$K"
  "$ROOT/testnet/kill.sh" "$K2"
  # The coordinator notices within its probe interval.
  sleep 2.5
  set +e
  as_node 1 put "$A" --summary "$TAG third version" --roles developer
  code=$?
  set -e
  [ "$code" = 6 ] || fail "a write with 2 of 3 replicas down exited $code, expected 6"
  echo "the write failed as it must (exit 6)"
  "$ROOT/testnet/start.sh" "$K"
  "$ROOT/testnet/start.sh" "$K2"
  sleep 2.5
  as_node 1 history "$A" --json | grep -q "third version" && fail "the refused write left a version"
  as_node 1 get "$A" --json | grep -q "$TAG second version" || fail "the second version is not the latest"
  echo "no version was left behind; the second version is still the latest"
fi

echo
echo "SMOKE OK ($N nodes)"
