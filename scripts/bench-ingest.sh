#!/usr/bin/env bash
# Collector ingest through real gRPC: `warden serve` pinned to CPU 0, the sender to CPU 1.
# Builds optimized binaries, then runs tests/src/bin/bench-ingest.rs. See that file for the method.
# Environment: RECORDS (1000000), SENDERS (8), BATCH (comma-separated batch sizes, "100,1000"),
# COMPARE_TLS=1 (plaintext against mTLS, alternating, ROUNDS rounds, default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --profile perf -p warden-collector -p warden-e2e --bin warden --bin bench-ingest >&2
WARDEN_BIN=$PWD/target/perf/warden RUST_LOG=${RUST_LOG:-warn} target/perf/bench-ingest
