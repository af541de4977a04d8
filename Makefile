# numanet: `make demo` runs a real node in a box, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=

.PHONY: venv test lint protos protos-check bench demo mutate clean

$(VENV)/.installed: setup.cfg pyproject.toml
	@# Debian's python3 needs python3-venv for `-m venv` (ensurepip); install it when missing.
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || apt-get install -y -qq --no-install-recommends python3-venv
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check numa vswitch deviceplugin cni tests bench tools
	$(PY) -m mypy numa vswitch deviceplugin cni

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

bench: venv
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# --install: apt-get the Debian packages the demo needs (OVS-DPDK, dpdk-testpmd, CNI
# plugins) when they are missing; DEMO_ARGS= (empty) only names them instead.
DEMO_ARGS ?= --install
demo: venv
	$(PY) -m deviceplugin.cli demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache mutants
