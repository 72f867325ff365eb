# `make test` and `make train` create .venv (if missing), install the project into it, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test train

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(BIN)/python -m pytest

train: setup
	$(BIN)/python -m trpo.train env=HalfCheetah-v4
