# fondation-agent — see README.md. `make demo` runs a real job end to end; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
COURSE_CLI := examples/course-cli
PYTEST_ARGS ?=

.PHONY: install test test-convex test-python test-unit test-integration test-rules lint backend demo bench clean deb print-deb

install: $(VENV)/.installed node_modules/.installed $(COURSE_CLI)/node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# The demo CLI's Claude engine: the Claude Agent SDK with its bundled Claude Code (~475 MB unpacked).
$(COURSE_CLI)/node_modules/.installed: $(COURSE_CLI)/package.json $(COURSE_CLI)/package-lock.json
	cd $(COURSE_CLI) && npm ci --no-audit --no-fund
	touch $@

test: install lint test-rules test-convex test-python

test-convex: node_modules/.installed
	npx vitest run

# Every Python test but the VM tier's (pyproject's addopts deselect it). The tiers are directories:
# tests/ the unit tests (no backend, no agent process: well under a minute), tests/integration/.
test-python: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest --ignore=tests/integration tests $(PYTEST_ARGS)

test-integration: install
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

# The alert rules shipped in the package, and their unit tests (promtool: Debian's prometheus package).
RULES := monitoring/prometheus
test-rules:
	@command -v promtool >/dev/null || { echo "make test-rules: no promtool; run: apt-get install --no-install-recommends prometheus" >&2; exit 2; }
	promtool check rules $(RULES)/fondation-agent.rules.yml
	cd $(RULES) && promtool test rules fondation-agent.rules.test.yml

lint: install
	$(BIN)/ruff check fondation_agent tests examples bench localconvex vm
	npx tsc --noEmit -p .

# The local Convex backend on 127.0.0.1:3210 (state kept in .demo/backend.json).
backend: node_modules/.installed
	@mkdir -p .demo
	@test -n "$$FONDATION_WORKER_TOKEN" || echo "note: FONDATION_WORKER_TOKEN is unset, so every worker call is refused"
	@test -n "$$CONVEX_ADMIN_KEY" || echo "note: CONVEX_ADMIN_KEY is unset, so operator:* (the fondation-agent queue commands) cannot be reached"
	npx tsx localconvex/server.ts --address 127.0.0.1:3210 --state .demo/backend.json

demo: install
	$(BIN)/python -m examples.demo

bench: install
	$(BIN)/python -m bench

# The Debian package (dh-virtualenv; on Debian 12): dist/fondation-agent_<version>_amd64.deb (docs/operations.md),
# rebuilt only when its sources changed.
VERSION := $(shell $(PYTHON) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
DEB := dist/fondation-agent_$(VERSION)_amd64.deb
deb: $(DEB)
print-deb:
	@echo $(DEB)
# Its prerequisites include the docs it ships (packaging/debian/fondation-agent.docs, the one list).
$(DEB): Makefile pyproject.toml $(shell cat packaging/debian/fondation-agent.docs) \
		$(shell find fondation_agent packaging systemd examples/course-cli monitoring -type f -not -name '*.pyc' -not -path '*/node_modules/*')
	packaging/build-deb.sh $(VERSION)

# The VM tier (vm/, tests/system/): the .deb installed in a Debian 12 guest with a real systemd,
# booted by qemu (KVM when it works, else TCG). Needs root. The base image is built once (~3 min)
# and cached in $FONDATION_VM_CACHE (default /var/cache/fondation-agent-vm); the .deb is built by
# `make deb` when its sources changed ($FONDATION_AGENT_DEB names another).
SYSTEM_TEST_ARGS ?=
.PHONY: system-test
# The whole tier took 45 min on a machine busy with another VM, ~30 min alone (TCG): the timeout leaves room.
system-test: install
	$(BIN)/python vm/qemu.py build
	timeout -k 30 3600 $(BIN)/python -m pytest -m system tests/system --timeout=900 $(SYSTEM_TEST_ARGS)

clean:
	rm -rf .demo build dist *.egg-info

# The Ansible role (ansible/, docs/ansible.md): lint, and its Molecule scenario on the VM tier's image —
# the .deb deployed by site.yml to a qemu guest, then real jobs end to end. Needs root; TCG makes it the longest step of CI (the whole role runs twice, parts of it seven times; two real Claude Code jobs
# complete, a third is claimed). `molecule side-effect` (scale to one worker and back) is run by hand: CI's time is short.
ANSIBLE_VENV := ansible/.venv
.PHONY: ansible-lint molecule
$(ANSIBLE_VENV)/.installed: ansible/requirements.txt
	$(PYTHON) -m venv $(ANSIBLE_VENV)
	$(ANSIBLE_VENV)/bin/pip install --quiet --upgrade pip
	$(ANSIBLE_VENV)/bin/pip install --quiet -r ansible/requirements.txt
	touch $@

ansible-lint: $(ANSIBLE_VENV)/.installed
	cd ansible && PATH="$(CURDIR)/$(ANSIBLE_VENV)/bin:$$PATH" ansible-lint

molecule: ansible-lint install deb
	$(BIN)/python vm/qemu.py build
	cd ansible && PATH="$(CURDIR)/$(ANSIBLE_VENV)/bin:$$PATH" \
		FONDATION_AGENT_DEB="$(CURDIR)/$(DEB)" \
		timeout -k 30 4800 molecule test
