# `make demo` and `make test` set everything up on a fresh machine (Python 3.10+).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

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
