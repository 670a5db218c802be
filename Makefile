# sar — quick start: `make train` (embedded synthetic default) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
ARGS   ?=

.PHONY: install train test test-fast bench lint clean

# The venv is (re)built when pyproject.toml or setup.py changes.
$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

train: $(VENV)/.installed
	$(PY) -m sar.train $(ARGS)

# The suite runs on every core (pytest-xdist; tests/conftest.py gives each worker its share of threads).
# One process: make test ARGS="-n 0".
test: $(VENV)/.installed
	$(PY) -m pytest -q -n auto $(ARGS)

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -n auto -m "not slow" $(ARGS)

bench: $(VENV)/.installed
	$(PY) -m sar.bench $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
