# Two commands do everything on a fresh machine: `make test` and `make bench`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := $(shell grep -E '^torch==' constraints.txt)
STAMP := $(VENV)/.installed
MODELS ?= .cache/models
CONFIG ?= benchmarks/configs/default.yaml

.PHONY: install models test test-fast lint format bench bench-quick perf freeze clean

install: $(STAMP)

# Re-run only when the dependency declarations change: a second `make install` costs nothing.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first from its exact pin: an unpinned resolve pulls a multi-GB CUDA build.
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

models: install
	$(BIN)/asc-deploy models stage --dest $(MODELS)

test: install models
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not real_model and not slow"

lint: install
	$(BIN)/ruff check asc_deploy tests benchmarks
	$(BIN)/ruff format --check asc_deploy tests benchmarks

format: install
	$(BIN)/ruff format asc_deploy tests benchmarks
	$(BIN)/ruff check --fix asc_deploy tests benchmarks

bench: install models
	$(BIN)/asc-deploy run $(CONFIG)

bench-quick: install models
	$(BIN)/asc-deploy run benchmarks/configs/quick.yaml

# The suite's own hot paths (pytest-benchmark), compared with the saved baseline: see benchmarks/README.md.
perf: install models
	$(BIN)/pytest -q benchmarks --benchmark-storage=benchmarks/baselines \
		--benchmark-compare --benchmark-compare-fail=median:25%

freeze: install
	$(BIN)/pip freeze --exclude-editable | sed 's/+cpu//' > constraints.txt

clean:
	rm -rf $(VENV) .cache exports/*/
