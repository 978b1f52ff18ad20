#!/usr/bin/env bash
# `make soak`: the fault tests at full length and the ban soak, one at a time (about 16 min on
# a 2-core machine).
#   tests/tests/faults.rs  the collector SIGKILLed 10 times in two minutes under load; the
#                          collector stopped (SIGSTOP) for 60 s, compared with 60 s of healthy
#                          traffic (Envoy's p99, the filter's buffer, Envoy's memory)
#   tests/tests/soak.rs    100,000 bans with distinct reasons; Envoy's memory after each wave
# Expects what `make build` builds (the collector and the filter). Each test prints its figures
# (lines starting `kills:`, `stall:` and `ban soak:`). Environment: CARGO (default cargo),
# WARDEN_TEST_PATIENCE_SECS (default 60 here: a filter backed off for 10 s still drains in time).
set -euo pipefail
cd "$(dirname "$0")/.."
export WARDEN_SOAK=1
export WARDEN_TEST_PATIENCE_SECS="${WARDEN_TEST_PATIENCE_SECS:-60}"
started=$(date +%s)
"${CARGO:-cargo}" test --locked -p warden-e2e --test faults --test soak -- \
  --include-ignored --test-threads=1 --nocapture
echo "soak: passed in $(( $(date +%s) - started )) s"
