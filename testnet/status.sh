#!/usr/bin/env bash
# The cluster as each running node of the local testnet sees it: its layout
# version and the members' health from node 1 (or the first node up).
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
N=$(node_count)
[ "$N" -gt 0 ] || { echo "no testnet in $DIR (run testnet/up.sh)" >&2; exit 1; }
shown=0
for i in $(seq 1 "$N"); do
  if node_alive "$i"; then
    v="?" m="?"
    if lo=$(layout_of "$i"); then read -r v m <<<"$lo"; fi
    echo "node $i: pid $(node_pid "$i"), $(node_url "$i"), layout v$v with $m members"
  else
    echo "node $i: down"
  fi
done
for i in $(seq 1 "$N"); do
  if node_alive "$i"; then echo; as_node "$i" cluster status; shown=1; break; fi
done
[ $shown = 1 ] || echo "no node is running"
