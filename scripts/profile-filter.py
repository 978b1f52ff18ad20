#!/usr/bin/env python3
"""Where a request's cost goes (`make profile`): Envoy's instructions per request, counted by
callgrind, for bare Envoy, the no-op filter, a probe filter making one kind of host call at a
time (bench/probe-filter), and the Warden filter on its plain, deny-list and blocked paths.

Instruction counts are repeatable on a noisy shared machine where timings are not: the same
binary and inputs give the same count whatever else runs. Each variant runs in its own Envoy
under `valgrind --tool=callgrind`; after a warm-up the counters are zeroed, the idle background
(timers, the filter's tick) is counted over IDLE seconds, then N requests are sent one after
another on one keep-alive connection; the idle rate times the requests' duration is taken off
before dividing by N. Differences between variants give the cost of each step.

Environment: N (requests per variant, 300), IDLE (seconds, 3), JOBS (variants run at once,
default the number of cores), OUT (report path), VARIANTS (comma-separated subset), ALT_WASM
(another build of the filter, measured as `warden-alt`).
"""

import datetime
import glob
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import (PERF, ROOT, WARDEN_CONFIG, WARDEN_ENV_KEYS, WASM_DIR,  # noqa: E402
                          Processes, envoy_stats, filter_token_env, free_port,
                          http_get, render, start_collector, stat, wait_until, wasm_filter,
                          write_report)

N = int(os.environ.get("N", "300"))
IDLE = float(os.environ.get("IDLE", "3"))
JOBS = int(os.environ.get("JOBS", str(os.cpu_count() or 1)))


def envoy_binary():
    found = glob.glob(os.path.join(ROOT, ".venv/lib/python3*/site-packages/envoy/_bin/envoy"))
    if not found:
        sys.exit("profile-filter: Envoy's binary is not in .venv (run scripts/setup.sh)")
    return found[0]


def attribute_expression():
    out = subprocess.run(["cargo", "run", "-q", "--locked", "-p", "warden-filter", "--example",
                          "attribute-expression"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"profile-filter: cannot print the filter's expression: {out.stderr}")
    return out.stdout.strip()


def probe(ops):
    import json
    return ("probe", os.path.join(WASM_DIR, "warden_probe_filter.wasm"), json.dumps({"log": ops}))


def variants(expression):
    warden = ("warden", os.path.join(WASM_DIR, "warden_filter.wasm"), WARDEN_CONFIG, WARDEN_ENV_KEYS)
    noop = ("noop", os.path.join(WASM_DIR, "warden_noop_filter.wasm"), "{}")
    # (name, what it measures, filter or None, ban)
    return [
        ("bare", "Envoy alone", None, None),
        ("sdk-noop", "a no-op filter built with the proxy-wasm Rust SDK (every callback exported)", noop, None),
        ("probe", "a filter exporting only on_request_headers and on_log, doing nothing", probe([]), None),
        ("probe+clock", "one proxy_get_current_time_nanoseconds", probe(["clock"]), None),
        ("probe+property", "one proxy_get_property (source.address)", probe(["property:source.address"]), None),
        ("probe+headers", "one proxy_get_header_map_pairs (every request header)", probe(["headers"]), None),
        ("probe+cel-constant", "one expr_evaluate of the constant `1`", probe(["cel:1"]), None),
        ("probe+cel-warden", "one expr_evaluate of Warden's attribute list", probe([f"cel:{expression}"]), None),
        ("probe+warden-calls", "Warden's host calls (headers, attribute list, clock) without its code",
         probe(["headers", f"cel:{expression}", "clock"]), None),
        ("warden", "the Warden filter, collector up, empty deny list", warden, None),
        ("warden+denylist", "the Warden filter, a deny list that does not list the client", warden, "10.9.9.9"),
        ("warden-blocked", "the Warden filter answering a listed client with 403", warden, "127.0.0.1"),
    ] + ([("warden-alt", f"another build of the filter ({os.environ['ALT_WASM']}), collector up",
           ("warden", os.path.abspath(os.environ["ALT_WASM"]), WARDEN_CONFIG, WARDEN_ENV_KEYS), None)]
         if os.environ.get("ALT_WASM") else [])


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"no summary in {path}")


