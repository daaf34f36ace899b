#!/usr/bin/env bash
# Kills node I of the local testnet with SIGKILL (no clean shutdown) and
# waits (at most 30 s) until its process is gone.
#   testnet/kill.sh I
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
i=${1:?usage: testnet/kill.sh I}
if node_alive "$i"; then
  kill -9 "$(node_pid "$i")" 2>/dev/null || true
  node_gone() { ! node_alive "$i"; }
  wait_for 30 "node $i (pid $(node_pid "$i")) to exit after SIGKILL" node_gone || exit 1
  echo "killed node $i"
else
  echo "node $i is not running"
fi
