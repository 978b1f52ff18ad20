#!/usr/bin/env python3
"""What the Warden filter costs a gateway, against the alternatives, in one run (`make bench`).

Variants, each an Envoy with one worker in front of the demo upstream on loopback:
  bare          Envoy alone (router only)
  noop          a proxy-wasm filter that does nothing (bench/noop-filter): the Wasm floor
  json-file     Envoy's JSON file access log (to a file)
  http-grpc     Envoy's native gRPC access log (`http_grpc`) to a discarding gRPC sink
  warden        the Warden filter, collector up (records stored, acknowledged)
  warden-down   the Warden filter, collector down
  warden-2w     the Warden filter with two workers (both on Envoy's core), collector up: drops

Each round runs every variant, in an order rotated by one each round; every variant gets a fresh
Envoy. Per run: wrk at saturation (`-c CONNECTIONS`) for requests/s, latency and Envoy's CPU per
request (utime+stime of the Envoy process from /proc over the run, divided by the requests
served), then wrk unloaded (`-c1`) for latency, then Envoy's resident memory, the filter's
record counters and what the collector stored. With PIN (the default on 2+ cores) Envoy runs
alone on the last core and wrk, the upstream, the collector and the sink share the others, so
Envoy's core is the bottleneck and the load generator's work is not counted against it.

The report (Markdown, with the machine and date) gives medians over rounds, the ratios to bare
Envoy, to the no-op filter and to the native gRPC access log, how many samples stand behind
each percentile, and every drop, error and failed run.

Environment: ROUNDS (5), DURATION (s at saturation, 5), UNLOADED (s unloaded, 3),
CONNECTIONS (32), VARIANTS (comma-separated, default all), PIN (1), OUT (report path), and
ALT_WASM: another build of the filter (say, an older commit's), measured as `warden-alt` in the
same run with the collector up.
"""

import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import (ENVOY, PERF, ROOT, WARDEN_CONFIG, WARDEN_ENV_KEYS, WASM_DIR,  # noqa: E402
                          Processes, envoy_stats, filter_token_env, free_port,
                          http_get, render, start_collector, stat, wait_until, wasm_filter,
                          write_report)

ALL_VARIANTS = ["bare", "noop", "json-file", "http-grpc", "warden", "warden-down", "warden-2w"]
ALT_WASM = os.environ.get("ALT_WASM", "")
if ALT_WASM:
    ALL_VARIANTS.append("warden-alt")


def env_int(name, default):
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        sys.exit(f"bench-gateway: {name}={value!r} is not a number")


ROUNDS = env_int("ROUNDS", 5)
DURATION = env_int("DURATION", 5)
UNLOADED = env_int("UNLOADED", 3)
CONNECTIONS = env_int("CONNECTIONS", 32)
PIN = env_int("PIN", 1) == 1 and (os.cpu_count() or 1) >= 2
VARIANTS = [v for v in os.environ.get("VARIANTS", ",".join(ALL_VARIANTS)).split(",") if v]
if ALT_WASM and "warden-alt" not in VARIANTS:
    VARIANTS.append("warden-alt")
for v in VARIANTS:
    if v not in ALL_VARIANTS:
        sys.exit(f"bench-gateway: unknown variant {v!r}; known: {', '.join(ALL_VARIANTS)}")
if ROUNDS < 1 or DURATION < 1 or UNLOADED < 1:
    sys.exit("bench-gateway: ROUNDS, DURATION and UNLOADED must be at least 1")

CPUS = os.cpu_count() or 1
ENVOY_CPU = str(CPUS - 1)
LOAD_CPUS = ",".join(str(c) for c in range(CPUS - 1)) if CPUS > 1 else "0"


def pinned(cpus, argv):
    return ["taskset", "-c", cpus] + argv if PIN else argv


JSON_FORMAT = {
    "start_time": "%START_TIME%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "authority": "%REQ(:AUTHORITY)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(:PATH)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "flags": "%RESPONSE_FLAGS%",
    "route": "%ROUTE_NAME%",
    "cluster": "%UPSTREAM_CLUSTER%",
    "upstream": "%UPSTREAM_HOST%",
    "duration_ms": "%DURATION%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "tls": "%DOWNSTREAM_TLS_VERSION%",
}


