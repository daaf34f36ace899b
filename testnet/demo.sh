#!/usr/bin/env bash
# One slurp node on 127.0.0.1 with demo contexts, ready to query.
#
#   testnet/demo.sh          build, start (data in ./.demo), load the demo
#                            contexts once, run a few queries
#   testnet/demo.sh stop     stop the demo node
#
# Then: `source .demo/env && slurp search authentication`.
# SLURP_DEMO_DIR and SLURP_DEMO_PORT change the data directory and port.
# Like testnet/up.sh it builds and runs target/debug/slurp (the binary the
# tests use too); SLURP_TESTNET_PROFILE=release runs an optimised build.
set -euo pipefail
cd "$(dirname "$0")/.."
# PROFILE, BIN, build, pid_alive and wait_for.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source testnet/lib.sh
DATA=${SLURP_DEMO_DIR:-.demo}
PORT=${SLURP_DEMO_PORT:-7070}
PIDFILE="$DATA/node.pid"

stop() {
  if [ -f "$PIDFILE" ] && pid_alive "$(cat "$PIDFILE")"; then
    kill "$(cat "$PIDFILE")"
    demo_gone() { ! pid_alive "$(cat "$PIDFILE")"; }
    if ! wait_for 10 "the demo node to stop after SIGTERM" demo_gone; then
      kill -9 "$(cat "$PIDFILE")" 2>/dev/null || true
      wait_for 10 "the demo node to exit after SIGKILL" demo_gone || return 1
    fi
    echo "stopped the demo node"
  fi
  rm -f "$PIDFILE"
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi

build
mkdir -p "$DATA"
stop
nohup "$BIN" node run --data "$DATA/node" --listen "127.0.0.1:$PORT" >"$DATA/node.log" 2>&1 &
echo $! >"$PIDFILE"

export SLURP_NODE="http://127.0.0.1:$PORT"
demo_healthy() {
  if [ -f "$DATA/node/admin.token" ] && "$BIN" health --token x --timeout 5s >/dev/null 2>&1; then return 0; fi
  if ! pid_alive "$(cat "$PIDFILE")"; then
    echo "the demo node exited:" >&2
    cat "$DATA/node.log" >&2
    exit 1
  fi
  return 1
}
wait_for 60 "the demo node to answer /health on port $PORT" demo_healthy || { tail -n 20 "$DATA/node.log" >&2; exit 1; }
export SLURP_TOKEN
SLURP_TOKEN=$(cat "$DATA/node/admin.token")
cat >"$DATA/env" <<ENV
export SLURP_NODE=$SLURP_NODE
export SLURP_TOKEN=$SLURP_TOKEN
export PATH="$(dirname "$BIN"):\$PATH"
ENV

status=$("$BIN" status --json)
if [[ $status =~ \"keys\":\ *([0-9]+) ]] && [ "${BASH_REMATCH[1]}" = 0 ]; then
  "$BIN" batch import testnet/demo-contexts.jsonl
  # The index makes new contexts searchable within about a second.
  searchable() {
    local out
    out=$("$BIN" search token --json 2>/dev/null) || return 1
    [[ $out =~ \"total_hits\":\ *([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -gt 0 ]
  }
  wait_for 30 "the demo contexts to become searchable (slurp search token)" searchable || exit 1
fi

run() { echo; echo "\$ slurp $*"; "$BIN" "$@"; }
run search token
run resolve 'ucxl://claude:developer@shop:checkout/*^/src/auth/middleware.rs'
run links 'ucxl://claude:architect@shop:checkout/*^/docs/adr/002-token-rotation.md' --hops 2
DEV=$("$BIN" token create developer --label demo)
echo; echo "\$ SLURP_TOKEN=<developer token> slurp get 'ucxl://claude:architect@shop:checkout/*^/docs/adr/001-outbox.md'"
SLURP_TOKEN=$DEV "$BIN" get 'ucxl://claude:architect@shop:checkout/*^/docs/adr/001-outbox.md' || echo "(exit $?: developers may not read architect records)"
echo
echo "The node runs in the background (log: $DATA/node.log). Try:"
echo "  source $DATA/env && slurp search 'payments idempotency' && slurp status"
echo "Stop it with: testnet/demo.sh stop"
