# `make test` and `make demo` work on a fresh machine: they create .venv, install the pinned
# requirements, install the checkout into it in editable mode (dw_ops, dwdet, the dwdet-* commands;
# this compiles dw_ops._C), then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: venv build build-cuda emu test demo bench clean

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

# The editable install registers the package and its commands once; later builds recompile only
# what changed (ninja, in build/), in place, where the editable install finds the extension.
build: venv $(VENV)/.editable
	$(PY) setup.py build_ext --inplace
$(VENV)/.editable: $(VENV)/.installed pyproject.toml setup.py
	$(PY) -m pip install --no-build-isolation --no-deps -e .
	touch $@

# Compile the CUDA kernels even without a GPU (what CI does to catch CUDA compile errors).
build-cuda: venv
	FORCE_CUDA=1 $(PY) setup.py build_ext --inplace

# The CUDA kernels compiled for the CPU under an emulation of the CUDA execution model (tests only).
emu: venv
	cd tests/cuda_emu && ../../$(PY) setup.py build_ext --inplace

test: build emu
	$(PY) -m pytest -q tests

# Generate a small cut of the shapes80 benchmark, train DW on it from the shipped pretrained
# ResNet-10 (CPU, or the GPU if there is one), print the COCO AP table of the validation split and
# draw the detections on eight validation images (work_dirs/demo/detections.png).
# DEMO_OPTS adds config overrides, e.g. DEMO_OPTS=train.epochs=6.
DEMO_OPTS ?=
DEMO_IMAGES := $(foreach i,1 2 3 4 5 6 7 8,data/shapes16-demo/val/00000$(i).jpg)
demo: build
	rm -rf work_dirs/demo
	$(PY) tools/train.py configs/demo_dw_r10_shapes80.py --work-dir work_dirs/demo $(DEMO_OPTS)
	$(PY) tools/infer.py work_dirs/demo/last.pth $(DEMO_IMAGES) --out-dir work_dirs/demo/infer --score-thr 0.3 \
		--grid work_dirs/demo/detections.png

bench: build
	$(PY) tools/bench_ops.py --json docs/bench_ops_cpu.json

clean:
	rm -rf build dw_ops/*.so tests/cuda_emu/build tests/cuda_emu/*.so
