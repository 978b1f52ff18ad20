#!/usr/bin/env bash
# Deny-list benchmarks (propagation p50/p99, 1M-entry snapshot, memory, requests/s ratio).
# Builds optimized binaries, then runs tests/src/bin/bench-denylist.rs. See that file for the method.
# Environment: BANS (200), ENTRIES (1000000), WRK_SECONDS (5), ROUNDS (5), COMPARE_TLS=1 (propagation
# with mTLS on the push path against plaintext, alternating, instead of the rest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
wasm=$(scripts/build-filter.sh)
cargo build --locked --profile perf -p warden-collector -p warden-e2e --bin warden --bin bench-denylist >&2
WARDEN_BIN=$PWD/target/perf/warden WARDEN_WASM=$wasm RUST_LOG=${RUST_LOG:-warn} target/perf/bench-denylist
