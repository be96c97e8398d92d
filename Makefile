# One-command set-up: a virtual environment in .venv with everything the tests and the demo need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Machines without an NVIDIA driver get the CPU build of torch first (a bare `torch` pulls a multi-GB CUDA build).
TORCH_CPU ?= torch==2.13.0

.PHONY: venv test test-slow test-gpu demo benchmark clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install "$(TORCH_CPU)"; fi
	$(BIN)/pip install -e ".[test]"
	touch $@

test: venv
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: venv
	$(BIN)/python -m pytest -m slow -q

# CUDA paths: float16 autocast, out-of-memory fallback, training workers (skipped without a GPU)
test-gpu: venv
	$(BIN)/python -m pytest Testing/test_gpu.py -q

demo: venv
	$(BIN)/scarenhance demo -o demo_output

benchmark: venv
	$(BIN)/python benchmarks/benchmark_enhance.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
