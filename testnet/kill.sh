#!/usr/bin/env bash
# Kills node I of the local testnet with SIGKILL (no clean shutdown).
#   testnet/kill.sh I
source "$(dirname "$0")/lib.sh"
i=${1:?usage: testnet/kill.sh I}
if node_alive "$i"; then
  kill -9 "$(node_pid "$i")"
  for _ in $(seq 1 50); do node_alive "$i" || break; sleep 0.1; done
  echo "killed node $i"
else
  echo "node $i is not running"
fi
