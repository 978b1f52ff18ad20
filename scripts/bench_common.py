"""Helpers shared by the benchmark scripts (bench-gateway.py, profile-filter.py): child
processes that never outlive the script, ports, polling, the bench Envoy template and the
variants' filter blocks."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVOY = os.path.join(ROOT, ".venv/bin/envoy")
WASM_DIR = os.path.join(ROOT, "target/wasm/wasm32-unknown-unknown/release")
PERF = os.path.join(ROOT, "target/perf")
TEMPLATE = os.path.join(ROOT, "envoy/bench.yaml.tmpl")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode("utf-8", "replace")


def wait_until(what, check, timeout=30.0):
    """Polls `check` until it is true; raises naming `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class Processes:
    """Children, stopped (TERM, then KILL) when the script ends, whatever happens."""

    def __init__(self):
        self.children = []

    def start(self, argv, log, **kw):
        p = subprocess.Popen(argv, stdout=kw.pop("stdout", log), stderr=log,
                             stdin=subprocess.DEVNULL, **kw)
        self.children.append(p)
        return p

    def stop(self, p, timeout=10):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for p in reversed(self.children):
            self.stop(p)


def start_collector(procs, work, log, argv_prefix=()):
    """Starts `warden serve` (optimized build) with its data in `work`; returns (process, gRPC
    port, HTTP address)."""
    ready = os.path.join(work, "ready.json")
    proc = procs.start(list(argv_prefix) + [
        os.path.join(PERF, "warden"), "serve", "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", "--data-dir", os.path.join(work, "data"),
        "--ready-file", ready], log)
    wait_until("the collector", lambda: os.path.exists(ready) and os.path.getsize(ready) > 0)
    with open(ready) as f:
        addrs = json.load(f)
    return proc, int(addrs["grpc"].rsplit(":", 1)[1]), addrs["http"]


def indent(text, spaces):
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


# The Warden filter's configuration in the benchmarks: its collector credential comes from the
# VM's environment, as in production (the collector refuses filters without one).
WARDEN_CONFIG = '{"collector": {"token_env": "WARDEN_FILTER_TOKEN"}}'
WARDEN_ENV_KEYS = ("WARDEN_FILTER_TOKEN",)


def filter_token_env(work):
    """The environment for an Envoy whose Warden filter talks to the collector started in
    `work`: its local filter token in WARDEN_FILTER_TOKEN."""
    with open(os.path.join(work, "data", "filter.token")) as f:
        return {**os.environ, "WARDEN_FILTER_TOKEN": f.read().strip()}


def wasm_filter(name, wasm, config, env_keys=()):
    """An HTTP filter list item running `wasm` with a JSON `config` (single-quoted YAML), its VM
    given the host environment variables `env_keys`."""
    config = config.replace("'", "''")
    env = (f"\n        environment_variables: {{ host_env_keys: [{', '.join(env_keys)}] }}"
           if env_keys else "")
    return f"""- name: envoy.filters.http.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
      name: {name}
      root_id: {name}
      failure_policy: FAIL_OPEN
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: '{config}'
      vm_config:
        vm_id: {name}
        runtime: envoy.wasm.runtime.v8
        code: {{ local: {{ filename: "{wasm}" }} }}{env}"""


def render(path, node_id, admin, listener, upstream, collector, sink, filters="", access_log=""):
    """Writes a bench bootstrap to `path` from envoy/bench.yaml.tmpl."""
    with open(TEMPLATE) as f:
        template = f.read()
    values = {
        "NODE_ID": node_id, "ADMIN_PORT": str(admin), "LISTENER_PORT": str(listener),
        "UPSTREAM_PORT": str(upstream), "COLLECTOR_GRPC_PORT": str(collector),
        "SINK_PORT": str(sink), "HTTP_FILTERS": indent(filters, 10),
        "ACCESS_LOG": indent(access_log or "access_log: []", 10),
    }
    with open(path, "w") as f:
        f.write(re.sub(r"\$\{([A-Z_]+)\}", lambda m: values[m.group(1)], template))
    return path


def envoy_stats(admin):
    _, body = http_get(f"http://{admin}/stats")
    stats = {}
    for line in body.splitlines():
        name, _, value = line.partition(": ")
        try:
            stats[name] = int(value)
        except ValueError:
            pass
    return stats


def write_report(text, kind, started):
    """Writes a report to $OUT, else target/bench/<kind>-<time>.md, prints it, and says where."""
    out = os.environ.get("OUT") or os.path.join(ROOT, "target/bench", f"{kind}-{started:%Y%m%d-%H%M}.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(text)
    print(f"report written to {out}", file=sys.stderr)


def stat(stats, name):
    """A counter by its full name, or the sum of the custom Wasm counters ending with it (Envoy
    prefixes those)."""
    if name in stats:
        return stats[name]
    return sum(v for k, v in stats.items() if k.startswith("wasmcustom.") and k.endswith(name))
