# novelstream — `make demo` runs the local demo, `make test` runs the tests. Both install what
# they need first (`make setup` for the demo, its `install` part for the tests; idempotent: quick
# when everything is already there).
SHELL := /bin/bash
CACHE ?= $(or $(NOVELSTREAM_CACHE),$(HOME)/.cache/novelstream)
export NOVELSTREAM_CACHE := $(CACHE)
# libtorch as `make setup` installed it (CPU libraries, or the CUDA venv with NOVELSTREAM_TORCH=cuda).
export LIBTORCH ?= $(shell readlink -f $(CACHE)/libtorch 2>/dev/null)
# The broker scripts/setup.sh built, through the link it makes to that version.
export NOVELSTREAM_TANSU ?= $(CACHE)/tansu/bin/tansu
CARGO ?= cargo
CARGO_FLAGS ?= --release --locked

.PHONY: setup install build demo test lint clean
# Everything the demo needs: what scripts/setup.sh installs, the build, and the model the demo
# starts from (trained once on the known digits alone: scripts/demo-model.sh).
setup: install
	$(CARGO) build $(CARGO_FLAGS)
	@bash scripts/demo-model.sh

install:
	@bash scripts/setup.sh

build: install
	$(CARGO) build $(CARGO_FLAGS)

demo: setup
	@bash scripts/demo.sh

test: install
	$(CARGO) test $(CARGO_FLAGS) --workspace

lint: install
	$(CARGO) fmt --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
