# Two commands do everything on a fresh machine:
#   make demo   - set up, then run the whole system end to end on embedded defaults
#   make test   - set up, then run the test suite
#   make test-cluster - the multi-host test bed (network namespaces; needs root)
# Set-up is a virtual environment in .venv; torch is installed first, pinned, because an
# unpinned torch (asked for by transformers or sentence-transformers) pulls CUDA builds.

PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo ui test test-cluster lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamrank demo

ui: $(STAMP)
	$(BIN)/streamrank demo --ui

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-cluster: $(STAMP)
	$(BIN)/python -m pytest -m cluster $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .streamrank .pytest_cache
