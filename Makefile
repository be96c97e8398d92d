# One-command set-up: a virtual environment in .venv with everything the tests and the demo need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Machines without an NVIDIA driver get the CPU build of torch first (a bare `torch` pulls a multi-GB CUDA build):
# PyTorch's CPU index holds it as 2.13.0+cpu, which pip prefers to PyPI's 2.13.0.
TORCH_CPU ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: venv test test-slow test-gpu demo benchmark train-segmentation gpu-pack train-gpu train-enhancement clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install --extra-index-url "$(TORCH_CPU_INDEX)" "$(TORCH_CPU)"; fi
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
	$(BIN)/python benchmarks/benchmark_enhance.py --paper-evaluations 40
	$(BIN)/python benchmarks/benchmark_segment.py

# Heart segmentation on the train splits of the three data sets (Resources/splits.json). Resumable: run it
# again and it continues from $(SEG_RUN)/checkpoint.pt; LR=... lowers the learning rate of a resumed run.
# CONTEXT=1 shows the network the neighbour slice on each side (2.5D); SEG_INIT=weights starts a new run from
# a trained model (a 2D one into a 2.5D run: the neighbour inputs start at zero weight); SCAR_WEIGHT weighs the
# scar class in the loss; SHARES="3 1 1" draws batches from EMIDEC, MyoPS and MS-CMRSeg in those shares
# (default: equal); SCHEDULE=cosine warms up, then lowers the learning rate to 0 at the last iteration.
DATA ?= ../shared/data
SEG_RUN ?= runs/segmentation
LR ?= 5e-4
CONTEXT ?= 0
SEG_INIT ?=
SCAR_WEIGHT ?= 1
SHARES ?=
SCHEDULE ?= constant
SEG_DATA := --dataset $(DATA)/emidec --dataset $(DATA)/myops2020_train25 --dataset $(DATA)/mscmrseg19_lge \
	--context-slices $(CONTEXT) --scar-weight $(SCAR_WEIGHT) $(if $(SEG_INIT),--init-weights $(SEG_INIT)) \
	$(if $(SHARES),--dataset-share $(SHARES)) --lr-schedule $(SCHEDULE)
train-segmentation: venv
	$(BIN)/scarenhance train-segmentation $(SEG_DATA) --run-dir $(SEG_RUN) --iterations 60000 \
		--checkpoint-every 500 --learning-rate $(LR) --threads 2

# A lent GPU machine gets the repository and 64 MiB in all, and lacks SimpleITK, MONAI and diffusers. Here,
# `make gpu-pack` packs the train splits and the MONAI and diffusers wheels into gpu_pack/ (about 42 MiB); there,
# with gpu_pack carried, `bash tools/gpu/train.sh` (or `make train-gpu`; $OUT: the folder that comes back) trains the
# segmentation and both enhancement variants from the bundled weights within 9 minutes.
GPU_WHEELS ?= monai==1.6.1 diffusers==0.42.1
gpu-pack: venv
	rm -rf gpu_pack
	$(BIN)/python tools/gpu/pack.py $(DATA) gpu_pack
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
		-d gpu_pack/wheels $(GPU_WHEELS)

train-gpu:
	bash tools/gpu/train.sh

# Tissue-aware enhancement (maps of blood pool and wall, heart intensity window) on the EMIDEC and MyoPS train
# splits, from the bundled image-only weights. Resumable like the segmentation; ENH_MINUTES bounds one run.
ENH_RUN ?= runs/enhancement_tissue
ENH_LR ?= 3e-4
ENH_MINUTES ?= 80
train-enhancement: venv
	$(BIN)/scarenhance train-diffusion --dataset $(DATA)/emidec --dataset $(DATA)/myops2020_train25 \
		--run-dir $(ENH_RUN) --conditioning tissue --normalisation heart --augmentation strong \
		--max-timestep 300 --learning-rate $(ENH_LR) --iterations 30000 --checkpoint-every 250 --threads 2 \
		--time-limit $(ENH_MINUTES) --init-weights Resources/models/enhancement.safetensors

clean:
	rm -rf $(VENV) demo_output .pytest_cache
