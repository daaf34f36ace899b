#!/usr/bin/env bash
# Measures layout transitions on a testnet (release build, its own data
# directory and ports, removed at the end):
#
#   testnet/bench-rebalance.sh [CONTEXTS] [WINDOW_SECONDS]   (default 100000, 5)
#
# 1. Three nodes in the layout (RF 3, W 2, R 2, 1,024 partitions) and a
#    fourth started with an invite but outside the layout; CONTEXTS
#    contexts of 1 KiB loaded through node 1 (`slurp bench`, prefix `rb`).
# 2. Before: a steady read/write load (`slurp bench --mix get=80,put=20
#    --clients 4`, on contexts of its own) in windows of WINDOW_SECONDS;
#    the p99 of each operation per window.
# 3. Node 4 joins (`slurp cluster join PEER --apply`); the same load runs
#    in windows while the transition lasts, and every second a sampler
#    asks every node which of 1,000 of the loaded contexts it stores
#    (`POST /v1/cluster/holdings`; a different thousand each second,
#    cycling through all of them) and counts the copies of each.
# 4. When no node reports a transition any more: time to finish, versions
#    and bytes pulled (the nodes' `slurp_rebalance_total` counters), the
#    pull rate; the replicas the layout moved against the least any
#    placement must move (the newcomer's own), and the versions pulled
#    against the versions the nodes gained.
# 5. The same for removing node 2 (`slurp cluster remove PEER --apply`):
#    the least is what node 2 held.
#
# docs/reliability.md and docs/performance.md record the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
export SLURP_TESTNET_PROFILE=${SLURP_TESTNET_PROFILE:-release}
export SLURP_TESTNET_DIR=${SLURP_TESTNET_DIR:-$PWD/.testnet-rebalance}
export SLURP_TESTNET_PORT=${SLURP_TESTNET_PORT:-7600}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source testnet/lib.sh
contexts=${1:-100000}
window=${2:-5}
sampler_pid=""
cleanup() {
  [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null || true
  testnet/down.sh >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
testnet/up.sh 3 >/dev/null

# Node 4: certified with an invite, not in the layout (no --auto-join).
PEER1=$("$BIN" node peer-id --data "$DIR/node1")
BOOT="/ip4/127.0.0.1/tcp/$(p2p_port 1)/p2p/$PEER1"
printf 'exec %q node run --data %q --listen %q --p2p-listen %q --name node4 --zone zone1 --bootstrap %q --join-token %q\n' \
  "$BIN" "$DIR/node4" "127.0.0.1:$(api_port 4)" "/ip4/127.0.0.1/tcp/$(p2p_port 4)" "$BOOT" \
  "$(as_node 1 cluster invite)" >"$DIR/node4.cmd"
echo 4 >"$DIR/nodes"
launch 4
wait_healthy 4
PEER4=$("$BIN" node peer-id --data "$DIR/node4")
PEER2=$("$BIN" node peer-id --data "$DIR/node2")
certified() {
  local j
  j=$(as_node 1 cluster status --json --timeout 10s 2>/dev/null) || return 1
  [ "$(jq --arg p "$PEER4" '[.others[] | select(.peer_id == $p and .name != null)] | length' <<<"$j")" = 1 ]
}
wait_for 60 "node 4 to be known to node 1" certified

echo "== loading $contexts contexts of 1 KiB through node 1"
SLURP_NODE=$(node_url 1) SLURP_TOKEN=$(node_token 1) \
  "$BIN" bench --mix get=100 --clients 16 --keys "$contexts" --duration 100ms --prefix rb >/dev/null
SLURP_NODE=$(node_url 1) SLURP_TOKEN=$(node_token 1) \
  "$BIN" bench --mix get=100 --clients 4 --keys 2000 --duration 100ms --prefix steady >/dev/null

metric_sum() { # metric_sum NAME CAUSE: the counter summed over every node
  local i total=0 v
  for i in 1 2 3 4; do
    v=$(curl -sf "$(node_url "$i")/metrics" | awk -v c="$2" '$1 ~ "^'"$1"'" && $1 ~ "cause=\"" c "\"" { s += $2 } END { printf "%d", s }') || v=0
    total=$((total + v))
  done
  echo "$total"
}
versions_of() {
  local j
  j=$(as_node "$1" cluster status --json --timeout 10s) || return 1
  jq -r '.anti_entropy.store_versions' <<<"$j"
}
in_transition() {
  local i j
  for i in "$@"; do
    j=$(as_node "$i" cluster status --json --timeout 10s 2>/dev/null) || return 0
    [ "$(jq '.transition != null' <<<"$j")" = false ] || return 0
  done
  return 1
}
# One load window: "get_p99_us put_p99_us errors".
load_window() {
  local j
  j=$(SLURP_NODE=$(node_url 1) SLURP_TOKEN=$(node_token 1) "$BIN" bench --mix get=80,put=20 \
    --clients 4 --keys 2000 --no-load --prefix steady --duration "${window}s" --json)
  jq -r '[(.ops[] | select(.op == "get") | .p99_us), (.ops[] | select(.op == "put") | .p99_us), .errors] | @tsv' <<<"$j"
}
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print 0 }'; }

echo "== before: 3 windows of ${window}s"
before=$(for _ in 1 2 3; do load_window; done)
get_before=$(cut -f1 <<<"$before" | median)
put_before=$(cut -f2 <<<"$before" | median)
echo "p99 before: get ${get_before} µs, put ${put_before} µs"

# The copies sampler: every second, 1,000 of the loaded contexts on every
# node of $SAMPLE_NODES; writes "seconds checked min_copies under_rf" lines.
sample_copies() {
  local out=$1 nodes=$2
  python3 - "$out" "$contexts" "$nodes" "$BASE_PORT" "$DIR" <<'PY'
import json, os, sys, time, urllib.request
out, contexts, nodes, base, d = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), int(sys.argv[4]), sys.argv[5]
tokens = {n: open(f"{d}/node{n}/admin.token").read().strip() for n in nodes}
start, at, checked, low, under, seconds = time.time(), 0, 0, 99, 0, 0
stop = out + ".stop"
while not os.path.exists(stop):
    t0 = time.time()
    idx = [(at + k) % contexts for k in range(min(1000, contexts))]
    at = (at + len(idx)) % contexts
    addrs = [f"ucxl://bench:developer@rb:load/*^/src/module{i}.rs" for i in idx]
    copies = [0] * len(addrs)
    for n in nodes:
        for lo in range(0, len(addrs), 500):
            req = urllib.request.Request(
                f"http://127.0.0.1:{base + int(n)}/v1/cluster/holdings",
                data=json.dumps({"addresses": addrs[lo:lo + 500]}).encode(),
                headers={"Authorization": f"Bearer {tokens[n]}", "Content-Type": "application/json"})
            try:
                held = json.load(urllib.request.urlopen(req, timeout=10))["held"]
            except Exception:
                continue  # a node that does not answer holds no readable copy
            for k, h in enumerate(held):
                if h is not None:
                    copies[lo + k] += 1
    checked += len(addrs)
    low = min(low, min(copies))
    under += sum(1 for c in copies if c < 3)
    seconds += 1
    with open(out, "w") as f:
        f.write(f"{seconds} {checked} {low} {under}\n")
    time.sleep(max(0.0, 1.0 - (time.time() - t0)))
PY
}

