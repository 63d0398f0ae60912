# fsar: set-up, tests and the main job. Only Python >= 3.10, pip and make are needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fsar-installed
DATA   ?= data
SYNTH  ?= $(DATA)/synth
SHARDS ?= $(DATA)/synth-shards
CACHE  ?= $(DATA)/synth-cache.h5
BACKBONE ?= fsar-tiny-vit
RESULTS ?= results
RUNS   ?= $(RESULTS)/runs

.PHONY: help setup test test-all reproduce bench-decode bench-embed bench-evaluate bench-train clean

help:
	@echo "make reproduce   set up, then run the main job on the built-in synthetic benchmark"
	@echo "make test        set up, then run the default test suite (CPU, no network)"
	@echo "make test-all    also the slow tests (gpu tests: $(BIN)/pytest -m gpu)"
	@echo "make bench-decode  shard stage vs raw decoders (installs the [bench] extras)"
	@echo "make bench-embed   embed stage vs a bare encode_image loop (after make reproduce)"
	@echo "make bench-evaluate  batched OTAM episodes vs per-episode loops"
	@echo "make bench-train   time per training episode, adapter vs finetune mode (after make reproduce)"
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
	$(BIN)/fsar-data shard synth --root $(SYNTH) --out $(SHARDS) --short-side 144
	$(BIN)/fsar-data embed --shards $(SHARDS) --cache $(CACHE) --backbone $(BACKBONE) --pretrained none
	for m in protonet otam zero-shot; do for k in 1 5; do \
	  $(BIN)/fsar-eval $(RESULTS)/baselines --cache $(CACHE) --method $$m --shot $$k || exit 1; done; done
	for k in 1 5; do run=$(RUNS)/clip-fsar-adapter-5w$${k}s; \
	  if [ -f $$run/summary.json ]; then echo "$$run is trained already"; else \
	    $(BIN)/fsar-train --mode adapter --cache $(CACHE) --method clip-fsar --config synth --shot $$k --out $$run \
	      $$( [ -f $$run/config.json ] && echo --resume ) || exit 1; fi; \
	  $(BIN)/fsar-eval $$run --shot $$k || exit 1; \
	  $(BIN)/fsar-eval $$run --shot $$k --fusion-beta 0.9 || exit 1; done
	@echo "synthetic benchmark in $(SYNTH), its WebDataset shards in $(SHARDS), embeddings in $(CACHE),"
	@echo "frozen-backbone baselines in $(RESULTS)/baselines, trained CLIP-FSAR runs in $(RUNS)"

$(VENV)/.fsar-bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	@touch $@

bench-decode: $(VENV)/.fsar-bench-installed
	$(BIN)/python -m pipeline.bench.decode --out $(RESULTS)/bench-decode

bench-evaluate: setup
	$(BIN)/python -m pipeline.bench.evaluate --out $(RESULTS)/bench-evaluate

bench-embed: setup
	@test -f $(SHARDS)/manifest.json || $(MAKE) reproduce
	$(BIN)/python -m pipeline.bench.embed --shards $(SHARDS) --backbone $(BACKBONE) --out $(RESULTS)/bench-embed

bench-train: setup
	@test -f $(CACHE) || $(MAKE) reproduce
	$(BIN)/python -m pipeline.bench.train_step --shards $(SHARDS) --cache $(CACHE) --out $(RESULTS)/bench-train

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