def variant_blocks(variant, work):
    """(http filters, access log) YAML for a variant."""
    filters, log = "", ""
    if variant == "noop":
        filters = wasm_filter("noop", os.path.join(WASM_DIR, "warden_noop_filter.wasm"), "{}")
    elif variant == "warden-alt":
        filters = wasm_filter("warden", os.path.abspath(ALT_WASM), WARDEN_CONFIG, WARDEN_ENV_KEYS)
    elif variant.startswith("warden"):
        filters = wasm_filter("warden", os.path.join(WASM_DIR, "warden_filter.wasm"), WARDEN_CONFIG,
                              WARDEN_ENV_KEYS)
    elif variant == "json-file":
        fields = "\n".join(f"        {k}: \"{v}\"" for k, v in JSON_FORMAT.items())
        log = f"""access_log:
- name: envoy.access_loggers.file
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
    path: {os.path.join(work, "access.log")}
    log_format:
      json_format:
{fields}"""
    elif variant == "http-grpc":
        log = """access_log:
- name: envoy.access_loggers.http_grpc
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig
    common_config:
      log_name: bench
      transport_api_version: V3
      grpc_service: { envoy_grpc: { cluster_name: grpc_sink } }"""
    return filters, log


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_wrk(out):
    """requests, rps, socket errors, non-2xx, {percentile: µs}."""
    m = re.search(r"(\d+) requests in", out)
    requests = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    rps = float(m.group(1)) if m else 0.0
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    pct = {}
    for p, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        pct[int(p)] = float(value) * UNITS[unit]
    return requests, rps, errors, non2xx, pct


