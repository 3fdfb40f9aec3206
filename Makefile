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
