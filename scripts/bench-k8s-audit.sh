#!/usr/bin/env bash
# The Kubernetes audit webhook's capacity: `warden serve` pinned to CPU 0, the sender (playing the
# API server, with its client certificate) to CPU 1. Builds optimized binaries, then runs
# tests/src/bin/bench-k8s-audit.rs (see that file for the method).
# Environment: ROUNDS (5), BATCHES (50 bodies of 400 events per round), DURATION (60 s at 1,000 events/s).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --profile perf -p warden-collector -p warden-e2e --bin warden --bin bench-k8s-audit >&2
WARDEN_BIN=$PWD/target/perf/warden RUST_LOG=${RUST_LOG:-warn} target/perf/bench-k8s-audit
