# Two commands take a fresh clone to a running demo and a green test suite:
#   make serve   install into .venv if needed, then serve on 127.0.0.1:8000
#   make test    install the test extras if needed, then run the whole suite
# Each target installs only when pyproject.toml changed since the last install.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install serve test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml codec/_rans.c | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $@

install: $(VENV)/.installed

serve: install
	$(BIN)/python -m server

test: $(VENV)/.installed-test
	scripts/ensure-system-packages
	@# the C coder (codec/_rans.c), if the compiler came with the system packages just now
	@ls codec/_rans.*.so >/dev/null 2>&1 || $(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check codec client protocol server bench tests
	$(BIN)/hadolint Dockerfile
