#!/usr/bin/env bash
# Runs the whole test suite: installs the Debian tools the tests drive
# (the stock `age` CLI for interoperability tests, `promtool` from the
# prometheus package to check the metrics exposition), then every test of
# the workspace with cargo-nextest (falling back to `cargo test`), then the
# cluster scenario of testnet/smoke.sh and the trust scenario of
# testnet/trust.sh on a 5-node testnet of debug binaries
# (SLURP_CHECK_SMOKE=0 skips both).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v age >/dev/null 2>&1 || need+=(age)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v jq >/dev/null 2>&1 || need+=(jq) # testnet/smoke.sh reads the cluster's JSON
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

if [ "${SLURP_CHECK_SMOKE:-1}" != 0 ]; then
  export SLURP_TESTNET_PROFILE=debug
  # The test build above just made target/debug/slurp from these sources
  # (node/Cargo.toml gives the normal dependencies the tests' features, so
  # it is the binary `cargo build` makes): the testnet runs the binary the
  # tests ran, without asking cargo again.
  export SLURP_TESTNET_BUILD=0
  SLURP_TESTNET_DIR=$(mktemp -d)
  export SLURP_TESTNET_DIR
  # Ports away from a developer's own testnet (7100+).
  export SLURP_TESTNET_PORT=${SLURP_TESTNET_PORT:-17100}
  trap 'testnet/down.sh >/dev/null 2>&1 || true; rm -rf "$SLURP_TESTNET_DIR"' EXIT
  testnet/up.sh 5
  testnet/smoke.sh
  testnet/trust.sh
fi
