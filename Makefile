# novelstream — `make demo` runs the local demo, `make test` runs the tests. Both install what
# they need first (`make setup`, idempotent: quick when everything is already there).
SHELL := /bin/bash
CACHE ?= $(or $(NOVELSTREAM_CACHE),$(HOME)/.cache/novelstream)
export NOVELSTREAM_CACHE := $(CACHE)
# libtorch as `make setup` installed it (CPU libraries, or the CUDA venv with NOVELSTREAM_TORCH=cuda).
export LIBTORCH ?= $(shell readlink -f $(CACHE)/libtorch 2>/dev/null)
# The broker scripts/setup.sh built, through the link it makes to that version.
export NOVELSTREAM_TANSU ?= $(CACHE)/tansu/bin/tansu
CARGO ?= cargo
CARGO_FLAGS ?= --release --locked

.PHONY: setup build demo test lint clean
setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build $(CARGO_FLAGS)

demo: build
	@bash scripts/demo.sh

test: setup
	$(CARGO) test $(CARGO_FLAGS) --workspace

lint: setup
	$(CARGO) fmt --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
