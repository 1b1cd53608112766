# lt: every target creates .venv itself when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: install test test-fast demo bench lint docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q -e '.[test,tfds,ray,slurm,wandb,mlflow]'
	touch $@

$(DOCS_STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q -e '.[docs]'
	touch $@

## install: .venv with lt installed (editable) and its runtime dependencies
install: $(BIN)/python
	$(BIN)/pip install -q -e .

## test: install everything the tests need (Fashion-MNIST, Chromium and Slurm too, where apt works) and run
## every tier of them, printing the 25 slowest
test: $(STAMP) fashion-mnist chromium slurm
	$(BIN)/pytest -n 2 --dist loadfile -q --durations=25

## test-fast: the unit tier only (no training, no subprocess), for the inner loop
test-fast: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile -q -m unit

## demo: a short real experiment on Fashion-MNIST, printing the per-level table
## (Fashion-MNIST from Debian's package where apt works, else `lt data fetch`, checksummed)
demo: $(STAMP) fashion-mnist
	@$(BIN)/python -c "from ltcli import data; data.locate('fashion-mnist')" 2>/dev/null \
	  || $(BIN)/lt data fetch fashion-mnist
	$(BIN)/lt run fashion-lenet --rounds 3 --iterations 2000 --replicates 2 --store results/demo

## bench: print throughput and compile-time figures for this machine
bench: $(STAMP)
	$(BIN)/python -m benchmarks

## docs: the documentation site in site/ (mkdocs build --strict: a warning or broken link fails)
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check ltcli tests experiments benchmarks docs/hooks.py
	$(BIN)/ruff format --check ltcli tests experiments benchmarks docs/hooks.py
	$(BIN)/lint-imports --no-cache

.PHONY: fashion-mnist
fashion-mnist:
	@if [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -qq dataset-fashion-mnist || \
	     (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null \
	    || echo "note: could not install dataset-fashion-mnist; its tests will be skipped (make demo fetches it)"; \
	  else echo "note: dataset-fashion-mnist not installed (needs apt as root); its tests will be skipped (make demo fetches it)"; fi; \
	fi

.PHONY: chromium
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -qq chromium || \
	     (apt-get update -qq && apt-get install -y -qq chromium)) >/dev/null \
	    || echo "note: could not install chromium; the report's browser tests will be skipped"; \
	  else echo "note: chromium not installed (needs apt as root); the report's browser tests will be skipped"; fi; \
	fi

.PHONY: slurm
slurm:
	@if ! command -v slurmctld >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -qq slurm-wlm munge || \
	     (apt-get update -qq && apt-get install -y -qq slurm-wlm munge)) >/dev/null \
	    || echo "note: could not install slurm-wlm; the Slurm executor's cluster tests will be skipped"; \
	  else echo "note: slurm-wlm not installed (needs apt as root); the Slurm executor's cluster tests will be skipped"; fi; \
	fi

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .ruff_cache
