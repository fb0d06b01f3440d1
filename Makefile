# The two commands of the README:  make book  and  make test.  Each sets up .venv by itself.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# torch first, pinned: a plain `torch` requirement would pull a multi-GB CUDA build on a CPU machine.
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.installed
MATHJAX := book/_vendor/node_modules/mathjax/es5/tex-chtml.js
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup browser test book bench study tiny-base clean

setup: $(STAMP) $(MATHJAX)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,book,eval]"
	touch $@

# MathJax from the npm registry, served with the book's pages (no CDN).
$(MATHJAX):
	npm install --silent --no-audit --no-fund --prefix book/_vendor mathjax@3

# Headless Chromium for the browser test (Debian's package; skipped with a message where apt is missing).
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "chromium could not be installed: the browser test will be skipped"

test: setup browser
	$(BIN)/python -m pytest -q

tiny-base: setup
	$(BIN)/zephyr tiny-base

# ZEPHYR_PROGRESS=0: no progress bars in the executed pages (zephyr_utils/progress.py)
book: setup tiny-base
	ZEPHYR_PROGRESS=0 $(BIN)/jupyter-book build book -W -n --keep-going
	@echo "The book is ready: open $(CURDIR)/book/_build/html/index.html"

clean:
	rm -rf runs book/_build

bench: setup
	$(BIN)/python bench/run.py

# The seed study: the whole tiny pipeline and its ablations for 2 world seeds x 5 training seeds
# (bench/results/study.json and study.png; about 25 minutes on 2 cores).
study: setup
	$(BIN)/python bench/study.py
