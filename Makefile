# Every target creates .venv when missing. torch==2.13.0 is installed first so that pip takes
# the local CPU build instead of pulling a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BASE := $(VENV)/.base-stamp
STAMP := $(VENV)/.dev-stamp

.PHONY: demo test bench lint clean toolchain

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

test: $(STAMP) toolchain
	$(PY) -m pytest -q

# Cross compiler and QEMU for the C target tests (Debian packages; skipped tests if unavailable).
toolchain:
	@bash tools/install-toolchain.sh

# SpikingJelly (the peer converter) goes to benchmarks/work/sjlib, never into .venv or pyproject.
bench: $(STAMP) toolchain
	PY=$(PY) bash benchmarks/install_spikingjelly.sh
	$(PY) benchmarks/run.py

lint: $(STAMP)
	$(PY) -m ruff check spikeport tests benchmarks examples

clean:
	rm -rf out benchmarks/work .pytest_cache