partitions_of() { # partitions_of PEER: the partitions it holds under node 1's layout
  local j
  j=$(as_node 1 cluster status --json --timeout 10s) || return 1
  jq --arg p "$1" '[.members[] | select(.id == $p) | .partitions] | add // 0' <<<"$j"
}
# Versions held by each node, as "v1 v2 v3 v4".
held_all() { local i; for i in 1 2 3 4; do printf '%s ' "$(versions_of "$i" 2>/dev/null || echo 0)"; done; }

# change NAME SAMPLE_NODES PEER COMMAND...: runs a layout change (PEER is
# the member that joins or leaves) and reports its figures.
change() {
  local name=$1 nodes=$2 peer=$3
  shift 3
  local pulled0 bytes0 start end windows=() secs held0 parts0 applied moved
  pulled0=$(metric_sum slurp_rebalance_total versions_pulled)
  bytes0=$(metric_sum slurp_rebalance_total bytes_pulled)
  held0=$(held_all)
  parts0=$(partitions_of "$peer")
  rm -f "$DIR/copies" "$DIR/copies.stop"
  sample_copies "$DIR/copies" "$nodes" &
  sampler_pid=$!
  start=$(date +%s%3N)
  applied=$("$@" --json)
  moved=$(jq -r '.moved_replicas' <<<"$applied")
  # shellcheck disable=SC2086
  while in_transition ${nodes//,/ }; do
    windows+=("$(load_window)")
    [ $(( $(date +%s%3N) - start )) -lt 3600000 ] || { echo "$name: the transition did not end within an hour" >&2; return 1; }
  done
  end=$(date +%s%3N)
  touch "$DIR/copies.stop"
  wait "$sampler_pid" || true
  sampler_pid=""
  secs=$(awk -v ms=$((end - start)) 'BEGIN { printf "%.1f", ms / 1000 }')
  local pulled bytes
  pulled=$(( $(metric_sum slurp_rebalance_total versions_pulled) - pulled0 ))
  bytes=$(( $(metric_sum slurp_rebalance_total bytes_pulled) - bytes0 ))
  local parts1 ideal gained
  parts1=$(partitions_of "$peer")
  # The replicas the member gains (a join) or held (a removal): the least
  # any placement must move.
  ideal=$(( parts1 > parts0 ? parts1 : parts0 ))
  # Versions the nodes gained, counted where they grew (new writes of the
  # steady load during the change included).
  gained=$(paste <(tr ' ' '\n' <<<"$held0") <(held_all | tr ' ' '\n') | awk 'NF == 2 && $2 > $1 { g += $2 - $1 } END { print g + 0 }')
  echo "== $name"
  echo "finished in ${secs} s; pulled $pulled versions, $(awk -v b="$bytes" 'BEGIN { printf "%.1f MB", b / 1e6 }') ($(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.2f MB/s", b / 1e6 / s }'))"
  echo "replicas moved / the member's own: $moved / $ideal = $(awk -v a="$moved" -v b="$ideal" 'BEGIN { printf "%.3f", a / b }')"
  echo "versions pulled / versions the nodes gained: $pulled / $gained = $(awk -v a="$pulled" -v b="$gained" 'BEGIN { if (b) printf "%.3f", a / b; else print "-" }')"
  if [ "${#windows[@]}" -gt 0 ]; then
    local during get_worst put_worst
    during=$(printf '%s\n' "${windows[@]}")
    get_worst=$(cut -f1 <<<"$during" | sort -n | tail -1)
    put_worst=$(cut -f2 <<<"$during" | sort -n | tail -1)
    echo "load windows during the transfer: ${#windows[@]}; p99 get worst ${get_worst} µs (median $(cut -f1 <<<"$during" | median); ratio to before $(awk -v a="$get_worst" -v b="$get_before" 'BEGIN { printf "%.2f", a / b }')), put worst ${put_worst} µs (median $(cut -f2 <<<"$during" | median); ratio $(awk -v a="$put_worst" -v b="$put_before" 'BEGIN { printf "%.2f", a / b }')); errors $(cut -f3 <<<"$during" | awk '{ s += $1 } END { print s + 0 }')"
  else
    echo "the transition ended before a load window completed"
  fi
  read -r s checked low under <"$DIR/copies" || { s=0; checked=0; low=0; under=0; }
  echo "copies sampled for ${s} s: $checked contexts checked, fewest copies $low, $under checks below 3"
}

echo "node 1 holds $(versions_of 1) versions (a full copy)"
change "node 4 joins" 1,2,3,4 "$PEER4" as_node 1 cluster join "$PEER4" --apply
change "node 2 leaves" 1,2,3,4 "$PEER2" as_node 1 cluster remove "$PEER2" --apply
for i in 1 3 4; do
  echo "node $i holds $(versions_of "$i") versions"
done
