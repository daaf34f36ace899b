#!/usr/bin/env bash
# Runs slurp and etcd, its nearest peer, side by side on this machine with
# the same load shape, and prints both with their ratio.
#
#   testnet/bench-vs-etcd.sh [SECONDS] [--only etcd|slurp]   (default 20 s)
#
# For each system, two phases of SECONDS each, driven by `slurp bench`
# (release build) with 64 clients and 1 KiB values:
#   put  durable writes of distinct new keys (after loading 1,000 keys)
#   get  reads of the 1,000 loaded keys (etcd: linearizable ranges)
# etcd: a 3-member cluster of the Debian `etcd-server` on 127.0.0.1
# (clients on 23791-23793, peers on 23801-23803, fsync on, the default),
# driven through its JSON gateway on member 1.
# slurp: a 3-node testnet from testnet/up.sh (RF 3, W 2, R 2), driven
# through node 1, in its own SLURP_TESTNET_DIR and on its own ports (API
# 7501-7503, swarm 7601-7603) so a testnet of yours is left alone.
# Installs `etcd-server` and `jq` with apt-get if they are missing (on a
# systemd host the package also starts a system etcd on 2379; stop it with
# `systemctl stop etcd` for a quiet machine). Exits non-zero if a phase
# could not run; everything it started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 [SECONDS] [--only etcd|slurp]" >&2; exit 2; }
secs=20
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --only) [ $# -ge 2 ] || usage; only=$2; shift 2 ;;
    --only=*) only=${1#--only=}; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *[!0-9]*|'') usage ;;
    *) secs=$1; shift ;;
  esac
done
case "$only" in ""|etcd|slurp) ;; *) usage ;; esac
[ "$secs" -ge 1 ] || usage
run_etcd=true; run_slurp=true
[ "$only" = slurp ] && run_etcd=false
[ "$only" = etcd ] && run_slurp=false

CLIENTS=64
VALUE_SIZE=1024
KEYS=1000
ETCD_CLIENT_PORTS=(23791 23792 23793)
ETCD_PEER_PORTS=(23801 23802 23803)
# A phase that does not finish within this many seconds beyond its
# duration (loading included) counts as failed.
PHASE_SLACK=180

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
    { as_root apt-get update -qq &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}
need=()
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v curl >/dev/null 2>&1 || need+=(curl)
if $run_etcd && ! command -v etcd >/dev/null 2>&1; then need+=(etcd-server); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt_install "${need[@]}"
fi

cargo build --release -p slurp-node --bin slurp
BIN="$PWD/target/release/slurp"

WORK=$(mktemp -d)
RESULTS="$WORK/results"
mkdir -p "$RESULTS"
PREFIX="vs$(date +%s)"
ETCD_PIDS=()
SLURP_UP=false
# The testnet gets its own directory and ports (API 7501-7503, swarm
# 7601-7603), so a testnet of yours on the default ones keeps running.
export SLURP_TESTNET_DIR="$WORK/testnet" SLURP_TESTNET_PORT=7500 SLURP_TESTNET_PROFILE=release
unset SLURP_TESTNET_ARGS

