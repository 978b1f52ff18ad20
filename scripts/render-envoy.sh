#!/usr/bin/env bash
# Renders an Envoy bootstrap template to stdout, replacing each ${NAME} with its value.
# Usage: render-envoy.sh TEMPLATE NAME=VALUE... [--without-filter] [--without-collector-tls]
# --without-filter drops the block between "# BEGIN warden-filter" and "# END warden-filter"
# (benchmarks use it to measure Envoy without the filter); --without-collector-tls drops the
# "collector-tls" block (plaintext to a collector on loopback).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 TEMPLATE NAME=VALUE... [--without-filter] [--without-collector-tls]" >&2; exit 2; }
template=$1; shift
[ -f "$template" ] || { echo "render-envoy: no template at $template" >&2; exit 1; }
TEMPLATE="$template" python3 - "$@" <<'PY'
import os, re, sys
text = open(os.environ["TEMPLATE"]).read()
values = {}
for arg in sys.argv[1:]:
    if arg == "--without-filter":
        text = re.sub(r"\n[ \t]*# BEGIN warden-filter.*?# END warden-filter[^\n]*", "", text, flags=re.S)
        continue
    if arg == "--without-collector-tls":
        text = re.sub(r"\n[ \t]*# BEGIN collector-tls.*?# END collector-tls[^\n]*", "", text, flags=re.S)
        continue
    name, sep, value = arg.partition("=")
    if not sep:
        sys.exit(f"render-envoy: {arg!r} is not NAME=VALUE")
    values[name] = value
missing = sorted(set(re.findall(r"\$\{([A-Z_]+)\}", text)) - values.keys())
if missing:
    sys.exit(f"render-envoy: no value for {', '.join(missing)} in {os.environ['TEMPLATE']}")
sys.stdout.write(re.sub(r"\$\{([A-Z_]+)\}", lambda m: values[m.group(1)], text))
PY