def requests(port, n, path="/"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in range(n):
        conn.request("GET", f"{path}?n={i}", headers={"user-agent": "profile-filter/1"})
        conn.getresponse().read()
    conn.close()


def run(variant, work, envoy_bin):
    name, _, filt, ban = variant
    procs = Processes()
    vdir = os.path.join(work, name)
    os.makedirs(vdir)
    log = open(os.path.join(vdir, "children.log"), "w")
    try:
        upstream = free_port()
        procs.start([os.path.join(PERF, "demo-upstream"), f"127.0.0.1:{upstream}"], log)
        wait_until("the upstream", lambda: http_get(f"http://127.0.0.1:{upstream}/")[0] == 200)
        _, grpc, http_addr = start_collector(procs, vdir, log)
        if ban:
            # The CLI finds the collector's local admin token through its data directory.
            out = subprocess.run([os.path.join(PERF, "warden"), "ban", ban, "--reason", "profile",
                                  "--server", f"http://{http_addr}",
                                  "--data-dir", os.path.join(vdir, "data")],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"warden ban: {out.stderr}")
        admin, listener = free_port(), free_port()
        filters = wasm_filter(*filt) if filt else ""
        config = render(os.path.join(vdir, "envoy.yaml"), f"profile-{name}", admin, listener,
                        upstream, grpc, free_port(), filters)
        out_file = os.path.join(vdir, "callgrind.out")
        envoy = procs.start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
                             "--smc-check=all-non-file", envoy_bin, "-c", config, "--concurrency", "1",
                             "--disable-hot-restart", "--log-level", "warn"], log,
                            env=filter_token_env(vdir))
        wait_until("Envoy under valgrind", lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200,
                   timeout=600)
        if ban:
            wait_until("the ban to reach the filter", lambda: stat(
                envoy_stats(f"127.0.0.1:{admin}"), "warden.denylist_entries") >= 1, timeout=120)
        requests(listener, 50)  # warm-up
        control = ["callgrind_control"]
        subprocess.run(control + ["-z", str(envoy.pid)], capture_output=True, check=True)
        time.sleep(IDLE)
        subprocess.run(control + ["-d", str(envoy.pid)], capture_output=True, check=True)
        subprocess.run(control + ["-z", str(envoy.pid)], capture_output=True, check=True)
        t0 = time.time()
        requests(listener, N)
        elapsed = time.time() - t0
        subprocess.run(control + ["-d", str(envoy.pid)], capture_output=True, check=True)
        idle = callgrind_total(f"{out_file}.1") / IDLE
        loaded = callgrind_total(f"{out_file}.2")
        statuses = ""
        if ban == "127.0.0.1":
            blocked = stat(envoy_stats(f"127.0.0.1:{admin}"), "warden.requests_blocked")
            statuses = f"{blocked} blocked"
        return {"name": name, "per_request": (loaded - idle * elapsed) / N,
                "idle_per_s": idle, "elapsed": elapsed, "note": statuses}
    except Exception as e:
        return {"name": name, "failed": str(e)}
    finally:
        procs.stop_all()
        log.close()


def main():
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            sys.exit(f"profile-filter: {tool} is not installed (apt-get install valgrind)")
    envoy_bin = envoy_binary()
    expression = attribute_expression()
    chosen = os.environ.get("VARIANTS")
    all_variants = variants(expression)
    if chosen:
        names = chosen.split(",")
        all_variants = [v for v in all_variants if v[0] in names]
    started = datetime.datetime.now(datetime.timezone.utc)
    work = tempfile.mkdtemp(prefix="warden-profile-")
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        results = list(pool.map(lambda v: run(v, work, envoy_bin), all_variants))
    by = {r["name"]: r for r in results}
    for r in results:
        state = f"FAILED: {r['failed']}" if "failed" in r else f"{r['per_request']:,.0f} instructions/request"
        print(f"{r['name']}: {state}", file=sys.stderr)

    def cost(a, b=None):
        ra, rb = by.get(a, {}), by.get(b, {}) if b else {"per_request": 0}
        if "per_request" not in ra or "per_request" not in rb:
            return "n/a"
        return f"{ra['per_request'] - rb['per_request']:+,.0f}"

    lines = [
        "# Where a request's cost goes: Envoy instructions per request (callgrind)",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; {N} requests per variant on one keep-alive connection "
        f"after a 50-request warm-up; idle background over {IDLE:g} s subtracted",
        "- Every figure is instructions executed by the whole Envoy process per request "
        "(HTTP parsing, routing, the upstream connection, the filter); lower is better",
        "",
        "| variant | what it is | instructions/request | over bare | over the SDK no-op | idle background/s |",
        "|---|---|---|---|---|---|",
    ]
    for v in all_variants:
        r = by[v[0]]
        if "failed" in r:
            lines.append(f"| {v[0]} | {v[1]} | FAILED: {r['failed']} | | | |")
            continue
        lines.append(f"| {v[0]} | {v[1]} | {r['per_request']:,.0f} | {cost(v[0], 'bare')} | "
                     f"{cost(v[0], 'sdk-noop')} | {r['idle_per_s']:,.0f} |")
    lines += [
        "",
        "## Step by step",
        "",
        "| step | instructions/request |",
        "|---|---|",
        f"| the C++ side of a Wasm filter plus the SDK's callbacks (sdk-noop − bare) | {cost('sdk-noop', 'bare')} |",
        f"| two exported callbacks, nothing done (probe − bare) | {cost('probe', 'bare')} |",
        f"| a host call returning no data: the clock (probe+clock − probe) | {cost('probe+clock', 'probe')} |",
        f"| a host call returning one value: get_property (probe+property − probe) | {cost('probe+property', 'probe')} |",
        f"| all request headers in one call (probe+headers − probe) | {cost('probe+headers', 'probe')} |",
        f"| the fixed cost of evaluating a CEL expression (probe+cel-constant − probe) | {cost('probe+cel-constant', 'probe')} |",
        f"| Warden's attribute list in one CEL evaluation (probe+cel-warden − probe) | {cost('probe+cel-warden', 'probe')} |",
        f"| Warden's code in the VM: parse, record, encode, batch (warden − probe+warden-calls) | {cost('warden', 'probe+warden-calls')} |",
        f"| the deny-list check when the list is not empty (warden+denylist − warden) | {cost('warden+denylist', 'warden')} |",
        f"| a blocked request against an allowed one (warden-blocked − warden) | {cost('warden-blocked', 'warden')} |",
        "",
    ]
    write_report("\n".join(lines) + "\n", "profile", started)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
