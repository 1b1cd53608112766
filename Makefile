# lt: every target creates .venv itself when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast demo bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q -e '.[test,tfds,ray]'
	touch $@

## install: .venv with lt installed (editable) and its runtime dependencies
install: $(BIN)/python
	$(BIN)/pip install -q -e .

## test: install everything the tests need (Fashion-MNIST and Chromium too, where apt works) and run
## every tier of them, printing the 25 slowest
test: $(STAMP) fashion-mnist chromium
	$(BIN)/pytest -n 2 --dist loadfile -q --durations=25

## test-fast: the unit tier only (no training, no subprocess), for the inner loop
test-fast: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile -q -m unit

## demo: a short real experiment on Fashion-MNIST, printing the per-level table
demo: $(STAMP) fashion-mnist
	$(BIN)/lt run fashion-lenet --rounds 3 --iterations 2000 --replicates 2 --store results/demo

## bench: print throughput and compile-time figures for this machine
bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check ltcli tests experiments benchmarks
	$(BIN)/ruff format --check ltcli tests experiments benchmarks
	$(BIN)/lint-imports --no-cache

.PHONY: fashion-mnist
fashion-mnist:
	@if [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -qq dataset-fashion-mnist || \
	     (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null \
	    || echo "note: could not install dataset-fashion-mnist; its tests will be skipped"; \
	  else echo "note: dataset-fashion-mnist not installed (needs apt as root); its tests will be skipped"; fi; \
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

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
