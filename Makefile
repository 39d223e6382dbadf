# `make demo` and `make test` set everything up on a fresh machine (Python 3.10+).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup fonts demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed fonts

# Attention plots of Chinese, Japanese or Korean corpora need a CJK font: Debian's
# fonts-noto-cjk (57 MB), installed when no Noto Sans CJK is found and this is root
# with apt-get; otherwise a note says what to install (the plot tests check it).
fonts:
	@fc-list 2>/dev/null | grep -q "Noto Sans CJK" || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q --no-install-recommends fonts-noto-cjk >/dev/null 2>&1 || { \
	      apt-get update -q >/dev/null && \
	      apt-get install -y -q --no-install-recommends fonts-noto-cjk >/dev/null; } || \
	    echo "note: could not install fonts-noto-cjk: CJK tokens in plots will be boxes"; \
	  else \
	    echo "note: plots of CJK tokens need a CJK font: sudo apt-get install fonts-noto-cjk"; \
	  fi; }

WORKDIR ?= workdirs/default

demo: setup
	$(PY) -m seq2seq_jax.main --config=configs/default.py --workdir=$(WORKDIR)

lint: setup
	$(PY) -m ruff check seq2seq_jax tests benchmarks configs experiments

test: lint
	$(PY) -m pytest -n 2 --dist loadgroup -q

bench: setup
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/decode.py --floor

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
