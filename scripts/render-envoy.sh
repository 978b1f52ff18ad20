#!/usr/bin/env bash
# Renders envoy/envoy.yaml.tmpl to stdout.
# Usage: render-envoy.sh NODE_ID ADMIN_PORT LISTENER_PORT UPSTREAM_PORT COLLECTOR_GRPC_PORT WASM_PATH FILTER_CONFIG [--without-filter]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 7 ] || { echo "usage: $0 NODE_ID ADMIN_PORT LISTENER_PORT UPSTREAM_PORT COLLECTOR_GRPC_PORT WASM_PATH FILTER_CONFIG [--without-filter]" >&2; exit 2; }
strip=()
[ "${8:-}" = "--without-filter" ] && strip=(-e '/# BEGIN warden-filter/,/# END warden-filter/d')
sed "${strip[@]}" \
    -e "s|\${NODE_ID}|$1|" \
    -e "s|\${ADMIN_PORT}|$2|" \
    -e "s|\${LISTENER_PORT}|$3|" \
    -e "s|\${UPSTREAM_PORT}|$4|" \
    -e "s|\${COLLECTOR_GRPC_PORT}|$5|" \
    -e "s|\${WASM_PATH}|$6|" \
    -e "s|\${FILTER_CONFIG}|$7|" \
    envoy/envoy.yaml.tmpl