def wrk(url, connections, seconds):
    argv = pinned(LOAD_CPUS, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    return parse_wrk(out)


def collector_stored(http_addr):
    _, body = http_get(f"http://{http_addr}/metrics")
    m = re.search(r"^warden_records_stored_total (\d+)", body, re.M)
    return int(m.group(1)) if m else 0


class Bench:
    def __init__(self, work):
        self.work = work
        self.procs = Processes()
        self.log = open(os.path.join(work, "children.log"), "w")
        self.upstream_port = free_port()
        self.procs.start(pinned(LOAD_CPUS, [os.path.join(PERF, "demo-upstream"),
                                            f"127.0.0.1:{self.upstream_port}"]), self.log)
        wait_until("the upstream", lambda: http_get(f"http://127.0.0.1:{self.upstream_port}/")[0] == 200)
        prefix = ["taskset", "-c", LOAD_CPUS] if PIN else []
        _, self.collector_grpc_port, self.collector_http = start_collector(
            self.procs, work, self.log, prefix)
        sink = self.procs.start(pinned(LOAD_CPUS, [os.path.join(PERF, "grpc-sink")]), self.log,
                                stdout=subprocess.PIPE, text=True)
        self.sink_port = int(sink.stdout.readline().strip().rsplit(":", 1)[1])
        self.dead_port = free_port()  # nothing listens: the collector-down variant

    def render(self, variant, node_id, admin, listener):
        filters, log = variant_blocks(variant, self.work)
        collector = self.dead_port if variant == "warden-down" else self.collector_grpc_port
        return render(os.path.join(self.work, f"{node_id}.yaml"), node_id, admin, listener,
                      self.upstream_port, collector, self.sink_port, filters, log)

    def run(self, variant, round_no):
        node_id = f"bench-{variant}-{round_no}"
        admin, listener = free_port(), free_port()
        config = self.render(variant, node_id, admin, listener)
        envoy_log = open(os.path.join(self.work, f"{node_id}.log"), "w")
        envoy = self.procs.start(pinned(ENVOY_CPU, [
            ENVOY, "-c", config, "--concurrency", "2" if variant == "warden-2w" else "1",
            "--disable-hot-restart",
            "--log-level", "warn"]), envoy_log, env=filter_token_env(self.work))
        result = {"variant": variant, "round": round_no, "failed": None}
        try:
            wait_until("Envoy /ready", lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200)
            url = f"http://127.0.0.1:{listener}/"
            stored_before = collector_stored(self.collector_http)
            wrk(url, 4, 1)  # warm-up: connections, the VM's code paths
            warm = stat(envoy_stats(f"127.0.0.1:{admin}"), "http.ingress.downstream_rq_completed")
            cpu0 = proc_cpu_seconds(envoy.pid)
            requests, rps, errors, non2xx, pct = wrk(url, CONNECTIONS, DURATION)
            cpu1 = proc_cpu_seconds(envoy.pid)
            u_requests, _, u_errors, u_non2xx, u_pct = wrk(url, 1, UNLOADED)
            result.update(
                requests=requests, rps=rps, errors=errors + u_errors, non2xx=non2xx + u_non2xx,
                cpu_us=(cpu1 - cpu0) / requests * 1e6 if requests else float("nan"),
                p50=pct.get(50), p99=pct.get(99), u_requests=u_requests,
                u_p50=u_pct.get(50), u_p99=u_pct.get(99), rss=proc_rss_mib(envoy.pid))
            # Records: wait until the requests wrk left in flight have completed and the filter
            # has accounted for every request it saw.
            def settled():
                s = envoy_stats(f"127.0.0.1:{admin}")
                completed = stat(s, "http.ingress.downstream_rq_completed")
                if s.get("http.ingress.downstream_rq_active", 0) > 0:
                    return False
                if variant in ("warden", "warden-2w", "warden-alt"):
                    done = sum(stat(s, f"warden.records_{k}") for k in ("sent", "dropped", "rejected"))
                    return done >= completed
                return True
            try:
                wait_until("the filter's records", settled, timeout=15)
            except RuntimeError:
                pass
            # Drops reach the stats at the next tick; Envoy's request counters settle too.
            time.sleep(1.5)
            stats = envoy_stats(f"127.0.0.1:{admin}")
            result["completed"] = stat(stats, "http.ingress.downstream_rq_completed")
            if variant.startswith("warden"):
                for k in ("sent", "dropped", "rejected", "failed"):
                    result[f"records_{k}"] = stat(stats, f"warden.records_{k}")
                result["stored"] = collector_stored(self.collector_http) - stored_before
                result["warm"] = warm
            if variant == "http-grpc":
                result["records_sent"] = stat(stats, "access_logs.grpc_access_log.logs_written")
                result["records_dropped"] = stat(stats, "access_logs.grpc_access_log.logs_dropped")
            # A Wasm VM that failed (a panic, a trap) is logged by Envoy at error level or above.
            envoy_log.flush()
            with open(envoy_log.name, errors="replace") as f:
                result["wasm_failed"] = sum(1 for line in f if re.search(
                    r"\]\[(error|critical)\].*(wasm|Wasm)", line))
        except Exception as e:  # a failed run is reported, not hidden
            result["failed"] = str(e)
        finally:
            self.procs.stop(envoy)
            envoy_log.close()
        return result


def median(values):
    values = [v for v in values if v is not None and v == v]
    return statistics.median(values) if values else float("nan")


def fmt(value, digits=0):
    if value is None or value != value:
        return "n/a"
    return f"{value:,.{digits}f}"


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            model = m.group(1) if m else ""
    except OSError:
        pass
    envoy = subprocess.run([ENVOY, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version: \S+?/(\d+\.\d+\.\d+)", envoy)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "cpu": f"{CPUS} × {model}", "kernel": platform.release(),
        "envoy": m.group(1) if m else "?", "commit": commit + (" (with local changes)" if dirty else ""),
    }


def report(results, started, elapsed):
    ok = [r for r in results if not r["failed"]]
    by = {v: [r for r in ok if r["variant"] == v] for v in VARIANTS}
    med = {v: {k: median([r.get(k) for r in rs]) for k in
               ("rps", "cpu_us", "p50", "p99", "u_p50", "u_p99", "rss")} for v, rs in by.items()}
    base = med.get("bare", {})
    floor = med.get("noop", {})
    native = med.get("http-grpc", {})

    def ratio(v, ref, key="rps"):
        return med[v][key] / ref[key] if ref and ref.get(key) == ref.get(key) and ref.get(key) else float("nan")

    def over(v, ref, key):
        return med[v][key] - ref[key] if ref else float("nan")

    m = machine()
    lines = [
        f"# Gateway benchmark: what the Warden filter costs Envoy",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; run took {elapsed / 60:.1f} min",
        f"- Machine: {m['cpu']}, Linux {m['kernel']}; Envoy {m['envoy']} (V8); Warden {m['commit']}",
        f"- Envoy: 1 worker (2 for warden-2w), {'pinned alone to CPU ' + ENVOY_CPU + '; wrk, upstream, collector and sink on CPU ' + LOAD_CPUS if PIN else 'not pinned'}",
        f"- Load: `wrk -t1 -c{CONNECTIONS}` for {DURATION} s (saturation), then `wrk -t1 -c1` for {UNLOADED} s (unloaded); GET / through Envoy to the demo upstream on loopback",
        f"- {ROUNDS} rounds; each round runs every variant once with a fresh Envoy, order rotated by one each round; figures are medians over rounds",
        f"- Envoy CPU per request: utime+stime of the Envoy process over the saturated run, divided by the requests served",
        "",
        "## Summary (medians)",
        "",
        "| variant | requests/s | vs bare | vs no-op | vs native gRPC log | Envoy CPU/request | over bare | over no-op | p50 / p99 loaded | p50 / p99 unloaded | added unloaded p50 / p99 over no-op | Envoy RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in VARIANTS:
        if not by[v]:
            lines.append(f"| {v} | all runs failed | | | | | | | | | | |")
            continue
        x = med[v]
        lines.append(
            f"| {v} | {fmt(x['rps'])} | {fmt(ratio(v, base), 3)} | {fmt(ratio(v, floor), 3)} | "
            f"{fmt(ratio(v, native), 3)} | {fmt(x['cpu_us'], 1)} µs | {fmt(over(v, base, 'cpu_us'), 1)} µs | "
            f"{fmt(over(v, floor, 'cpu_us'), 1)} µs | {fmt(x['p50'])} / {fmt(x['p99'])} µs | "
            f"{fmt(x['u_p50'])} / {fmt(x['u_p99'])} µs | {fmt(over(v, floor, 'u_p50'))} / "
            f"{fmt(over(v, floor, 'u_p99'))} µs | {fmt(x['rss'], 1)} MiB |")
    samples_sat = [r["requests"] for r in ok]
    samples_unl = [r["u_requests"] for r in ok]
    if ok:
        lines += ["", f"Percentiles are wrk's, over every request of a run: {min(samples_sat):,}–{max(samples_sat):,} "
                      f"samples per saturated run, {min(samples_unl):,}–{max(samples_unl):,} per unloaded run; "
                      f"the table gives the median over rounds of each run's percentile."]
    lines += ["", "## Records (every round)", "",
              "| variant | round | requests Envoy completed | sent (acknowledged) | stored by the collector | dropped | refused | failed calls (retried) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in ok:
        if "records_sent" in r:
            lines.append(f"| {r['variant']} | {r['round']} | {r.get('completed', 0):,} | {r.get('records_sent', 0):,} | "
                         f"{fmt(r.get('stored')) if 'stored' in r else '(sink)'} | {r.get('records_dropped', 0):,} | "
                         f"{r.get('records_rejected', 0):,} | {r.get('records_failed', 0):,} |")
    problems = [r for r in results if r["failed"]]
    errors = [r for r in ok if r["errors"] or r["non2xx"] or r.get("wasm_failed")]
    lines += ["", "## Failures and errors", ""]
    if not problems and not errors:
        lines.append("None: every run completed, no socket errors, no non-2xx responses, no Wasm failures.")
    for r in problems:
        lines.append(f"- {r['variant']} round {r['round']}: FAILED: {r['failed']}")
    for r in errors:
        lines.append(f"- {r['variant']} round {r['round']}: {r['errors']} socket errors, {r['non2xx']} non-2xx, "
                     f"{r.get('wasm_failed', 0)} Wasm failures")
    lines += ["", "## Every run", "",
              "| round | variant | requests/s | CPU/request | p50 / p99 loaded | p50 / p99 unloaded | RSS |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        if r["failed"]:
            lines.append(f"| {r['round']} | {r['variant']} | failed | | | | |")
        else:
            lines.append(f"| {r['round']} | {r['variant']} | {fmt(r['rps'])} | {fmt(r['cpu_us'], 1)} µs | "
                         f"{fmt(r['p50'])} / {fmt(r['p99'])} µs | {fmt(r['u_p50'])} / {fmt(r['u_p99'])} µs | "
                         f"{fmt(r['rss'], 1)} MiB |")
    return "\n".join(lines) + "\n"


def main():
    for tool in ["wrk"] + (["taskset"] if PIN else []):
        if not shutil.which(tool):
            sys.exit(f"bench-gateway: {tool} is not installed (scripts/setup.sh installs wrk)")
    for path in [ENVOY, os.path.join(PERF, "warden"), os.path.join(PERF, "demo-upstream"),
                 os.path.join(PERF, "grpc-sink"), os.path.join(WASM_DIR, "warden_filter.wasm"),
                 os.path.join(WASM_DIR, "warden_noop_filter.wasm")]:
        if not os.path.exists(path):
            sys.exit(f"bench-gateway: {path} is missing (run `make bench`, which builds it)")
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.time()
    work = tempfile.mkdtemp(prefix="warden-bench-")
    bench = Bench(work)
    results = []
    try:
        for round_no in range(1, ROUNDS + 1):
            shift = (round_no - 1) % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                r = bench.run(variant, round_no)
                results.append(r)
                if r["failed"]:
                    print(f"round {round_no} {variant}: FAILED: {r['failed']}", file=sys.stderr)
                else:
                    extra = ""
                    if "records_sent" in r:
                        extra = f", records sent {r['records_sent']:,} dropped {r.get('records_dropped', 0):,}"
                    print(f"round {round_no} {variant}: {r['rps']:,.0f} req/s, {r['cpu_us']:.1f} µs CPU/req, "
                          f"unloaded p50 {fmt(r['u_p50'])} µs{extra}", file=sys.stderr)
    finally:
        bench.procs.stop_all()
    write_report(report(results, started, time.time() - t0), "gateway", started)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
