# bioconv: everything a fresh machine needs is installed by these targets.
#   make demo   -- set up .venv and run the end-to-end demo (train, convert, simulate, figure)
#   make test   -- set up .venv (and the brian2cuda env) and run the full test suite
PY311   ?= python3.11
PY312   ?= $(or $(shell python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null),$(lastword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12)),python3.12)
VENV    := .venv
CUDAENV := .venv-cuda
STAMP   := $(VENV)/.installed
CUDASTAMP := $(CUDAENV)/.installed
SHARED_MNIST := $(abspath ../shared/datasets/mnist)
export BIOCONV_DATA_DIR ?= $(if $(wildcard $(SHARED_MNIST)),$(SHARED_MNIST),)
export BRIAN_CACHE_DIR := $(abspath .cache/brian)
export MPLBACKEND := Agg
export NUMBA_CACHE_DIR := $(abspath .cache/numba)
PYTEST_ARGS ?=

.PHONY: venv cuda-env demo test test-fast cuda-build bench clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	$(PY311) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -e '.[torch,dask,test,nir]'
	touch $(STAMP)

# brian2cuda needs Python >= 3.12 and brian2 == 2.10.1; this env has no torch.
cuda-env: $(CUDASTAMP)
$(CUDASTAMP): pyproject.toml
	$(PY312) -m venv $(CUDAENV)
	$(CUDAENV)/bin/python -m pip install -q 'brian2==2.10.1' 'brian2cuda==1.0b1' nvidia-curand pytest scipy pandas pyarrow tqdm
	$(CUDAENV)/bin/python -m pip install -q --no-deps -e .
	touch $(CUDASTAMP)

demo: $(STAMP)
	$(VENV)/bin/python -m studies.demo

test: $(STAMP) $(CUDASTAMP)
	$(VENV)/bin/python -m pytest -m "not cuda" --ignore=tests/test_cuda_codegen.py --ignore=tests/test_cuda_graph_codegen.py $(PYTEST_ARGS)
	$(CUDAENV)/bin/python -m pytest -m cuda tests/test_cuda_codegen.py tests/test_cuda_graph_codegen.py $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not slow and not standalone and not cuda" --ignore=tests/test_cuda_codegen.py --ignore=tests/test_cuda_graph_codegen.py $(PYTEST_ARGS)

# Full nvcc build of the generated brian2cuda project (about 8 min on 2 cores).
cuda-build: $(CUDASTAMP)
	$(CUDAENV)/bin/python -m bioconv.engines.cuda_build

bench: $(STAMP)
	$(VENV)/bin/bioconv bench brian2
	$(VENV)/bin/bioconv bench torch

clean:
	rm -rf $(VENV) $(CUDAENV) .cache build
