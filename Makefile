# Entry points for developers and CI. `make setup` is idempotent and fast once the tools are
# cached, so the targets that need the tools simply run it first.
DENO := .tools/bin/deno
# Tools built by setup (deno, cnitool, gobgpd, gobgp) come first for tasks and the tests they spawn.
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.PHONY: setup test demo check fmt lint bench compile

setup:
	bash scripts/setup.sh

test: setup
	$(DENO) task test

# The demo runs the built executable, so the CNI plugin it installs is flock itself.
demo: compile
	dist/flock demo

check: setup
	$(DENO) fmt --check
	$(DENO) lint
	$(DENO) task check

fmt: setup
	$(DENO) fmt

lint: setup
	$(DENO) lint

bench: setup
	$(DENO) task bench

compile: setup
	$(DENO) task compile
