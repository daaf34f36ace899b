#!/usr/bin/env bash
# Runs many more in-process fault schedules than CI does (the suite of
# node/tests/faults.rs: a 3-node cluster, seeded puts, deletes and reads
# through every node under network faults and failed commits, each run
# checked by history::check) and prints the figures of docs/reliability.md.
#
#   testnet/faults.sh [SCHEDULES] [SECONDS]
#
# SCHEDULES (default 2000) from seed SLURP_FAULT_SEED_BASE (default 100:
# CI runs seeds 0-99); no new schedule starts after SECONDS (default 1800),
# and the run is killed 5 minutes after that if it is still going, so it
# always stops by itself. A failing seed is printed with the command that
# reruns it alone. Builds the test binary first (not counted in the time).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
schedules=${1:-2000}
secs=${2:-1800}
base=${SLURP_FAULT_SEED_BASE:-100}
case "$schedules$secs$base" in *[!0-9]*) echo "usage: testnet/faults.sh [SCHEDULES] [SECONDS]" >&2; exit 2 ;; esac

log=$(mktemp)
trap 'rm -f "$log"' EXIT

cargo test -p slurp-node --test faults --no-run
echo "running up to $schedules schedules from seed $base for at most $secs s"
started=$SECONDS
status=0
SLURP_FAULT_SEEDS=$schedules SLURP_FAULT_SEED_BASE=$base SLURP_FAULT_SECS=$secs \
  timeout --kill-after=30 $((secs + 300)) \
  cargo test -p slurp-node --test faults seeded_fault_schedules -- --nocapture --test-threads 4 \
  >"$log" 2>&1 || status=$?
took=$((SECONDS - started))

summary=$(awk '
  /^fault-schedule / {
    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    n++; ops += v["ops"]; acked += v["acked"]; failed += v["failed"]
    lost += v["lost"]; res += v["resurrected"]; print v["converge_ms"] > "/dev/stderr"
    cut += v["cut"]; dropped += v["dropped"]; delayed += v["delayed"]
    dup += v["duplicated"]; disk += v["disk_failures"]
  }
  END {
    printf "schedules %d\noperations %d\nacknowledged writes %d\nfailed operations %d\nlost %d\nresurrected deletes %d\n", n, ops, acked, failed, lost, res
    printf "faults injected: %d requests cut, %d dropped, %d delayed, %d duplicated, %d failed commits\n", cut, dropped, delayed, dup, disk
  }' "$log" 2>"$log.ms")
converge=$(sort -n "$log.ms" | awk '{ a[NR] = $1 } END { if (NR) printf "convergence after the last fault: p50 %d ms, max %d ms\n", a[int((NR + 1) / 2)], a[NR] }')
rm -f "$log.ms"

echo "$summary"
echo "$converge"
echo "wall time ${took} s on $(nproc) cores"
if [ "$status" -ne 0 ]; then
  echo "FAILED (exit $status):" >&2
  failures=$(grep -E "failed the checker|did not converge|^rerun:|panicked" "$log" || true)
  echo "${failures:-no failing seed named; the end of the log follows}" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
