# swift-rs: the two commands of the README, and the pieces they are made of.
#   make demo   set up, then run the main job on the bundled default
#   make test   set up, then run every test
# SWIFT_RS_CACHE (default ~/.cache/swift-rs) holds the virtualenv, assets and converted models.

SHELL := /bin/bash
CARGO ?= cargo
SWIFT := target/release/swift
CACHE ?= $(or $(SWIFT_RS_CACHE),$(HOME)/.cache/swift-rs)
MODEL := $(CACHE)/models/SmolLM2-135M-Instruct

.PHONY: setup build test demo bench fuzz lint fmt llama-cpp test-llama-cpp

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release

# One build profile (release) for everything, so `make setup`'s build is reused and the numeric
# code runs at full speed in tests. Plugin fixtures and the tensor engine library (which `cargo
# test` does not build: it is a cdylib) are built by the tests themselves (tests/common.rs), into
# the same target directory.
# The llama_cpp backend's plugin is built first (`llama-cpp`) and its end-to-end tests run with
# the rest (tests/llama_cpp.rs, behind swift-host's `llama-cpp-tests` feature).
test: setup llama-cpp
	$(CARGO) test --release --workspace --exclude swift-example-plugin --exclude swift-backend-llama-cpp $(foreach f,$(wildcard tests/fixtures/plugins/*),--exclude swift-fixture-$(notdir $(f))) --features swift-host/llama-cpp-tests

# The llama_cpp backend plugin: not a default member (a plain `cargo build` stays quick); it builds
# into its own target folder (its build never holds the workspace's build lock) with the
# instruction sets of .cargo/config.toml and only the llama.cpp libraries the binding links
# (plugins/llama-cpp/cmake/lean.cmake).
# The binding's build script watches GGML_* but neither the CMAKE_* variables nor the file
# lean.cmake, so a changed one would leave an existing build stale: a stamp holds the hash of
# both; when it differs (or is missing beside an existing llama.cpp build), llama-cpp-sys-2's
# build is cleaned first and llama.cpp rebuilt.
LLAMA_CPP_TARGET := target/llama-cpp
LLAMA_CPP_STAMP := $(LLAMA_CPP_TARGET)/llama-cpp-cmake-inputs.stamp
llama-cpp: setup
	@want="$$( (cat plugins/llama-cpp/cmake/lean.cmake; grep -E '^(CMAKE_|GGML_)' .cargo/config.toml; env | grep -E '^(CMAKE_|GGML_)' | sort) | sha256sum | cut -d' ' -f1)"; \
	built="$$(ls -d $(LLAMA_CPP_TARGET)/release/build/llama-cpp-sys-2-* 2>/dev/null | head -n 1)"; \
	have="$$(cat $(LLAMA_CPP_STAMP) 2>/dev/null)"; \
	if [ -n "$$built" ] && [ "$$have" != "$$want" ]; then \
		echo "llama-cpp: lean.cmake or the CMAKE_*/GGML_* settings changed since the last build (stamp $(LLAMA_CPP_STAMP)): rebuilding llama.cpp"; \
		CARGO_TARGET_DIR=$(LLAMA_CPP_TARGET) $(CARGO) clean --release -p llama-cpp-sys-2 || exit 1; \
	fi; \
	CARGO_TARGET_DIR=$(LLAMA_CPP_TARGET) $(CARGO) build --release -p swift-backend-llama-cpp || exit 1; \
	echo "$$want" > $(LLAMA_CPP_STAMP)

# Only its end-to-end tests.
test-llama-cpp: llama-cpp
	$(CARGO) test --release -p swift-host --features llama-cpp-tests --test llama_cpp

demo: setup
	@bash scripts/demo.sh

bench: setup
	@bash scripts/bench.sh

# The parsers' property tests with many cases (PROPTEST_CASES, default 20000); `make bench` runs it.
fuzz:
	@bash scripts/fuzz.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
