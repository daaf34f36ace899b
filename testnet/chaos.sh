#!/usr/bin/env bash
# The fault-injection suite with real processes: a 3-node testnet (its own
# data directory and ports, removed at the end) runs `slurp chaos`, a
# seeded workload of puts, deletes and reads through all three nodes'
# APIs, while a fault loop hurts one node at a time: SIGKILL and restart,
# SIGSTOP and SIGCONT, and, where the machine allows network namespaces,
# a network partition (the node's link goes down: it reaches no one and
# no one reaches it). When SECONDS are over the loop brings every node
# back and `slurp chaos` waits until the nodes converge and checks the
# history (docs/reliability.md).
#
#   testnet/chaos.sh [SECONDS]          (default 60)
#
#   SLURP_TESTNET_CHAOS_SEED   seed of the workload and of the fault loop (1)
#   SLURP_TESTNET_CHAOS_NETNS  auto (default: namespaces when running as
#                              root and `ip netns add` works), 1 (require
#                              them) or 0 (never)
# (SLURP_TESTNET_*: a node takes other SLURP_* variables for config keys.)
#
# With namespaces every node runs in namespace slurp-chaos-I with address
# 10.231.0.I on a bridge (slurpchaos0, 10.231.0.254 on the host side), so
# a partition is `ip link set scI down`; the testnet is formed here with
# the functions of lib.sh (up.sh binds 127.0.0.1). Without them, up.sh,
# kill.sh and start.sh run the testnet on 127.0.0.1 and the loop only
# kills and stops nodes.
#
# It stops by itself: the workload starts nothing after SECONDS, every
# wait is bounded, and an exit trap continues stopped nodes, stops the
# testnet, and removes its data, namespaces and bridge. Exit status 0 only
# if the checker found nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export SLURP_TESTNET_DIR=${SLURP_TESTNET_DIR:-$ROOT/.testnet-chaos}
export SLURP_TESTNET_PORT=${SLURP_TESTNET_PORT:-7500}
# The checker models no tombstone collection: the nodes collect nothing
# while the run lasts (a config key, which the nodes inherit).
export SLURP_REPLICATION__GC_MIN_AGE=${SLURP_REPLICATION__GC_MIN_AGE:-7days}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$ROOT/testnet/lib.sh"
SECS=${1:-60}
SEED=${SLURP_TESTNET_CHAOS_SEED:-1}
NETNS=${SLURP_TESTNET_CHAOS_NETNS:-auto}
N=3
case "$SECS$SEED" in *[!0-9]*) echo "usage: testnet/chaos.sh [SECONDS]" >&2; exit 2 ;; esac
RANDOM=$SEED
BR=slurpchaos0
NET=10.231.0

netns_works() {
  [ "$(id -u)" = 0 ] || return 1
  command -v ip >/dev/null || return 1
  ip netns add "slurp-chaos-probe-$$" 2>/dev/null || return 1
  ip netns del "slurp-chaos-probe-$$"
}
case "$NETNS" in
  auto) if netns_works; then NETNS=1; else NETNS=0; fi ;;
  1) netns_works || { echo "SLURP_TESTNET_CHAOS_NETNS=1 but network namespaces are not available (root and ip netns needed)" >&2; exit 1; } ;;
  0) ;;
  *) echo "SLURP_TESTNET_CHAOS_NETNS must be auto, 0 or 1" >&2; exit 2 ;;
esac

netns_down() {
  local i
  for i in $(seq 1 "$N"); do ip netns del "slurp-chaos-$i" 2>/dev/null || true; done
  ip link del "$BR" 2>/dev/null || true
}

cleanup() {
  local i p
  for i in $(seq 1 "$N"); do
    p=$(node_pid "$i")
    [ -z "$p" ] || kill -CONT "$p" 2>/dev/null || true
  done
  if [ -f "$DIR/nodes" ]; then "$ROOT/testnet/down.sh" >/dev/null 2>&1 || true; fi
  [ -z "${CHAOS_PID:-}" ] || kill "$CHAOS_PID" 2>/dev/null || true
  [ "$NETNS" = 0 ] || netns_down
  rm -rf "$DIR"
}
trap cleanup EXIT

