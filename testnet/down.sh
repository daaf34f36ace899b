#!/usr/bin/env bash
# Stops every node of the local testnet (SIGTERM; SIGKILL for a node still
# running 10 s later) and waits until their processes are gone. The data
# stays in ./.testnet until the next up.sh.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
N=$(node_count)
for i in $(seq 1 "$N"); do
  if node_alive "$i"; then kill "$(node_pid "$i")" 2>/dev/null || true; fi
done
left=0
for i in $(seq 1 "$N"); do
  node_gone() { ! node_alive "$i"; }
  if ! wait_for 10 "node $i to stop after SIGTERM" node_gone 2>/dev/null; then
    echo "node $i did not stop within 10 s of SIGTERM: SIGKILL" >&2
    kill -9 "$(node_pid "$i")" 2>/dev/null || true
    wait_for 30 "node $i to exit after SIGKILL" node_gone || { left=1; continue; }
  fi
  rm -f "$DIR/node$i.pid"
done
[ $left = 0 ] || { echo "some nodes are still running (their pid files are kept)" >&2; exit 1; }
echo "testnet stopped ($N nodes)"
