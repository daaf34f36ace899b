#!/usr/bin/env bash
# One slurp node on 127.0.0.1 with demo contexts, ready to query.
#
#   testnet/demo.sh          build, start (data in ./.demo), load the demo
#                            contexts once, run a few queries
#   testnet/demo.sh stop     stop the demo node
#
# Then: `source .demo/env && slurp search authentication`.
# SLURP_DEMO_DIR and SLURP_DEMO_PORT change the data directory and port.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${SLURP_DEMO_DIR:-.demo}
PORT=${SLURP_DEMO_PORT:-7070}
PIDFILE="$DATA/node.pid"

stop() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill "$(cat "$PIDFILE")"
    for _ in $(seq 1 100); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.1; done
    echo "stopped the demo node"
  fi
  rm -f "$PIDFILE"
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi

cargo build --release -p slurp-node --bin slurp
BIN="$PWD/target/release/slurp"
mkdir -p "$DATA"
stop
nohup "$BIN" node run --data "$DATA/node" --listen "127.0.0.1:$PORT" >"$DATA/node.log" 2>&1 &
echo $! >"$PIDFILE"

export SLURP_NODE="http://127.0.0.1:$PORT"
for _ in $(seq 1 200); do
  if [ -f "$DATA/node/admin.token" ] && "$BIN" health --token x >/dev/null 2>&1; then break; fi
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then cat "$DATA/node.log"; exit 1; fi
  sleep 0.1
done
export SLURP_TOKEN
SLURP_TOKEN=$(cat "$DATA/node/admin.token")
cat >"$DATA/env" <<ENV
export SLURP_NODE=$SLURP_NODE
export SLURP_TOKEN=$SLURP_TOKEN
export PATH="$(dirname "$BIN"):\$PATH"
ENV

if [ "$("$BIN" status --json | sed -n 's/.*"keys": \([0-9]*\).*/\1/p' | head -1)" = "0" ]; then
  "$BIN" batch import testnet/demo-contexts.jsonl
  sleep 1.2 # the index makes new contexts searchable within about a second
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
