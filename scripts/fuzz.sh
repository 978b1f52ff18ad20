#!/usr/bin/env bash
# Coverage-guided fuzzing of Warden's hostile-input code (fuzz/, libFuzzer): builds the targets,
# then runs each for a bounded time and fails if any found a crash.
#
#   scripts/fuzz.sh [NAME...]          each target for $FUZZ_SECONDS seconds (default 60): make fuzz
#   scripts/fuzz.sh smoke [NAME...]    each for $FUZZ_SMOKE_SECONDS seconds (default 10): make test
#
# Targets: denylist, redaction, block_decode, config, export_batch, k8s_audit (fuzz/fuzz_targets/*.rs say
# what each checks). The corpus of NAME is fuzz/corpus/NAME: the committed seed-* files plus what
# the fuzzer finds (ignored by git; keep it between runs, it is where the coverage is). A crash is
# written to fuzz/artifacts/NAME/ and printed with the command that replays it; then the script
# exits 1, after running the other targets.
#
# How the targets are built: with the stable toolchain, `cargo build --release` and the
# instrumentation flags cargo-fuzz passes (SanitizerCoverage: 8-bit edge counters, the PC table
# and comparison tracing, which libFuzzer needs to steer), plus `--cfg fuzzing`. Not cargo-fuzz
# itself: it is one more tool to build on every fresh machine, and its default AddressSanitizer
# needs a nightly compiler, which this project cannot fetch; the project's code forbids `unsafe`,
# so ASan would mostly watch the C code of SQLite, which libFuzzer does not instrument here either.
# `--target` is explicit so that the flags reach the targets only, not build scripts or proc
# macros (which would then need libFuzzer's runtime to link). Debug assertions and overflow checks
# are on in the crate's release profile: an overflow in the project is a crash.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "fuzz: $*" >&2; }

mode=full
if [ "${1:-}" = smoke ]; then
  mode=smoke
  shift
fi
if [ "$mode" = smoke ]; then
  seconds=${FUZZ_SMOKE_SECONDS:-10}
else
  seconds=${FUZZ_SECONDS:-60}
fi
all=(denylist redaction block_decode config export_batch k8s_audit)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || { say "no target $t (targets: ${all[*]})"; exit 2; }
done

command -v c++ >/dev/null 2>&1 || { say "libFuzzer builds with a C++ compiler: run make setup"; exit 1; }
triple=$(rustc -vV | sed -n 's/^host: //p')
flags=(
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  --cfg fuzzing
)
say "building ${targets[*]} (fuzz/target)"
started=$(date +%s)
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
# No --locked: fuzz/Cargo.lock is the project's lock plus libFuzzer's crates, and must not stop
# the fuzzers when a project crate gains a dependency (cargo then adds it and changes nothing else).
env -u CARGO_ENCODED_RUSTFLAGS RUSTFLAGS="${flags[*]}" \
  cargo build --quiet --release --manifest-path fuzz/Cargo.toml --target "$triple" \
  --target-dir fuzz/target "${bins[@]}"
say "built in $(( $(date +%s) - started )) s"

work=$(mktemp -d "${TMPDIR:-/tmp}/warden-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The config target's dictionary: every field name of both configurations, so that libFuzzer
# writes keys the parsers know instead of guessing them a byte at a time.
{
  grep -hoE '^\s+pub [a-z_0-9]+:' collector/src/config.rs filter/src/config.rs \
    | sed -E 's/^\s+pub ([a-z_0-9]+):/"\1"/'
  printf '%s\n' '"["' '"]"' '"[["' '"]]"' '"="' '"{"' '"}"' '":"' '","' '"\""' '"\x0A"' \
    '"true"' '"false"' '"30d"' '"15m"' '"127.0.0.1:0"' '"0.0.0.0:0"' '"[::1]:0"' '"*"'
} | sort -u > "$work/config.dict"
# Its seeds also include the project's own example configurations, as they are today.
mkdir -p "$work/config-seeds"
cp collector/warden.example.toml envoy/demo-warden.toml "$work/config-seeds/"

failed=()
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  artifacts=fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts" "$work/tmp-$t"
  extra=()
  args=()
  if [ "$t" = config ]; then
    extra=("$work/config-seeds")
    args=(-dict="$work/config.dict" -max_len=8192)
  fi
  log=$work/$t.log
  set +e
  # TMPDIR: block_decode writes its SQLite files there, removed with $work.
  TMPDIR="$work/tmp-$t" "fuzz/target/$triple/release/$t" "$corpus" "${extra[@]}" \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "${args[@]}" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || true)
  if [ $rc -eq 0 ]; then
    say "$t: ok, ${runs:-?} runs in ${seconds} s (${rate:-?}/s), ${cov:-?} edges, corpus $(find "$corpus" -type f | wc -l) inputs"
  else
    failed+=("$t")
    say "$t: FAILED (exit $rc); the end of its log:"
    grep -vE '^#[0-9]+\s+(NEW|REDUCE|pulse|INITED)' "$log" | tail -40 >&2
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [ -n "$crash" ]; then
      say "$t: crashing input: $crash"
      say "replay it: fuzz/target/$triple/release/$t $crash"
    fi
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  say "crashes in: ${failed[*]}"
  exit 1
fi
