#!/usr/bin/env bash
# `make bench`: what the Warden filter costs Envoy, against bare Envoy, a no-op Wasm filter,
# Envoy's JSON file access log and its native gRPC access log, in one run (scripts/bench-gateway.py
# says how). Builds optimized binaries first. Environment: ROUNDS, DURATION, UNLOADED,
# CONNECTIONS, VARIANTS, PIN, OUT (see scripts/bench-gateway.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --profile perf -p warden-collector -p warden-e2e \
  --bin warden --bin demo-upstream --bin grpc-sink >&2
scripts/build-filter.sh >/dev/null
exec python3 scripts/bench-gateway.py
