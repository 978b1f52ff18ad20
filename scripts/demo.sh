#!/usr/bin/env bash
# Runs the Warden demo in the foreground: the collector, a demo upstream, and Envoy with the
# filter. Ctrl-C stops them all. `make demo` builds everything first.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_LISTENER_PORT=${ENVOY_LISTENER_PORT:-10000}
ENVOY_ADMIN_PORT=${ENVOY_ADMIN_PORT:-9901}
COLLECTOR_GRPC=${COLLECTOR_GRPC:-127.0.0.1:50051}
COLLECTOR_HTTP=${COLLECTOR_HTTP:-127.0.0.1:9090}
UPSTREAM=${UPSTREAM:-127.0.0.1:8080}
DATA_DIR=${DATA_DIR:-$PWD/data}

warden=$PWD/target/debug/warden
upstream_bin=$PWD/target/debug/demo-upstream
wasm=$PWD/target/wasm/wasm32-unknown-unknown/release/warden_filter.wasm
envoy=$PWD/.venv/bin/envoy
for f in "$warden" "$upstream_bin" "$wasm" "$envoy"; do
  [ -x "$f" ] || [ -f "$f" ] || { echo "demo: $f is missing: run 'make demo' (it builds everything)" >&2; exit 1; }
done
mkdir -p "$DATA_DIR"
run_dir=$(mktemp -d -t warden-demo-XXXXXX)

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "demo: stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run_dir"
}
trap cleanup INT TERM EXIT

"$warden" serve --grpc-listen "$COLLECTOR_GRPC" --http-listen "$COLLECTOR_HTTP" \
  --data-dir "$DATA_DIR" --ready-file "$run_dir/ready.json" 2> >(sed 's/^/[collector] /' >&2) &
pids+=($!)
"$upstream_bin" "$UPSTREAM" 2> >(sed 's/^/[upstream] /' >&2) &
pids+=($!)

for _ in $(seq 200); do [ -s "$run_dir/ready.json" ] && break; sleep 0.05; done
[ -s "$run_dir/ready.json" ] || { echo "demo: the collector did not start (see its log above)" >&2; exit 1; }

filter_config='{"collector":{"cluster":"warden_collector"}}'
scripts/render-envoy.sh warden-demo "$ENVOY_ADMIN_PORT" "$ENVOY_LISTENER_PORT" "${UPSTREAM##*:}" \
  "${COLLECTOR_GRPC##*:}" "$wasm" "$filter_config" > "$run_dir/envoy.yaml"
"$envoy" -c "$run_dir/envoy.yaml" --disable-hot-restart --concurrency 2 --log-level warn \
  2> >(sed 's/^/[envoy] /' >&2) &
pids+=($!)

for _ in $(seq 300); do
  curl -fs "http://127.0.0.1:$ENVOY_ADMIN_PORT/ready" >/dev/null 2>&1 && break
  sleep 0.05
done

cat <<MSG

Warden demo is running (Ctrl-C stops everything):
  Envoy listener      http://127.0.0.1:$ENVOY_LISTENER_PORT   (the filter records every request)
  Envoy admin         http://127.0.0.1:$ENVOY_ADMIN_PORT      (curl localhost:$ENVOY_ADMIN_PORT/stats | grep warden)
  collector gRPC      $COLLECTOR_GRPC
  collector HTTP API  http://$COLLECTOR_HTTP   (GET /api/v1/records?since=1m)
  demo upstream       http://$UPSTREAM
  data                $DATA_DIR

Try, in another terminal:
  curl localhost:$ENVOY_LISTENER_PORT/anything
  $warden query --since 1m
  $warden ban 127.0.0.1 --ttl 5m --reason demo && curl -i localhost:$ENVOY_LISTENER_PORT/anything
  $warden unban 127.0.0.1

MSG
wait -n "${pids[@]}" || true
echo "demo: a component exited; stopping the rest" >&2
