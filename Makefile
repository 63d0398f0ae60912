# fsar: set-up, tests and the main job. Only Python >= 3.10, pip and make are needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fsar-installed
DATA   ?= data
# The built-in synthetic benchmark by default; a real one with DATASET=ssv2 ROOT=/path/to/videos BACKBONE=ViT-B/16.
DATASET ?= synth
ROOT   ?=
SHARDS ?= $(DATA)/$(DATASET)-shards
CACHE  ?= $(DATA)/$(DATASET)-cache.h5
BACKBONE ?= fsar-micro-vit
BENCH_BACKBONE ?= fsar-tiny-vit
RESULTS ?= results
# Extra fsar-reproduce options, e.g. REPRODUCE_ARGS="--splits /path/to/splits --methods clip-fsar".
REPRODUCE_ARGS ?=

.PHONY: help setup test test-fast test-all chaos reproduce report bench bench-decode bench-embed bench-evaluate bench-train clean

help:
	@echo "make reproduce   set up, then run the main job on the built-in synthetic benchmark ($(RESULTS)/REPORT.md)"
	@echo "                 a real dataset: make reproduce DATASET=ssv2 ROOT=/videos BACKBONE=ViT-B/16"
	@echo "make test        set up, then run the default test suite (CPU, no network)"
	@echo "make test-fast   the default suite without whole-chain and Ray-cluster tests (about 2 minutes on 2 cores)"
	@echo "make chaos       SIGKILL every stage 5 times at random points, resume, compare (KILLS=5)"
	@echo "make test-all    also the slow tests (gpu tests: $(BIN)/pytest -m gpu)"
	@echo "make report      regenerate $(RESULTS)/REPORT.md from the JSON outputs"
	@echo "make bench       every benchmark below, one after the other, then docs/benchmarks.md"
	@echo "make bench-decode  shard stage vs raw decoders (installs the [bench] extras)"
	@echo "make bench-embed   embed stage vs a bare encode_image loop (after make reproduce)"
	@echo "make bench-evaluate  batched OTAM episodes vs per-episode loops"
	@echo "make bench-train   time per training episode, adapter vs finetune mode; finetune steps on 2 Ray Train workers vs 1 (after make reproduce)"
	@echo "make gpu-check   every GPU path once, measured, on one CUDA GPU: $(RESULTS)/GPU.md (DRY_RUN=1: the same on a CPU, tiny)"
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

# one pytest worker per core (pytest-xdist), each on one thread: the fast tier is many small tests
test-fast: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n auto -m 'not gpu and not slow and not chain and not cluster'

test-all: setup
	$(BIN)/python -m pytest -m 'not gpu'

KILLS ?= 5
chaos: setup
	$(BIN)/python -m tools.chaos --kills $(KILLS) --work $(RESULTS)/chaos

reproduce: setup
	$(BIN)/fsar-reproduce --dataset $(DATASET) $(if $(ROOT),--root $(ROOT)) --data $(DATA) --shards $(SHARDS) --cache $(CACHE) \
	  --results $(RESULTS) --backbone $(BACKBONE) $(REPRODUCE_ARGS)

report: setup
	$(BIN)/fsar-report $(RESULTS)

# torchcodec loads FFmpeg's shared libraries from the system: where none are found and this
# is a root shell with apt-get (Debian, Ubuntu), they are installed; else torchcodec is n/a.
$(VENV)/.fsar-bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	@if ! ldconfig -p 2>/dev/null | grep -q 'libavutil\.so\.'; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg; \
	  else echo "note: no FFmpeg shared libraries (apt-get install ffmpeg): the decode benchmark reports torchcodec as n/a"; fi; \
	fi
	@touch $@

bench-decode: $(VENV)/.fsar-bench-installed
	$(BIN)/python -m tools.bench.decode --out $(RESULTS)/bench-decode

bench-evaluate: setup
	$(BIN)/python -m tools.bench.evaluate --out $(RESULTS)/bench-evaluate

bench-embed: setup
	@test -f $(SHARDS)/manifest.json || $(MAKE) reproduce
	$(BIN)/python -m tools.bench.embed --shards $(SHARDS) --backbone $(BENCH_BACKBONE) --out $(RESULTS)/bench-embed

bench-train: setup
	@test -f $(CACHE) || $(MAKE) reproduce
	$(BIN)/python -m tools.bench.train_step --shards $(SHARDS) --cache $(CACHE) --out $(RESULTS)/bench-train

# One CUDA GPU, at most 8 minutes: every GPU path run and measured (tools/gpu_check/README.md). DRY_RUN=1
# runs the same script on a CPU with tiny sizes into $(RESULTS)/gpu-check-dry-run, GPU-only steps skipped.
.PHONY: gpu-check
gpu-check: setup
	$(BIN)/python -m tools.gpu_check $(if $(DRY_RUN),--dry-run --out $(RESULTS)/gpu-check-dry-run,--out $(RESULTS))

# Every benchmark, each run's date, commit and machine recorded beside its JSON; then docs/benchmarks.md.
bench: setup
	$(BIN)/python -m tools.bench.report --results $(RESULTS) --run decode,embed,evaluate,train

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
