#!/usr/bin/env bash
# Stops every node of the local testnet (SIGTERM, then SIGKILL after 10 s).
# The data stays in ./.testnet until the next up.sh.
source "$(dirname "$0")/lib.sh"
N=$(node_count)
for i in $(seq 1 "$N"); do
  if node_alive "$i"; then kill "$(node_pid "$i")" 2>/dev/null || true; fi
done
for i in $(seq 1 "$N"); do
  for _ in $(seq 1 100); do node_alive "$i" || break; sleep 0.1; done
  if node_alive "$i"; then kill -9 "$(node_pid "$i")" 2>/dev/null || true; fi
  rm -f "$DIR/node$i.pid"
done
echo "testnet stopped ($N nodes)"
