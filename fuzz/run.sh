#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each).
#   fuzz/run.sh [SECONDS] [TARGET...]
# Installs cargo-fuzz if missing. cargo-fuzz needs nightly compiler flags;
# RUSTC_BOOTSTRAP=1 enables them on the stable toolchain. Crashes land in
# fuzz/artifacts/<target>/ and make the script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
status=0
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${secs}s"
  mkdir -p "corpus/$t"
  if ! cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048; then
    echo "!! $t found a crash (see fuzz/artifacts/$t)"
    status=1
  fi
done
exit $status
