# make demo / make test each build .venv if it is missing. torch is pinned and installed
# first: this machine holds a local CPU build of torch 2.13.0, any other spec downloads CUDA.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: demo test venv clean

$(BIN)/lvmkit: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,attpc,postgres]" \
	  || $(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,postgres]" \
	  || $(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $(BIN)/lvmkit

venv: $(BIN)/lvmkit

demo: venv
	$(BIN)/lvmkit demo

test: venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs

# make bench: the speed comparisons of BENCHMARKS.md against their peers (benchmarks/bench.py),
# under .venv-bench, built here as benchmarks/README.md documents when it is missing. Peers are
# comparison targets, never dependencies of lvmkit. BENCH_ARGS="--quick" for a smoke check.
BENCH_VENV := .venv-bench
BENCH_BIN  := $(BENCH_VENV)/bin
BENCH_ARGS ?=
PIP_BENCH  := $(BENCH_BIN)/python -m pip install -q --disable-pip-version-check

.PHONY: bench bench-venv

$(BENCH_BIN)/.bench-ready: pyproject.toml
	test -x $(BENCH_BIN)/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(PIP_BENCH) $(TORCH)
	$(PIP_BENCH) pythae
	$(PIP_BENCH) statsmodels diffusers torchdiffeq scikit-learn pytest
	$(PIP_BENCH) -e .
	$(BENCH_BIN)/python -m pip check
	touch $@

bench-venv: $(BENCH_BIN)/.bench-ready

bench: bench-venv
	$(BENCH_BIN)/python benchmarks/bench.py $(BENCH_ARGS)
