# shellcheck shell=bash
# Shared by the testnet scripts: where the testnet lives and how to reach
# its nodes. Source it; it sets DIR, BIN, BASE_PORT and helpers.
#
#   SLURP_TESTNET_DIR      data of every node (default ./.testnet)
#   SLURP_TESTNET_PORT     node I serves its API on PORT+I and its swarm on
#                          PORT+100+I (default 7100)
#   SLURP_TESTNET_PROFILE  cargo profile of the binary: debug (default; the
#                          binary `cargo build` and the test suite build) or
#                          release (benchmarks)
#   SLURP_TESTNET_BUILD    0: do not run cargo, use the binary as it is
#                          (testnet/check.sh, right after building the tests)
#
# Rules the scripts keep, so they do not depend on timing they do not
# control: output is captured into a variable before it is inspected (no
# `slurp ... | grep -q`: the reader may close the pipe before the writer
# is done, and under pipefail that fails the step), and nothing sleeps in
# place of "the cluster has noticed": they poll the condition with
# wait_for, which is bounded in time and says what it waited for.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR=${SLURP_TESTNET_DIR:-$ROOT/.testnet}
case "$DIR" in /*) ;; *) DIR="$ROOT/$DIR" ;; esac
BASE_PORT=${SLURP_TESTNET_PORT:-7100}
PROFILE=${SLURP_TESTNET_PROFILE:-debug}
case "$PROFILE" in
  debug | release) ;;
  *) echo "SLURP_TESTNET_PROFILE must be debug or release, not '$PROFILE'" >&2; exit 2 ;;
esac
BIN="$ROOT/target/$PROFILE/slurp"

api_port() { echo $((BASE_PORT + $1)); }
p2p_port() { echo $((BASE_PORT + 100 + $1)); }
node_url() { echo "http://127.0.0.1:$(api_port "$1")"; }
node_token() { cat "$DIR/node$1/admin.token"; }
node_pid() { cat "$DIR/node$1.pid" 2>/dev/null || true; }
node_count() { cat "$DIR/nodes" 2>/dev/null || echo 0; }

# Whether process PID runs. A killed process nobody has reaped yet (a
# zombie) still answers `kill -0`, so on Linux its state is checked too.
pid_alive() {
  local p=$1 stat
  [ -n "$p" ] || return 1
  kill -0 "$p" 2>/dev/null || return 1
  if [ -r "/proc/$p/stat" ]; then
    stat=$(cat "/proc/$p/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat:0:1}" != Z ] || return 1
  fi
  return 0
}
node_alive() { pid_alive "$(node_pid "$1")"; }

# slurp as node I's admin.
as_node() { local i=$1; shift; SLURP_NODE=$(node_url "$i") SLURP_TOKEN=$(node_token "$i") "$BIN" "$@"; }

build() {
  if [ "${SLURP_TESTNET_BUILD:-1}" = 0 ]; then
    [ -x "$BIN" ] || { echo "SLURP_TESTNET_BUILD=0 but there is no $BIN" >&2; return 1; }
    return 0
  fi
  if [ "$PROFILE" = release ]; then
    cargo build --release -p slurp-node --bin slurp
  else
    cargo build -p slurp-node --bin slurp
  fi
}

# wait_for SECONDS WHAT COMMAND [ARG...]: runs COMMAND every 0.2 s until
# it succeeds, for at most SECONDS seconds (and so a bounded number of
# times). On timeout says what it waited for and returns 1; the caller
# prints what it saw last.
wait_for() {
  local limit=$1 what=$2 tries=0 start=$SECONDS
  shift 2
  while :; do
    tries=$((tries + 1))
    if "$@"; then return 0; fi
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      echo "gave up after ${limit} s ($tries tries) waiting for $what" >&2
      return 1
    fi
    sleep 0.2
  done
}

# Starts node I in the background with the command saved by up.sh.
launch() {
  local i=$1
  nohup bash "$DIR/node$i.cmd" >>"$DIR/node$i.log" 2>&1 &
  echo $! >"$DIR/node$i.pid"
}

# Whether node I answers /health; fails the wait when its process is gone.
node_healthy() {
  local i=$1
  if [ -f "$DIR/node$i/admin.token" ] &&
    "$BIN" health --node "$(node_url "$i")" --token x --timeout 5s >/dev/null 2>&1; then
    return 0
  fi
  if ! node_alive "$i"; then
    echo "node $i exited; last log lines:" >&2
    tail -n 20 "$DIR/node$i.log" >&2 || true
    return 2
  fi
  return 1
}

# Waits (at most $2 seconds, default 60) until node I answers /health.
wait_healthy() {
  local i=$1 limit=${2:-60} start=$SECONDS rc
  while :; do
    rc=0
    node_healthy "$i" || rc=$?
    case $rc in 0) return 0 ;; 2) return 1 ;; esac
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      echo "node $i did not answer /health within ${limit} s; last log lines:" >&2
      tail -n 20 "$DIR/node$i.log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
}

# "VERSION MEMBERS" of the layout node I holds: the first layout_version
# of its cluster status (the node's own; the members' come later) and how
# many members it lists. Parses captured output (no pipes).
layout_of() {
  local j v=0 m=0 rest
  j=$(as_node "$1" cluster status --json --timeout 10s 2>/dev/null) || return 1
  if [[ $j =~ \"layout_version\":\ *([0-9]+) ]]; then v=${BASH_REMATCH[1]}; fi
  rest=$j
  while [[ $rest == *'"is_self"'* ]]; do
    m=$((m + 1))
    rest=${rest#*'"is_self"'}
  done
  echo "$v $m"
}

# The scenarios (smoke.sh, trust.sh): steps that say what they expect and
# print what they saw when it does not hold. Set SCENARIO to name them.
step() { echo; echo "== $*"; }
fail() { echo "${SCENARIO:-SCENARIO} FAILED: $*" >&2; exit 1; }

# run COMMAND [ARG...]: runs it with its output in OUT, its error output in
# ERR and its exit status in RC; never fails itself.
ERRFILE="$DIR/scenario.stderr"
OUT="" ERR="" RC=0
run() {
  RC=0
  OUT=$("$@" 2>"$ERRFILE") || RC=$?
  ERR=$(cat "$ERRFILE")
}
# What the last run saw, for failure messages.
seen() { printf 'exit status %s\n--- output:\n%s\n--- error output:\n%s' "$RC" "$OUT" "$ERR"; }
# must WHAT COMMAND [ARG...]: run, and fail the step unless it succeeded.
must() {
  local what=$1
  shift
  run "$@"
  [ "$RC" = 0 ] || fail "$what: expected success, got $(seen)"
}
# expect_output WHAT TEXT: the last run's output contains TEXT.
expect_output() {
  [[ $OUT == *"$2"* ]] || fail "$1: expected output containing \"$2\", got $(seen)"
}

# The benchmarks: starts one node of $BIN on a fresh data directory (DATA)
# on SLURP_BENCH_PORT (7079), removed with the node on exit; waits until
# it answers and exports SLURP_NODE and SLURP_TOKEN (its admin token).
start_bench_node() {
  DATA=$(mktemp -d)
  PORT=${SLURP_BENCH_PORT:-7079}
  "$BIN" node run --data "$DATA/node" --listen "127.0.0.1:$PORT" >"$DATA/node.log" 2>&1 &
  PID=$!
  trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
  export SLURP_NODE="http://127.0.0.1:$PORT"
  bench_healthy() {
    if [ -f "$DATA/node/admin.token" ] && "$BIN" health --token x --timeout 5s >/dev/null 2>&1; then return 0; fi
    if ! pid_alive "$PID"; then
      echo "the node exited; its log:" >&2
      cat "$DATA/node.log" >&2
      exit 1
    fi
    return 1
  }
  wait_for 60 "the node to answer /health on port $PORT" bench_healthy || { tail -n 20 "$DATA/node.log" >&2; exit 1; }
  export SLURP_TOKEN
  SLURP_TOKEN=$(cat "$DATA/node/admin.token")
}
