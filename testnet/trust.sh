#!/usr/bin/env bash
# The trust scenario against a running testnet (testnet/up.sh 5; the
# cluster key is split 3 of 5 once five members are up):
#
#  1. the cluster key is held in shares, no node holds it whole;
#  2. the role table: one record per role, read through node 2 with a
#     token of each role made on node 1 (admin reads all, architect reads
#     architect, developer and observer records, developer and observer
#     only their own);
#  3. tokens outside their network or validity window are refused by a
#     member that did not make them, naming the reason;
#  4. a foreign node (a cluster of its own) that bootstraps to node 1 is
#     not added, its tokens mean nothing to members, and it finds none of
#     the cluster's records;
#  5. a grant cut: node 5 is certified for observer only, retires its
#     other keys, and after a rotation of developer every node but node 5
#     holds the new epoch; then node 5 is granted every role again;
#  6. a rotation of architect under a bounded load of writes and reads
#     through nodes 1-4: no request fails, every node's rewrap leaves
#     nothing on the old epoch, and then the old epoch is retired (no node
#     holds its key);
#  7. reconstruction: with nodes 4 and 5 down (3 share holders up) an
#     admin operation that signs with the cluster key (a grant) works;
#     with node 3 down too (2 holders) it fails with a clear error; the
#     nodes come back.
#
# Same rules as smoke.sh: captured output, bounded polls
# (SLURP_TRUST_WAIT seconds, default 60), exits at the first step that
# does not hold, saying what it expected and what it saw. Needs jq.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
SCENARIO=TRUST
N=$(node_count)
[ "$N" -ge 5 ] || { echo "trust.sh needs a testnet of at least 5 nodes (testnet/up.sh 5)" >&2; exit 2; }
command -v jq >/dev/null 2>&1 || { echo "trust.sh needs jq (apt-get install jq)" >&2; exit 2; }
for i in $(seq 1 "$N"); do node_alive "$i" || { echo "node $i is not running" >&2; exit 1; }; done
WAIT=${SLURP_TRUST_WAIT:-60}
TAG="trust$$x$RANDOM"
ROLES=(admin architect developer observer)
addr() { echo "ucxl://trust:$1@trust:run/*^/src/$TAG-$1.rs"; }
peer_of() { as_node "$1" cluster status --json --timeout 10s | jq -r .peer_id; }
# with TOKEN I ARGS...: slurp through node I with TOKEN.
with() { local t=$1 i=$2; shift 2; SLURP_NODE=$(node_url "$i") SLURP_TOKEN=$t "$BIN" "$@"; }

step "the cluster key is held in shares"
split() {
  local i
  for i in $(seq 1 "$N"); do
    run as_node "$i" cluster status --json --timeout 10s
    [ "$RC" = 0 ] || return 1
    [ "$(jq -r '.key_custody.whole' <<<"$OUT")" = false ] || return 1
    [ "$(jq -r '.key_custody.share.threshold // empty' <<<"$OUT")" = 3 ] || return 1
  done
}
wait_for "$WAIT" "every node to hold a 3-of-5 share and none the whole key" split ||
  fail "the cluster key is not split: $(seen)"
echo "every node holds one share (3 of 5); none holds the key whole"

step "the role table, read through node 2 with tokens made on node 1"
for r in "${ROLES[@]}"; do
  must "put of the $r record" as_node 1 put "$(addr "$r")" --summary "$TAG record for $r" --roles "$r"
done
declare -A TOKEN
for r in "${ROLES[@]}"; do
  must "token for $r" as_node 1 token create "$r" --label "trust $r" --json
  TOKEN[$r]=$(jq -r .token <<<"$OUT")
done
declare -A MAY=(
  [admin]="admin architect developer observer"
  [architect]="architect developer observer"
  [developer]="developer"
  [observer]="observer"
)
printf '%-10s' "reader"; printf ' %-10s' "${ROLES[@]}"; echo
for reader in "${ROLES[@]}"; do
  printf '%-10s' "$reader"
  for record in "${ROLES[@]}"; do
    run with "${TOKEN[$reader]}" 2 get "$(addr "$record")" --json
    if [[ " ${MAY[$reader]} " == *" $record "* ]]; then
      [ "$RC" = 0 ] || fail "$reader should read the $record record through node 2: $(seen)"
      expect_output "$reader reads the $record record" "$TAG record for $record"
      printf ' %-10s' reads
    else
      [ "$RC" = 4 ] || fail "$reader must not read the $record record (expected exit 4): $(seen)"
      printf ' %-10s' refused
    fi
  done
  echo
done

step "tokens outside their network or window are refused by another member"
must "token limited to 10.0.0.0/8" as_node 1 token create developer --allow-from 10.0.0.0/8 --json
far=$(jq -r .token <<<"$OUT")
must "token valid from tomorrow" as_node 1 token create developer \
  --not-before "$(($(date +%s) * 1000 + 86400000))" --valid-for 1h --json
