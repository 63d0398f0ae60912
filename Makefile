# fsar: set-up, tests and the main job. Only Python >= 3.10, pip and make are needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fsar-installed
DATA   ?= data
SYNTH  ?= $(DATA)/synth

.PHONY: help setup test test-all reproduce clean

help:
	@echo "make reproduce   set up, then run the main job on the built-in synthetic benchmark"
	@echo "make test        set up, then run the default test suite (CPU, no network)"
	@echo "make test-all    also the slow tests (gpu tests: $(BIN)/pytest -m gpu)"
	@echo "make setup       create $(VENV) and install fsar with its dependencies"
	@echo "make clean       remove $(VENV), generated data and caches"

setup: $(STAMP)

# Re-installs only when pyproject.toml changes; the install is editable, so code edits need nothing.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

test: setup
	$(BIN)/python -m pytest

test-all: setup
	$(BIN)/python -m pytest -m 'not gpu'

reproduce: setup
	$(BIN)/fsar-data synth $(SYNTH)
	@echo "synthetic benchmark ready in $(SYNTH) (classes.json, splits/, videos/)"

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
