#!/usr/bin/env bash
# `make profile`: Envoy's instructions per request, step by step, under callgrind
# (scripts/profile-filter.py says how). Installs valgrind when missing and builds the optimized
# binaries and the filters first. Environment: N, IDLE, JOBS, VARIANTS, OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "profile: installing valgrind" >&2
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind >/dev/null
fi
cargo build --locked --profile perf -p warden-collector -p warden-e2e --bin warden --bin demo-upstream >&2
scripts/build-filter.sh >/dev/null
exec python3 scripts/profile-filter.py
