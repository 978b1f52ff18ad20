#!/usr/bin/env bash
# Checks that the toolchain promises hold: `rust-version` in Cargo.toml and the release pinned in
# rust-toolchain.toml agree, the rustc that cargo runs here is that release, and the rustc that
# builds the filter for wasm32 (Debian's rustc-web, when rustup has no wasm32 target) is not
# older than `rust-version`. `make setup` and `make lint` run it.
#
# Why a script: without rustup nothing reads rust-toolchain.toml, and cargo compares
# `rust-version` only for the packages that inherit it; this script is what enforces both.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "toolchain: $*" >&2; }
fail() {
  echo "toolchain: FAILED: $*" >&2
  exit 1
}
# True when version $1 is older than version $2 (dotted numbers).
older() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]; }
rustc_release() { "$@" --version 2>/dev/null | sed -n 's/^rustc \([0-9][0-9.]*\).*/\1/p'; }

rust_version=$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^rust-version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
pinned=$(sed -n '/^\[toolchain\]/,/^\[/ s/^channel *= *"\([^"]*\)".*/\1/p' rust-toolchain.toml)
[ -n "$rust_version" ] || fail "Cargo.toml has no rust-version in [workspace.package]"
[ -n "$pinned" ] || fail "rust-toolchain.toml has no channel in [toolchain]"
[[ "$pinned" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
  fail "rust-toolchain.toml pins channel \"$pinned\": pin an exact release (for example \"1.95.0\")"
[[ "$rust_version" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] ||
  fail "Cargo.toml's rust-version \"$rust_version\" is not a release number"

# They agree when rust-version names the pinned release: the same major.minor, and the same
# patch if it gives one.
if [ "${pinned#"$rust_version"}" = "$pinned" ] || [[ ! "${pinned#"$rust_version"}" =~ ^(\.[0-9]+)?$ ]]; then
  fail "Cargo.toml says rust-version = \"$rust_version\" but rust-toolchain.toml pins $pinned: make them name the same release"
fi

# The rustc that cargo runs in this repository (through rustup's proxy, the pinned one).
host=$(rustc_release "${RUSTC:-rustc}") || true
[ -n "$host" ] || fail "cannot run rustc (rustup: is toolchain $pinned installed? scripts/setup.sh names it)"
if older "$host" "$rust_version"; then
  fail "rustc here is $host, older than rust-version $rust_version: install Rust $pinned"
fi
if [ "$host" != "$pinned" ]; then
  fail "rustc here is $host but rust-toolchain.toml pins $pinned (without rustup nothing picks the pinned release): build with $pinned, or move the pin and rust-version to $host after \`make test\` passes with it"
fi

# The filter's wasm32 build (scripts/build-filter.sh): rustup's target if installed, else
# Debian's rustc with -Z build-std.
wasm="rustup's wasm32-unknown-unknown target on $host"
if ! { command -v rustup >/dev/null 2>&1 &&
  rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; }; then
  if [ -x /usr/bin/rustc ]; then
    debian=$(rustc_release /usr/bin/rustc) || true
    [ -n "$debian" ] || fail "cannot run /usr/bin/rustc, which builds the filter for wasm32"
    if older "$debian" "$rust_version"; then
      fail "Debian's rustc $debian builds the filter for wasm32 but is older than rust-version $rust_version"
    fi
    wasm="Debian's rustc $debian with -Z build-std"
  else
    wasm="not installed yet (scripts/setup.sh)"
  fi
fi

# cargo holds a package to rust-version only if its manifest inherits it
# (`rust-version.workspace = true`).
unbound=""
if metadata=$(cargo metadata --no-deps --format-version 1 2>/dev/null); then
  unbound=$(python3 -c '
import json, sys
print(" ".join(sorted(p["name"] for p in json.load(sys.stdin)["packages"] if not p.get("rust_version"))))
' <<<"$metadata") || true
fi
[ -z "$unbound" ] ||
  say "note: these packages do not inherit rust-version (rust-version.workspace = true), so cargo does not enforce it for them: $unbound"

say "rustc $host (rust-toolchain.toml $pinned, rust-version $rust_version); filter for wasm32: $wasm"
