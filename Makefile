# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch that lies on the machines' local wheel dir; pinned first so that the
# `llm` extra (torch>=2.3, for tests/test_llama.py's PyTorch reference) never pulls a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup demo tour test test-all bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '$(TORCH)'
	$(PY) -m pip install --quiet -e '.[test,llm]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/algeval pipeline --out runs/pipeline

tour: $(STAMP)
	$(VENV)/bin/algeval demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -m ''

bench: $(STAMP)
	$(PY) benchmarks/bench_search_sampler.py

clean:
	rm -rf $(VENV) build *.egg-info
