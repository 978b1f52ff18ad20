#!/usr/bin/env bash
# Runs the Warden demo in the foreground: the collector, a demo upstream, and Envoy with the
# filter in front of jwt_authn (on /admin/ and /api/), RBAC, basic auth (on /basic/) and an mTLS
# listener. Ctrl-C stops them all. `make demo` builds everything first.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_LISTENER_PORT=${ENVOY_LISTENER_PORT:-10000}
ENVOY_MTLS_PORT=${ENVOY_MTLS_PORT:-10443}
ENVOY_ADMIN_PORT=${ENVOY_ADMIN_PORT:-9901}
COLLECTOR_GRPC=${COLLECTOR_GRPC:-127.0.0.1:50051}
COLLECTOR_HTTP=${COLLECTOR_HTTP:-127.0.0.1:9090}
UPSTREAM=${UPSTREAM:-127.0.0.1:8080}
DATA_DIR=${DATA_DIR:-$PWD/data}
DEMO_CONFIG=${DEMO_CONFIG:-$PWD/envoy/demo-warden.toml}

warden=$PWD/target/debug/warden
upstream_bin=$PWD/target/debug/demo-upstream
token_bin=$PWD/target/debug/demo-token
wasm=$PWD/target/wasm/wasm32-unknown-unknown/release/warden_filter.wasm
envoy=$PWD/.venv/bin/envoy
for f in "$warden" "$upstream_bin" "$token_bin" "$wasm" "$envoy" "$DEMO_CONFIG"; do
  [ -e "$f" ] || { echo "demo: $f is missing: run 'make demo' (it builds everything)" >&2; exit 1; }
done
mkdir -p "$DATA_DIR"
auth_dir=$DATA_DIR/demo-auth
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

# Warden guards itself in the demo as in production: TLS on both collector listeners, filters
# authenticated by their client certificate (and only for node id warden-demo), the API by token.
# `warden init` makes the CA, certificates and tokens once; the collector's config is the demo's
# rules plus the TLS and credential settings pointing at them.
pki=$DATA_DIR/pki
if [ ! -e "$pki/ca.pem" ]; then
  "$warden" init --dir "$pki" >/dev/null
fi
config=$DATA_DIR/demo-warden.toml
{
  cat "$DEMO_CONFIG"
  cat <<TOML

# --- written by scripts/demo.sh: TLS and credentials from \`warden init --dir $pki\` ---
[grpc.tls]
cert = "$pki/collector.pem"
key = "$pki/collector-key.pem"
client_ca = "$pki/ca.pem"
require_client_cert = true

[[grpc.credentials]]
name = "demo-gateway"
certificate = "spiffe://warden/filter"
node_ids = ["warden-demo"]

[http.tls]
cert = "$pki/collector.pem"
key = "$pki/collector-key.pem"
client_ca = "$pki/ca.pem"
TOML
} > "$config"

"$warden" serve --config "$config" --grpc-listen "$COLLECTOR_GRPC" --http-listen "$COLLECTOR_HTTP" \
  --data-dir "$DATA_DIR" --ready-file "$run_dir/ready.json" 2> >(sed 's/^/[collector] /' >&2) &
pids+=($!)
"$upstream_bin" "$UPSTREAM" 2> >(sed 's/^/[upstream] /' >&2) &
pids+=($!)

for _ in $(seq 200); do [ -s "$run_dir/ready.json" ] && break; sleep 0.05; done
[ -s "$run_dir/ready.json" ] || { echo "demo: the collector did not start (see its log above)" >&2; exit 1; }

