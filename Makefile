# The two commands of the README: `make serve` and `make test`. Each installs what it needs.
VENV ?= .venv
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench redis-server clean

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	@touch $(STAMP)

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server >/dev/null; }

serve: $(STAMP) redis-server
	$(VENV)/bin/mailers serve

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

# The suite in TEST_WORKERS processes (pytest-xdist), each with its own Redis and Ray (tests/conftest.py);
# then, alone on the machine, the tests that measure latency (marked `alone`; exit 5: none selected).
# 2: the parallel part takes ~7 min instead of ~12. A test may not leave a named actor running in its
# worker's Ray (tests/conftest.py checks after each test; docs/architecture.md, "Tests").
TEST_WORKERS ?= 2
test: $(STAMP) redis-server lint
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider --durations=20 -n $(TEST_WORKERS) -m "not alone" $(PYTEST_ARGS)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -m alone $(PYTEST_ARGS) || [ $$? -eq 5 ]

bench: $(STAMP) redis-server
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