if [ "$NETNS" = 1 ]; then
  node_host() { echo "$NET.$1"; }
  # lib.sh's helpers (as_node, wait_healthy, layout_of) call node_url.
  node_url() { echo "http://$(node_host "$1"):$(api_port "$1")"; }
  netns_down
  ip link add "$BR" type bridge
  ip addr add "$NET.254/24" dev "$BR"
  ip link set "$BR" up
  for i in $(seq 1 "$N"); do
    ns=slurp-chaos-$i
    ip netns add "$ns"
    ip link add "sc$i" type veth peer name eth0 netns "$ns"
    ip link set "sc$i" master "$BR" up
    ip -n "$ns" addr add "$NET.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
  done
  build
  rm -rf "$DIR"
  mkdir -p "$DIR"
  echo "$N" >"$DIR/nodes"
  PEER1=$("$BIN" node peer-id --data "$DIR/node1")
  BOOT="/ip4/$(node_host 1)/tcp/$(p2p_port 1)/p2p/$PEER1"
  # As up.sh's write_cmd, inside the node's namespace (`ip netns exec`
  # execs the node, so the pid launch records is the node's).
  write_cmd() {
    local i=$1
    shift
    printf 'exec ip netns exec %q %q' "slurp-chaos-$i" "$BIN" >"$DIR/node$i.cmd"
    printf ' %q' node run --data "$DIR/node$i" --listen "$(node_host "$i"):$(api_port "$i")" \
      --p2p-listen "/ip4/$(node_host "$i")/tcp/$(p2p_port "$i")" --name "node$i" \
      --zone "zone$i" "$@" >>"$DIR/node$i.cmd"
    echo >>"$DIR/node$i.cmd"
  }
  # disown: the nodes are this shell's children; the loop's SIGKILLs are
  # its business, not news for the terminal.
  write_cmd 1
  launch 1 && disown
  wait_healthy 1
  as_node 1 cluster init >/dev/null
  for i in $(seq 2 "$N"); do
    write_cmd "$i" --bootstrap "$BOOT" --auto-join --join-token "$(as_node 1 cluster invite)"
    launch "$i" && disown
  done
  for i in $(seq 2 "$N"); do wait_healthy "$i"; done
  one_layout() {
    local i lo v m want=""
    for i in $(seq 1 "$N"); do
      lo=$(layout_of "$i") || return 1
      read -r v m <<<"$lo"
      [ "$m" = "$N" ] || return 1
      [ -z "$want" ] || [ "$v" = "$want" ] || return 1
      want=$v
    done
  }
  wait_for 120 "the $N nodes to list $N members under one layout version" one_layout
  start_node() { launch "$1" && disown && wait_healthy "$1" 120; }
else
  "$ROOT/testnet/up.sh" "$N" >/dev/null
  start_node() { "$ROOT/testnet/start.sh" "$1" >/dev/null; }
fi
kill_node() {
  kill -9 "$(node_pid "$1")" 2>/dev/null || true
  node_gone() { ! node_alive "$1"; }
  wait_for 30 "node $1 to exit after SIGKILL" node_gone "$1"
}

# One token every node accepts (tokens replicate to every member).
TOKEN=$(as_node 1 token create admin --label chaos --json)
[[ $TOKEN =~ \"token\":\ *\"([^\"]+)\" ]] || { echo "no token in: $TOKEN" >&2; exit 1; }
TOKEN=${BASH_REMATCH[1]}
accepted_everywhere() {
  local i
  for i in $(seq 1 "$N"); do
    "$BIN" whoami --node "$(node_url "$i")" --token "$TOKEN" --timeout 5s >/dev/null 2>&1 || return 1
  done
}
wait_for 60 "every node to accept the chaos token" accepted_everywhere

urls=$(for i in $(seq 1 "$N"); do printf '%s,' "$(node_url "$i")"; done)
over="$DIR/faults-over"
HISTORY=${TMPDIR:-/tmp}/slurp-chaos-history-$SEED.json
echo "== chaos: seed $SEED, ${SECS} s of faults (namespaces: $([ "$NETNS" = 1 ] && echo yes || echo no))"
"$BIN" chaos --nodes "${urls%,}" --token "$TOKEN" --seed "$SEED" --duration "${SECS}s" \
  --ops 1000000 --wait-for "$over" --history "$HISTORY" >"$DIR/chaos.out" 2>&1 &
CHAOS_PID=$!

kills=0 stops=0 cuts=0
pause() { sleep "$((1 + RANDOM % 3))"; }
end=$((SECONDS + SECS))
while [ "$SECONDS" -lt "$end" ] && kill -0 "$CHAOS_PID" 2>/dev/null; do
  pause
  i=$((1 + RANDOM % N))
  kinds=2
  [ "$NETNS" = 0 ] || kinds=3
  case $((RANDOM % kinds)) in
    0)
      kill_node "$i"
      kills=$((kills + 1))
      pause
      start_node "$i"
      ;;
    1)
      kill -STOP "$(node_pid "$i")"
      stops=$((stops + 1))
      pause
      kill -CONT "$(node_pid "$i")"
      ;;
    2)
      ip link set "sc$i" down
      cuts=$((cuts + 1))
      pause
      ip link set "sc$i" up
      ;;
  esac
done
# Every node up and answering before the faults are declared over.
for i in $(seq 1 "$N"); do
  if node_alive "$i"; then kill -CONT "$(node_pid "$i")" 2>/dev/null || true; else start_node "$i"; fi
  [ "$NETNS" = 0 ] || ip link set "sc$i" up
  wait_healthy "$i" 120
done
touch "$over"
echo "faults: $kills SIGKILL and restart, $stops SIGSTOP and SIGCONT, $cuts partitions"
status=0
wait "$CHAOS_PID" || status=$?
CHAOS_PID=
cat "$DIR/chaos.out"
if [ "$status" -ne 0 ]; then
  echo "chaos FAILED (exit $status); history and final state: $HISTORY" >&2
  for i in $(seq 1 "$N"); do
    echo "--- node $i log (last lines)" >&2
    tail -n 15 "$DIR/node$i.log" >&2 || true
  done
  exit 1
fi
rm -f "$HISTORY"
