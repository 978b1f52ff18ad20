#!/usr/bin/env bash
# Requests/s through Envoy with and without the Warden filter, same machine, same run.
#
# Starts the collector and the demo upstream (optimized builds), then for each variant an Envoy
# with one worker, and drives it with wrk on loopback. Variants alternate (without, with, without,
# with) so drift on a shared machine hits both. Prints a summary table at the end.
# Environment: DURATION (wrk seconds per run, default 10), CONNECTIONS (default 32), ROUNDS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-2}

cargo build --locked --profile perf -p warden-collector -p warden-e2e --bin warden --bin demo-upstream >&2
wasm=$(scripts/build-filter.sh)
work=$(mktemp -d -t warden-bench-XXXXXX)
trap 'kill_all; rm -rf "$work"' EXIT

target/perf/warden serve --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data-dir "$work/data" \
  --ready-file "$work/ready.json" 2>"$work/collector.log" &
BENCH_PIDS+=($!)
wait_file "$work/ready.json"
grpc_port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["grpc"].rsplit(":",1)[1])' "$work/ready.json")
http_addr=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$work/ready.json")

upstream_port=$(free_port)
target/perf/demo-upstream "127.0.0.1:$upstream_port" 2>"$work/upstream.log" &
BENCH_PIDS+=($!)
wait_http "http://127.0.0.1:$upstream_port/"

run_variant() { # $1 = with|without; prints requests/s
  local variant=$1 admin listener flag=() pid rps
  admin=$(free_port); listener=$(free_port)
  [ "$variant" = without ] && flag=(--without-filter)
  scripts/render-envoy.sh envoy/envoy.yaml.tmpl NODE_ID=bench ADMIN_PORT="$admin" LISTENER_PORT="$listener" \
    UPSTREAM_PORT="$upstream_port" COLLECTOR_GRPC_PORT="$grpc_port" WASM_PATH="$wasm" FILTER_CONFIG='{}' \
    "${flag[@]}" > "$work/envoy-$variant.yaml"
  .venv/bin/envoy -c "$work/envoy-$variant.yaml" --concurrency 1 --disable-hot-restart --log-level warn \
    2>>"$work/envoy-$variant.log" &
  pid=$!
  wait_http "http://127.0.0.1:$admin/ready"
  wrk -t1 -c4 -d1s "http://127.0.0.1:$listener/" >/dev/null  # warm up connections and the VM
  rps=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$listener/" | awk '/Requests\/sec/ {print $2}')
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  echo "$rps"
}

declare -A results=([with]="" [without]="")
for round in $(seq "$ROUNDS"); do
  for variant in without with; do
    rps=$(run_variant "$variant")
    echo "round $round, $variant filter: $rps requests/s" >&2
    results[$variant]+="$rps "
  done
done
stored=$(curl -fs "http://$http_addr/api/v1/records?since=1h&limit=1" >/dev/null && echo yes || echo no)

python3 - "${results[without]}" "${results[with]}" "$DURATION" "$CONNECTIONS" <<'PY'
import statistics, sys
without = [float(x) for x in sys.argv[1].split()]
with_ = [float(x) for x in sys.argv[2].split()]
mw, mf = statistics.median(without), statistics.median(with_)
print(f"\nEnvoy 1 worker, wrk -t1 -c{sys.argv[4]} -d{sys.argv[3]}s, GET / to the demo upstream, loopback")
print(f"  without filter: median {mw:,.0f} req/s  (runs: {', '.join(f'{x:,.0f}' for x in without)})")
print(f"  with filter:    median {mf:,.0f} req/s  (runs: {', '.join(f'{x:,.0f}' for x in with_)})")
print(f"  ratio with/without: {mf / mw:.3f}")
PY
echo "  collector answering queries after the runs: $stored"
