#!/usr/bin/env bash
# Builds the Warden filter for wasm32-unknown-unknown and prints the path of its .wasm. The
# benchmarks' no-op and probe filters (bench/) are built beside it, with the same toolchain and
# profile, so that they are a fair floor.
# `build-filter.sh clippy` runs clippy on the same crates for wasm32 instead (-D warnings): the
# filter's ABI module exists only there.
#
# Route 1: the rustup toolchain, when its wasm32 target is installed.
# Route 2: Debian's Rust (rustc-web, with std sources) and -Z build-std, for machines where
#          `rustup target add` cannot download (see ../shared/ENVIRONMENT.md). scripts/setup.sh
#          installs it.
# Both routes write to target/wasm so they never invalidate the host build in target/.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="$PWD/target/wasm"
target=wasm32-unknown-unknown
out="$CARGO_TARGET_DIR/$target/release/warden_filter.wasm"
packages=(-p warden-filter -p warden-noop-filter -p warden-probe-filter)
action=(build)
lints=()
if [ "${1:-}" = clippy ]; then
  action=(clippy)
  lints=(-- -D warnings)
fi

if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  echo "build-filter: using the rustup toolchain's installed $target target" >&2
  cargo "${action[@]}" --release --locked --target "$target" "${packages[@]}" "${lints[@]}" >&2
elif [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] && [ -d /usr/lib/rustlib/src ]; then
  echo "build-filter: $target is not installed for rustup; using Debian's rustc $(/usr/bin/rustc --version | cut -d' ' -f2) with -Z build-std" >&2
  PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo "${action[@]}" --release --locked \
    --target "$target" -Z build-std=std,panic_abort "${packages[@]}" "${lints[@]}" >&2
else
  echo "build-filter: no way to build $target: neither 'rustup target add $target' nor Debian's rustc-web (run scripts/setup.sh)" >&2
  exit 1
fi
[ "${1:-}" = clippy ] || echo "$out"
