# multiflow_pl developer commands. Every target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The versions the test suite passed with (make lock writes them): requirements.lock holds the package's
# dependencies, requirements-dev.lock those plus the dev tools; make install and CI install the latter.
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
# torch + torchvision pinned as one pair in the locks (a mismatched torchvision fails to import).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(PY) -m piptools compile --quiet --upgrade --strip-extras \
	--allow-unsafe --no-emit-index-url --no-emit-find-links $(foreach spec,$(TORCH_SPEC),--upgrade-package $(spec))
PYTEST_ARGS ?= -n 2 --dist loadfile
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install lock demo test test-fast lint format bench bench-peers clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(DEV_LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r $(DEV_LOCK)
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its dev tools, at the locked versions

lock: $(STAMP)  ## re-resolve the locks to the newest versions pyproject.toml allows (then make install)
	$(PIP_COMPILE) --output-file $(LOCK) pyproject.toml
	$(PIP_COMPILE) --extra dev --constraint $(LOCK) --output-file $(DEV_LOCK) pyproject.toml

demo: $(STAMP)  ## train + evaluate Multi-Flow on the synthetic benchmark (CPU, minutes); ARGS="..." adds overrides
	$(PY) -m multiflow_pl.train $(ARGS)

test: $(STAMP)  ## run the whole test suite (both tiers; what CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the fast tier, for the edit-test loop: everything but the end-to-end tests (-m "not e2e")
	$(PY) -m pytest $(PYTEST_ARGS) -m "not e2e"

lint: $(STAMP)  ## ruff lint + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)  ## apply ruff formatting and autofixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)  ## run the benchmarks (tables printed; see docs/benchmarks.md)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

bench-peers: $(STAMP)  ## Multi-Flow vs anomalib's PatchCore, FastFlow, CS-Flow on the synthetic benchmark (CPU)
	$(PY) -m pip install -q -e '.[peers]'
	PYTHONPATH=src $(PY) benchmarks/peers.py --root logs/peers --plot docs/images/peers_sample_auroc.png --results docs/results.md

clean:  ## remove caches and run outputs (keeps .venv and data/)
	rm -rf outputs multirun .pytest_cache .ruff_cache