stop_etcd() {
  local pid
  for pid in "${ETCD_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${ETCD_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  ETCD_PIDS=()
  rm -rf "$WORK/etcd"
}
stop_slurp() {
  if $SLURP_UP; then
    SLURP_UP=false
    timeout 60 testnet/down.sh >/dev/null 2>&1 || echo "warning: testnet/down.sh failed" >&2
  fi
}
cleanup() {
  stop_etcd
  stop_slurp
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# bench SYSTEM PHASE ARGS...: one `slurp bench` run, its JSON report kept
# in $RESULTS/SYSTEM-PHASE.json. Returns non-zero if it did not complete.
bench() {
  local system=$1 phase=$2
  shift 2
  echo "== $system $phase: slurp bench $*"
  if timeout $((secs + PHASE_SLACK)) "$BIN" bench --json --clients "$CLIENTS" \
    --value-size "$VALUE_SIZE" --keys "$KEYS" --prefix "$PREFIX" \
    --duration "${secs}s" "$@" >"$RESULTS/$system-$phase.json" &&
    [ "$(jq '[.ops[].count] | add // 0' "$RESULTS/$system-$phase.json")" -gt 0 ]; then
    jq -r '.ops[] | "   \(.op): \(.ops_per_sec | floor) ops/s, p50 \(.p50_us) µs, p99 \(.p99_us) µs, \(.errors) errors"' \
      "$RESULTS/$system-$phase.json"
  else
    echo "   $system $phase failed" >&2
    rm -f "$RESULTS/$system-$phase.json"
    return 1
  fi
}

run_etcd_phases() {
  local i port initial=""
  for i in 0 1 2; do
    for port in "${ETCD_CLIENT_PORTS[$i]}" "${ETCD_PEER_PORTS[$i]}"; do
      if port_busy "$port"; then
        echo "port $port is in use (an etcd left from an earlier run?)" >&2
        return 1
      fi
    done
    initial+="${initial:+,}m$((i + 1))=http://127.0.0.1:${ETCD_PEER_PORTS[$i]}"
  done
  mkdir -p "$WORK/etcd"
  for i in 0 1 2; do
    local name="m$((i + 1))"
    etcd --name "$name" --data-dir "$WORK/etcd/$name" \
      --listen-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORTS[$i]}" \
      --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORTS[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORTS[$i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORTS[$i]}" \
      --initial-cluster "$initial" --initial-cluster-state new \
      --initial-cluster-token "slurp-bench-$PREFIX" \
      >"$WORK/etcd/$name.log" 2>&1 &
    ETCD_PIDS+=($!)
  done
  local healthy=0 pid health
  for _ in $(seq 1 300); do
    healthy=0
    for port in "${ETCD_CLIENT_PORTS[@]}"; do
      # Captured, not piped into grep -q (which may close the pipe on curl).
      health=$(curl -fsS --max-time 2 "http://127.0.0.1:$port/health" 2>/dev/null) || health=""
      [[ $health == *'"health":"true"'* ]] && healthy=$((healthy + 1))
    done
    [ "$healthy" = 3 ] && break
    for pid in "${ETCD_PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null || { healthy=-1; break; }
    done
    [ "$healthy" = -1 ] && break
    sleep 0.1
  done
  if [ "$healthy" != 3 ]; then
    echo "etcd did not become healthy; its logs:" >&2
    tail -n 5 "$WORK"/etcd/*.log >&2 || true
    return 1
  fi
  echo "etcd $(etcd --version | sed -n 's/^etcd Version: //p'): 3 members healthy"
  local node="http://127.0.0.1:${ETCD_CLIENT_PORTS[0]}" rc=0
  bench etcd put --target etcd --node "$node" --mix put=100 --distinct-puts || rc=1
  if [ $rc = 0 ]; then
    bench etcd get --target etcd --node "$node" --mix get=100 --no-load || rc=1
  fi
  stop_etcd
  return $rc
}

run_slurp_phases() {
  if [ ! -x testnet/up.sh ] || [ ! -x testnet/down.sh ]; then
    echo "testnet/up.sh and testnet/down.sh are needed for the slurp half" >&2
    return 1
  fi
  local i port
  for i in 1 2 3; do
    for port in $((SLURP_TESTNET_PORT + i)) $((SLURP_TESTNET_PORT + 100 + i)); do
      if port_busy "$port"; then
        echo "port $port is in use (a testnet left from an earlier run?)" >&2
        return 1
      fi
    done
  done
  SLURP_UP=true
  if ! timeout 300 testnet/up.sh 3 >"$WORK/up.log" 2>&1; then
    echo "testnet/up.sh 3 failed:" >&2
    tail -n 20 "$WORK/up.log" >&2
    return 1
  fi
  echo "slurp testnet: 3 nodes up"
  # shellcheck disable=SC1091
  source "$SLURP_TESTNET_DIR/env"
  : "${SLURP_NODE:?testnet env does not set SLURP_NODE}" "${SLURP_TOKEN:?testnet env does not set SLURP_TOKEN}"
  export SLURP_NODE SLURP_TOKEN
  local rc=0
  bench slurp put --target slurp --mix put=100 --distinct-puts || rc=1
  if [ $rc = 0 ]; then
    bench slurp get --target slurp --mix get=100 --no-load || rc=1
  fi
  stop_slurp
  return $rc
}

failed=()
if $run_etcd; then run_etcd_phases || failed+=(etcd); fi
if $run_slurp; then run_slurp_phases || failed+=(slurp); fi

# One row per system and phase; the ratio is slurp's throughput over
# etcd's in the same phase.
field() { jq -r --arg op "$2" "[.ops[] | select(.op == \$op) | .$3][0] // 0" "$RESULTS/$1.json"; }
echo
echo "$CLIENTS clients, ${VALUE_SIZE}-byte values, ${secs} s per phase"
printf '%-6s %-4s %10s %9s %9s %7s %13s\n' system phase "ops/s" "p50 ms" "p99 ms" errors "slurp/etcd"
for phase in put get; do
  for system in etcd slurp; do
    f="$RESULTS/$system-$phase.json"
    if [ ! -f "$f" ]; then
      if { [ $system = etcd ] && $run_etcd; } || { [ $system = slurp ] && $run_slurp; }; then
        printf '%-6s %-4s %10s\n' "$system" "$phase" "did not run"
      fi
      continue
    fi
    ratio=""
    if [ $system = slurp ] && [ -f "$RESULTS/etcd-$phase.json" ]; then
      ratio=$(awk -v s="$(field slurp-$phase $phase ops_per_sec)" -v e="$(field etcd-$phase $phase ops_per_sec)" \
        'BEGIN { if (e > 0) printf "%.2fx", s / e; else printf "-" }')
    fi
    awk -v sys="$system" -v ph="$phase" -v ops="$(field $system-$phase $phase ops_per_sec)" \
      -v p50="$(field $system-$phase $phase p50_us)" -v p99="$(field $system-$phase $phase p99_us)" \
      -v err="$(field $system-$phase $phase errors)" -v ratio="$ratio" \
      'BEGIN { printf "%-6s %-4s %10.0f %9.2f %9.2f %7d %13s\n", sys, ph, ops, p50 / 1000, p99 / 1000, err, ratio }'
  done
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "could not run: ${failed[*]}" >&2
  exit 1
fi
