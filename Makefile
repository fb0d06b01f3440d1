# The two commands of the README:  make book  and  make test.  Each sets up .venv by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch first, pinned: a plain `torch` requirement would pull a multi-GB CUDA build on a CPU machine.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test book tiny-base clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,book]"
	touch $@

test: setup
	$(BIN)/python -m pytest -q

tiny-base: setup
	$(BIN)/zephyr tiny-base

book: setup tiny-base
	$(BIN)/zephyr book

clean:
	rm -rf runs book/_build
