# numanet: `make demo` runs a real node in a box, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=

.PHONY: venv debian-packages test lint protos protos-check bench fuzz mutate demo app-pyz relay clean

$(VENV)/.installed: setup.cfg pyproject.toml
	@# Debian's python3 needs python3-venv for `-m venv` (ensurepip); install it when missing.
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || apt-get install -y -qq --no-install-recommends python3-venv
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The CNI plugin in C (cni/relay.c): what cni.install installs as /opt/cni/bin/numanet when
# it exists. Static, so the image's binary runs on any host; without a C compiler the
# plugin stays the Python shim (cni/shim.py), and the relay's tests skip.
CC ?= cc
RELAY := build/numanet-relay
RELAY_CFLAGS := -O2 -std=c11 -Wall -Wextra -Werror
relay: $(RELAY)
$(RELAY): cni/relay.c
	@mkdir -p build
	@if command -v $(CC) >/dev/null 2>&1; then \
	    $(CC) $(RELAY_CFLAGS) -static -o $@ $< 2>/dev/null || $(CC) $(RELAY_CFLAGS) -o $@ $< ; \
	else echo "relay: no C compiler ($(CC)): the CNI plugin stays the Python shim"; fi

# The Debian packages the tests run for real (OVS-DPDK, dpdk-testpmd, host-local, ...),
# installed when missing.
debian-packages:
	@tools/debian-packages.sh

test: debian-packages venv relay
	@command -v kubectl >/dev/null || [ -x $(VENV)/bin/kubectl ] || sh deploy/tools/fetch-kubectl.sh $(VENV)/bin/kubectl
	$(PY) -m pytest -q $(PYTEST_ARGS)

PACKAGES := numa vswitch protos deviceplugin dra cni agent webhook demo app

# ruff, mypy, and the packages' direction (.importlinter, docs/architecture.md).
lint: venv
	$(PY) -m ruff check $(filter-out protos,$(PACKAGES)) tests bench tools
	$(PY) -m mypy $(filter-out protos,$(PACKAGES))
	$(VENV)/bin/lint-imports --no-cache

protos: venv
	PYTHON=$(PY) protos/generate.sh

# Fails when the checked-in generated modules differ from what the .proto files give.
protos-check: venv
	PYTHON=$(PY) $(PY) -m pytest -q tests/protos

# Mutation testing of the core modules (tools/mutate.py; minutes, not run in CI): score per
# module and every surviving mutant; fails when a module scores under 90 %.
MUTATE_ARGS ?=
mutate: venv
	nice -n 15 $(PY) tools/mutate.py $(MUTATE_ARGS)

bench: venv relay
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Random hostile CNI calls against a real agent (tests/cni/test_fuzz.py), FUZZ_SECONDS per
# target (the shim's environment and stdin; raw frames on the agent's socket), with figures.
FUZZ_SECONDS ?= 300
fuzz: venv
	NUMANET_FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -q -s tests/cni/test_fuzz.py

# --install: apt-get the Debian packages the demo needs (OVS-DPDK, dpdk-testpmd, CNI
# plugins) when they are missing; DEMO_ARGS= (empty) only names them instead.
DEMO_ARGS ?= --install
demo: venv relay
	$(PY) -m agent.cli demo $(DEMO_ARGS)

# The pod-side kit as one file for app images: build/numanet-app.pyz (python3 >= 3.9).
app-pyz:
	PYTHON=$(PYTHON) deploy/tools/build-app-pyz.sh build/numanet-app.pyz

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache mutants
