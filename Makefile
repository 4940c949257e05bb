# The two commands in the README: `make demo` and `make test`. Both build the virtual
# environment on first use, so a fresh machine needs only Python 3.11 and make.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= labinterp-demo

.PHONY: demo test lint system-deps bench

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Debian packages, installed when we can (root with apt), else skipped with a word: see
# .ci/system-deps.sh. The demo needs only the optional font subsetter; the tests also use
# chromium (the audit report's browser test skips without it).
system-deps:
	@sh .ci/system-deps.sh

demo: $(STAMP)
	@sh .ci/system-deps.sh libharfbuzz-subset0
	$(BIN)/labinterp demo -o $(DEMO_OUT)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -n 2

lint: $(STAMP)
	$(BIN)/ruff check labinterp tests benchmarks
	$(BIN)/ruff format --check labinterp tests benchmarks
	$(BIN)/mypy
