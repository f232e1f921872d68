# Two commands do all the set-up on a fresh machine:
#   make run    install, then the main job: verification report, proofs, all figures
#   make test   install, then the test suite (what CI runs)
# Installation goes into .venv; the on-disk CPU wheel of torch 2.13.0 is installed first so that
# pip never pulls a CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,lm,notebooks,trl,real

.PHONY: install run test test-slow lint bench gpu gpu-smoke

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

# Fixed thread counts and timestamps: the regenerated files are the same bytes on any machine.
run: export OMP_NUM_THREADS = 1
run: export OPENBLAS_NUM_THREADS = 1
run: export MKL_NUM_THREADS = 1
run: export SOURCE_DATE_EPOCH = 0
run: install
	$(VENV)/bin/mi-bounds report
	$(VENV)/bin/mi-bounds verify
	$(VENV)/bin/mi-bounds figures

test: install
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) benchmarks/bench_bounds.py

# The GPU validation (experiments/gpu_validation.py): `gpu` is the device call's command (it
# needs no .venv: the GPU machine has its own torch), `gpu-smoke` every step at toy size on CPU.
# What a call carries, and its limits: experiments/gpu_provision.py (made by gpu_prepare.sh).
gpu:
	bash experiments/gpu_run.sh

gpu-smoke: install
	$(PY) experiments/gpu_validation.py --smoke --device cpu --out runs/gpu-smoke/out
