#!/usr/bin/env bash
# Starts a local slurp cluster of N nodes on 127.0.0.1 and loads the demo
# contexts.
#
#   testnet/up.sh [N]          (default 3)
#
# Node 1 creates the cluster (`slurp cluster init`: the cluster key, a
# layout with node 1) and invites every other node: each starts with its
# own one-time join token and --auto-join, so it is certified and added to
# the layout at once (replication factor 3, W 2, R 2 by default; at most
# N). Node 1 is the bootstrap peer of the others. Data, logs and pids are
# under ./.testnet (SLURP_TESTNET_DIR); node I serves its API on 7100+I and
# its swarm on 7200+I (SLURP_TESTNET_PORT moves both). Nothing is copied
# between data directories: node 1 makes the role keys and the cluster key,
# and every other node receives the keys of the roles its invite grants
# through the swarm, sealed to it.
#
# Afterwards: `source .testnet/env && slurp search token`, and
# testnet/status.sh, kill.sh I, start.sh I, smoke.sh, down.sh.
# Extra flags for every node: SLURP_TESTNET_ARGS (e.g. "--log-json").
#
# Builds target/debug/slurp first (`cargo build -p slurp-node --bin
# slurp`: about a minute after testnet/check.sh, seconds when current,
# the whole workspace from cold); SLURP_TESTNET_PROFILE=release uses an
# optimised build instead (for benchmarks; a separate, longer cold build).
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
N=${1:-3}
[ "$N" -ge 1 ] || { echo "N must be at least 1" >&2; exit 2; }
if [ -f "$DIR/nodes" ]; then
  for i in $(seq 1 "$(node_count)"); do
    if node_alive "$i"; then echo "a testnet is running in $DIR: testnet/down.sh first" >&2; exit 1; fi
  done
fi
build
rm -rf "$DIR"
mkdir -p "$DIR"
echo "$N" >"$DIR/nodes"

PEER1=$("$BIN" node peer-id --data "$DIR/node1")
BOOT="/ip4/127.0.0.1/tcp/$(p2p_port 1)/p2p/$PEER1"
# write_cmd I [ARGS...]: how node I is started (and restarted by start.sh).
write_cmd() {
  local i=$1; shift
  local args=(node run --data "$DIR/node$i" --listen "127.0.0.1:$(api_port "$i")"
        --p2p-listen "/ip4/127.0.0.1/tcp/$(p2p_port "$i")" --name "node$i"
        --zone "zone$(( (i - 1) % 3 + 1 ))" "$@")
  # shellcheck disable=SC2206
  args+=(${SLURP_TESTNET_ARGS:-})
  printf 'exec %q' "$BIN" >"$DIR/node$i.cmd"
  printf ' %q' "${args[@]}" >>"$DIR/node$i.cmd"
  echo >>"$DIR/node$i.cmd"
}

write_cmd 1
launch 1
wait_healthy 1
as_node 1 cluster init
for i in $(seq 2 "$N"); do
  # A restart reuses the command; the token, spent by then, is ignored
  # by a node that already belongs to the cluster.
  write_cmd "$i" --bootstrap "$BOOT" --auto-join --join-token "$(as_node 1 cluster invite)"
  launch "$i"
done
for i in $(seq 2 "$N"); do wait_healthy "$i"; done

# The layout grows as each node redeems its invite.
# one_layout: every node lists N members under the same layout version.
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
echo "waiting for the $N nodes to form one layout..."
if ! wait_for 120 "the $N nodes to list $N members under one layout version" one_layout; then
  for i in $(seq 1 "$N"); do
    echo "node $i: layout version and members: $(layout_of "$i" || echo "(no answer)")" >&2
  done
  as_node 1 cluster status >&2 || true
  exit 1
fi

# Each join was a layout change: wait until every node has ended its
# transition (the new members pulled what they gained, the old copies went).
settled() {
  local i j
  for i in $(seq 1 "$N"); do
    j=$(as_node "$i" cluster status --json --timeout 10s 2>/dev/null) || return 1
    [[ $j != *'"transition"'* ]] || return 1
  done
}
if ! wait_for 120 "every node to end its layout transition" settled; then
  as_node 1 cluster status >&2 || true
  exit 1
fi

cat >"$DIR/env" <<ENV
export SLURP_NODE=$(node_url 1)
export SLURP_TOKEN=$(node_token 1)
export PATH="$(dirname "$BIN"):\$PATH"
ENV
as_node 1 batch import "$ROOT/testnet/demo-contexts.jsonl" >/dev/null
as_node 1 cluster status
echo
echo "testnet of $N nodes is up (data in $DIR). Try:"
echo "  source $DIR/env && slurp search token && testnet/status.sh"