later=$(jq -r .token <<<"$OUT")
run with "$far" 3 get "$(addr developer)"
[ "$RC" = 4 ] || fail "a token limited to 10.0.0.0/8 must be refused from 127.0.0.1: $(seen)"
[[ $ERR == *network* || $ERR == *allow* ]] || fail "the refusal should name the network: $(seen)"
echo "from 127.0.0.1 with a 10.0.0.0/8 token: $ERR"
run with "$later" 3 get "$(addr developer)"
[ "$RC" = 4 ] || fail "a token valid from tomorrow must be refused now: $(seen)"
[[ $ERR == *valid* || $ERR == *window* ]] || fail "the refusal should name the window: $(seen)"
echo "with a token valid from tomorrow: $ERR"

step "a foreign node bootstrapping to node 1 gets nothing"
FDIR="$DIR/foreign"
rm -rf "$FDIR"
FPORT=$(api_port 99)
PEER1=$(peer_of 1)
nohup "$BIN" node run --data "$FDIR" --listen "127.0.0.1:$FPORT" \
  --p2p-listen "/ip4/127.0.0.1/tcp/$(p2p_port 99)" --name foreign \
  --bootstrap "/ip4/127.0.0.1/tcp/$(p2p_port 1)/p2p/$PEER1" >"$DIR/foreign.log" 2>&1 &
FPID=$!
trap 'kill $FPID 2>/dev/null || true' EXIT
foreign() { SLURP_NODE="http://127.0.0.1:$FPORT" SLURP_TOKEN=$(cat "$FDIR/admin.token" 2>/dev/null) "$BIN" "$@"; }
foreign_up() { foreign health --timeout 5s >/dev/null 2>&1; }
wait_for "$WAIT" "the foreign node to answer" foreign_up || fail "the foreign node did not start: $(tail -n 20 "$DIR/foreign.log")"
must "cluster init on the foreign node" foreign cluster init
FPEER=$(foreign cluster status --json | jq -r .peer_id)
# It has dialed node 1 once node 1 knows it as a peer (not a member).
knows_foreign() {
  run as_node 1 cluster status --json --timeout 10s
  [ "$RC" = 0 ] && [ "$(jq -r --arg p "$FPEER" '[.others[] | select(.peer_id == $p)] | length' <<<"$OUT")" != 0 ]
}
wait_for "$WAIT" "node 1 to see the foreign peer connect" knows_foreign ||
  fail "node 1 never saw the foreign peer: $(seen)"
must "cluster status on node 1" as_node 1 cluster status --json
[ "$(jq -r --arg p "$FPEER" '[.members[] | select(.id == $p)] | length' <<<"$OUT")" = 0 ] ||
  fail "the foreign node became a member: $(seen)"
run with "$(cat "$FDIR/admin.token")" 1 whoami
[ "$RC" = 4 ] || fail "the foreign node's admin token must mean nothing on node 1: $(seen)"
run foreign search "$TAG" --json
[[ $OUT != *"$TAG record"* ]] || fail "the foreign node found the cluster's records: $(seen)"
run foreign get "$(addr observer)"
[ "$RC" != 0 ] || fail "the foreign node read a record of the cluster: $(seen)"
echo "not a member; its admin token is refused by node 1; it finds and reads nothing"
kill "$FPID" 2>/dev/null || true
wait "$FPID" 2>/dev/null || true
trap - EXIT

step "a grant cut: node 5 keeps only observer, and misses the next developer epoch"
P5=$(peer_of 5)
must "grant node 5 observer only" as_node 1 cluster grant "$P5" --roles observer --json
[ "$(jq -r .delivered <<<"$OUT")" = true ] || fail "node 5 did not take its new certificate: $(seen)"
held_only_observer() {
  run as_node 5 keys list --json --timeout 10s
  [ "$RC" = 0 ] && [ "$(jq -r '[.keys[] | select(.held) | .role] | unique | join(",")' <<<"$OUT")" = observer ]
}
wait_for "$WAIT" "node 5 to hold observer keys only" held_only_observer ||
  fail "node 5 still holds keys of roles it lost: $(seen)"
must "rotate developer" as_node 1 keys rotate --role developer --json
EPOCH=$(jq -r .epoch <<<"$OUT")
holds_epoch() { # holds_epoch I ROLE EPOCH
  run as_node "$1" keys status --json --timeout 10s
  [ "$RC" = 0 ] && jq -e --arg r "$2" --argjson e "$3" \
    '.roles[] | select(.role == $r) | .held_epochs | index($e) != null' <<<"$OUT" >/dev/null
}
for i in $(seq 1 4); do
  wait_for "$WAIT" "node $i to hold developer epoch $EPOCH" holds_epoch "$i" developer "$EPOCH" ||
    fail "node $i did not receive developer epoch $EPOCH: $(seen)"
