#!/usr/bin/env bash
# Starts node I of the local testnet again (after kill.sh or down.sh) with
# the command up.sh gave it, and waits (at most 60 s) until it answers.
#   testnet/start.sh I
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
i=${1:?usage: testnet/start.sh I}
[ -f "$DIR/node$i.cmd" ] || { echo "no node $i in $DIR (run testnet/up.sh)" >&2; exit 1; }
if node_alive "$i"; then echo "node $i is already running"; exit 0; fi
launch "$i"
wait_healthy "$i"
echo "started node $i ($(node_url "$i"))"
