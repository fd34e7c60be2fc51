# metahead: `make test` sets up .venv and runs lint + tests; `make demo` runs the main job.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A tuned allocator: glibc's default malloc makes PyTorch slow and noisy on CPU.
JEMALLOC := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/aarch64-linux-gnu/libjemalloc.so.2))
RUN_ENV := MALLOC_ARENA_MAX=2 MALLOC_TRIM_THRESHOLD_=268435456 MALLOC_MMAP_THRESHOLD_=268435456 $(if $(JEMALLOC),LD_PRELOAD=$(JEMALLOC))

.PHONY: install test lint demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: lint
	$(RUN_ENV) $(PY) -m pytest -q

demo: install
	$(RUN_ENV) $(VENV)/bin/metahead demo --out demo-output

bench: install
	$(RUN_ENV) $(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
