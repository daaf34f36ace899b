# Shared by the testnet scripts: where the testnet lives and how to reach
# its nodes. Source it; it sets DIR, BIN, BASE_PORT and helpers.
#
#   SLURP_TESTNET_DIR      data of every node (default ./.testnet)
#   SLURP_TESTNET_PORT     node I serves its API on PORT+I and its swarm on
#                          PORT+100+I (default 7100)
#   SLURP_TESTNET_PROFILE  cargo profile of the binary: release (default) or
#                          debug (CI reuses the test build)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR=${SLURP_TESTNET_DIR:-$ROOT/.testnet}
case "$DIR" in /*) ;; *) DIR="$ROOT/$DIR" ;; esac
BASE_PORT=${SLURP_TESTNET_PORT:-7100}
PROFILE=${SLURP_TESTNET_PROFILE:-release}
BIN="$ROOT/target/$PROFILE/slurp"

api_port() { echo $((BASE_PORT + $1)); }
p2p_port() { echo $((BASE_PORT + 100 + $1)); }
node_url() { echo "http://127.0.0.1:$(api_port "$1")"; }
node_token() { cat "$DIR/node$1/admin.token"; }
node_pid() { cat "$DIR/node$1.pid" 2>/dev/null || true; }
node_alive() { local p; p=$(node_pid "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
node_count() { cat "$DIR/nodes" 2>/dev/null || echo 0; }

# slurp as node I's admin.
as_node() { local i=$1; shift; SLURP_NODE=$(node_url "$i") SLURP_TOKEN=$(node_token "$i") "$BIN" "$@"; }

build() {
  if [ "$PROFILE" = release ]; then
    cargo build --release -p slurp-node --bin slurp
  else
    cargo build -p slurp-node --bin slurp
  fi
}

# Starts node I in the background with the command saved by up.sh.
launch() {
  local i=$1
  nohup bash "$DIR/node$i.cmd" >>"$DIR/node$i.log" 2>&1 &
  echo $! >"$DIR/node$i.pid"
}

# Waits (at most $2 seconds, default 30) until node I answers /health.
wait_healthy() {
  local i=$1 limit=${2:-30} n=0
  while [ $n -lt $((limit * 10)) ]; do
    if [ -f "$DIR/node$i/admin.token" ] && "$BIN" health --node "$(node_url "$i")" --token x >/dev/null 2>&1; then
      return 0
    fi
    if ! node_alive "$i"; then
      echo "node $i exited; last log lines:" >&2
      tail -20 "$DIR/node$i.log" >&2
      return 1
    fi
    sleep 0.1
    n=$((n + 1))
  done
  echo "node $i did not become healthy within ${limit}s" >&2
  return 1
}

# "VERSION MEMBERS" of the layout node I holds.
layout_of() {
  local j
  j=$(as_node "$1" cluster status --json 2>/dev/null) || return 1
  local v m
  v=$(printf '%s' "$j" | grep -o '"layout_version": *[0-9]*' | head -1 | grep -o '[0-9]*$')
  m=$(printf '%s' "$j" | grep -o '"is_self"' | wc -l | tr -d ' ')
  echo "${v:-0} ${m:-0}"
}
