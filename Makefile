# fondation-agent — see README.md. `make demo` runs a real job end to end; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install test test-convex test-python lint backend demo bench clean deb

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

test: install lint test-convex test-python

test-convex: node_modules/.installed
	npx vitest run

test-python: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check fondation_agent tests examples bench localconvex vm
	npx tsc --noEmit -p .

# The local Convex backend on 127.0.0.1:3210 (state kept in .demo/backend.json).
backend: node_modules/.installed
	@mkdir -p .demo
	@test -n "$$FONDATION_WORKER_TOKEN" || echo "note: FONDATION_WORKER_TOKEN is unset, so every worker call is refused"
	npx tsx localconvex/server.ts --address 127.0.0.1:3210 --state .demo/backend.json

demo: install
	$(BIN)/python -m examples.demo

bench: install
	$(BIN)/python -m bench

# The Debian package (dh-virtualenv; on Debian 12): dist/fondation-agent_<version>_amd64.deb (docs/operations.md).
deb:
	packaging/build-deb.sh

# The VM tier (vm/, tests/system/): the .deb installed in a Debian 12 guest with a real systemd,
# booted by qemu (KVM when it works, else TCG). Needs root. The base image is built once (~3 min)
# and cached in $FONDATION_VM_CACHE (default /var/cache/fondation-agent-vm); the .deb is built by
# `make deb` unless dist/ holds one newer than the sources ($FONDATION_AGENT_DEB names another).
SYSTEM_TEST_ARGS ?=
.PHONY: system-test
system-test: install
	$(BIN)/python vm/qemu.py build
	timeout -k 30 2700 $(BIN)/python -m pytest -m system tests/system --timeout=900 $(SYSTEM_TEST_ARGS)

clean:
	rm -rf .demo build dist *.egg-info