done
knows_epoch() {
  run as_node 5 keys status --json --timeout 10s
  [ "$RC" = 0 ] && [ "$(jq -r '.roles[] | select(.role == "developer") | .current_epoch' <<<"$OUT")" = "$EPOCH" ]
}
wait_for "$WAIT" "node 5 to know developer epoch $EPOCH" knows_epoch || fail "node 5 never saw the rotation: $(seen)"
holds_epoch 5 developer "$EPOCH" && fail "node 5 was granted developer epoch $EPOCH after its grant was cut: $(seen)"
echo "nodes 1-4 hold developer epoch $EPOCH; node 5 knows it exists and holds no developer key"
must "grant node 5 every role again" as_node 1 cluster grant "$P5" --roles "$(IFS=,; echo "${ROLES[*]}")" --json
for r in "${ROLES[@]}"; do
  run as_node 1 keys status --json
  e=$(jq -r --arg r "$r" '.roles[] | select(.role == $r) | .current_epoch' <<<"$OUT")
  wait_for "$WAIT" "node 5 to hold $r epoch $e again" holds_epoch 5 "$r" "$e" ||
    fail "node 5 did not get $r back: $(seen)"
done

step "rotate architect under load through nodes 1-4"
LOAD="$DIR/trust-load"
load() { # 40 rounds of a write and a read through node 1 + (W mod 4)
  local w=$1 k fails=0 a
  for k in $(seq 1 40); do
    a="ucxl://trust:architect@trust:load/*^/src/$TAG-w$w-$k.rs"
    as_node $((1 + (w + k) % 4)) put "$a" --summary "$TAG load $w $k" --roles architect >/dev/null 2>>"$LOAD.$w.err" ||
      fails=$((fails + 1))
    as_node $((1 + (w + k + 1) % 4)) get "$(addr architect)" >/dev/null 2>>"$LOAD.$w.err" ||
      fails=$((fails + 1))
  done
  echo "$fails" >"$LOAD.$w"
}
rm -f "$LOAD".*
for w in 1 2 3; do load "$w" & done
must "rotate architect" as_node 1 keys rotate --role architect --json
AEPOCH=$(jq -r .epoch <<<"$OUT")
wait
for w in 1 2 3; do
  [ "$(cat "$LOAD.$w")" = 0 ] || fail "requests failed during the rotation (writer $w): $(cat "$LOAD.$w.err")"
done
echo "240 requests during the rotation to architect epoch $AEPOCH: none failed"
rewrapped() {
  local i
  for i in $(seq 1 "$N"); do
    holds_epoch "$i" architect "$AEPOCH" || return 1
    run as_node "$i" workers --run key-rewrap --json --timeout 10s
    [ "$RC" = 0 ] || return 1
    run as_node "$i" keys status --json --timeout 10s
    [ "$RC" = 0 ] && [ "$(jq -r .rewrap.pending <<<"$OUT")" = 0 ] || return 1
  done
}
wait_for "$WAIT" "every node to have rewrapped its records onto the current epochs" rewrapped ||
  fail "records are left on old epochs: $(seen)"
echo "every node: 0 stored versions left on an old epoch"
# Every member reported a clean pass: the older architect epochs are
# retired, and no node keeps their private keys.
only_current() {
  local i held
  for i in $(seq 1 "$N"); do
    run as_node "$i" workers --run key-rewrap --json --timeout 10s
    run as_node "$i" keys status --json --timeout 10s
    [ "$RC" = 0 ] || return 1
    held=$(jq -c '.roles[] | select(.role == "architect") | .held_epochs' <<<"$OUT")
    [ "$held" = "[$AEPOCH]" ] || return 1
  done
}
wait_for "$WAIT" "every node to hold architect epoch $AEPOCH only (older epochs retired)" only_current ||
  fail "old architect epochs were not retired: $(seen)"
echo "architect epochs before $AEPOCH are retired: no node holds their keys"

step "reconstruction with 3 share holders, refusal with 2"
"$ROOT/testnet/kill.sh" 4
"$ROOT/testnet/kill.sh" 5
# Re-certifying node 2 for the roles it has signs with the cluster key.
P2=$(peer_of 2)
ALL=$(IFS=,; echo "${ROLES[*]}")
must "a grant (signed with the cluster key) with 3 holders up" as_node 1 cluster grant "$P2" --roles "$ALL"
echo "3 of 5 holders up: the key is rebuilt for the grant"
"$ROOT/testnet/kill.sh" 3
down3() {
  run as_node 1 cluster status --json --timeout 10s
  [ "$RC" = 0 ] && [ "$(jq -r '[.members[] | select(.name == "node3") | .up] | first' <<<"$OUT")" = false ]
}
wait_for "$WAIT" "node 1 to see node 3 down" down3 || fail "node 3 still looks up: $(seen)"
run as_node 1 cluster grant "$P2" --roles "$ALL"
[ "$RC" = 6 ] || fail "with 2 of 5 holders up a grant must fail as unavailable (exit 6): $(seen)"
[[ $ERR == *share* ]] || fail "the error should say that shares are missing: $(seen)"
echo "2 of 5 holders up: $ERR"
for i in 3 4 5; do "$ROOT/testnet/start.sh" "$i"; done
for i in 3 4 5; do wait_healthy "$i" "$WAIT" || fail "node $i did not come back"; done
echo
echo "TRUST OK"