# Keys, certificates and a token for alice (role admin), valid for an hour.
token=$("$token_bin" "$auth_dir")
filter_config='{"collector":{"cluster":"warden_collector"},"identity":{"jwt_extra_claims":["email","client_id","role"],"basic_auth_user_header":"x-warden-basic-user"}}'
scripts/render-envoy.sh envoy/auth.yaml.tmpl NODE_ID=warden-demo ADMIN_PORT="$ENVOY_ADMIN_PORT" \
  LISTENER_PORT="$ENVOY_LISTENER_PORT" MTLS_LISTENER_PORT="$ENVOY_MTLS_PORT" \
  UPSTREAM_PORT="${UPSTREAM##*:}" COLLECTOR_GRPC_PORT="${COLLECTOR_GRPC##*:}" WASM_PATH="$wasm" \
  FILTER_CONFIG="$filter_config" JWKS_PATH="$auth_dir/jwks.json" HTPASSWD_PATH="$auth_dir/htpasswd" \
  CA_CERT="$auth_dir/ca.pem" SERVER_CERT="$auth_dir/server.pem" SERVER_KEY="$auth_dir/server-key.pem" \
  COLLECTOR_SNI=localhost COLLECTOR_CA="$pki/ca.pem" FILTER_CERT="$pki/filter.pem" \
  FILTER_KEY="$pki/filter-key.pem" > "$run_dir/envoy.yaml"
"$envoy" -c "$run_dir/envoy.yaml" --disable-hot-restart --concurrency 2 --log-level warn \
  2> >(sed 's/^/[envoy] /' >&2) &
pids+=($!)

ready=no
for _ in $(seq 300); do
  if curl -fs "http://127.0.0.1:$ENVOY_ADMIN_PORT/ready" >/dev/null 2>&1; then ready=yes; break; fi
  sleep 0.05
done
[ "$ready" = yes ] || { echo "demo: Envoy did not become ready (see its log above)" >&2; exit 1; }

L=localhost:$ENVOY_LISTENER_PORT
cat <<MSG

Warden demo is running (Ctrl-C stops everything):
  Envoy listener      http://127.0.0.1:$ENVOY_LISTENER_PORT   (jwt_authn on /admin/ and /api/, basic auth on /basic/)
  Envoy mTLS listener https://127.0.0.1:$ENVOY_MTLS_PORT  (client certificate required)
  Envoy admin         http://127.0.0.1:$ENVOY_ADMIN_PORT      (curl -s localhost:$ENVOY_ADMIN_PORT/stats | grep warden)
  collector gRPC      $COLLECTOR_GRPC   (TLS; filters present $pki/filter.pem)
  collector HTTP API  https://$COLLECTOR_HTTP  (TLS; the CLI finds the CA and the admin token in $DATA_DIR/cli.toml)
  demo upstream       http://$UPSTREAM
  data                $DATA_DIR

Try, in another terminal:
  curl $L/anything
  $warden query --since 1m
  curl --cacert $pki/ca.pem -H "authorization: Bearer \$(cat $DATA_DIR/admin.token)" https://localhost:${COLLECTOR_HTTP##*:}/api/v1/records?since=1m

  # who accessed what: a JWT for alice (role admin), then one without the role (RBAC denies it)
  TOKEN=$token
  curl -H "authorization: Bearer \$TOKEN" $L/admin/dashboard
  curl $L/admin/dashboard                                     # 401: no token
  curl -H "authorization: Bearer \$($token_bin $auth_dir --sub carol --role '')" $L/admin/dashboard   # 403
  curl -u demo:demo $L/basic/reports
  curl --cacert $auth_dir/ca.pem --cert $auth_dir/client.pem --key $auth_dir/client-key.pem https://localhost:$ENVOY_MTLS_PORT/anything
  $warden query --since 5m --decision deny
  $warden report access --since 1h

  # inline blocking
  $warden ban 127.0.0.1 --ttl 5m --reason demo && curl -i $L/anything     # 403
  $warden unban 127.0.0.1

  # detection rules: a brute force on /login turns 401s into 403s
  for i in \$(seq 30); do curl -s -o /dev/null -w '%{http_code} ' -u demo:wrong $L/login; done; echo
  $warden explain 127.0.0.1

MSG
wait -n "${pids[@]}" || true
echo "demo: a component exited; stopping the rest" >&2
