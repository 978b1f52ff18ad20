# Shared helpers for the benchmark scripts (sourced, not run).

# Prints a free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until URL answers 200, up to $2 seconds (default 30).
wait_http() {
  local url=$1 deadline=$(( $(date +%s) + ${2:-30} ))
  until curl -fs "$url" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out waiting for $url" >&2; return 1; }
    sleep 0.05
  done
}

# Waits until FILE exists and is non-empty, up to $2 seconds (default 30).
wait_file() {
  local file=$1 deadline=$(( $(date +%s) + ${2:-30} ))
  until [ -s "$file" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out waiting for $file" >&2; return 1; }
    sleep 0.05
  done
}

# Kills every process whose pid is in the BENCH_PIDS array.
BENCH_PIDS=()
kill_all() {
  for pid in "${BENCH_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
