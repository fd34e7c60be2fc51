# metahead: `make test` sets up .venv and runs lint + tests; `make demo` runs the main job.
PYTHON ?= python3.11
, := ,# a literal comma, for inside $(if ...)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A tuned allocator: glibc's default malloc makes PyTorch slow and noisy on CPU; glibc with large blocks kept
# in its heap (MALLOC_*) is within ~5 % of the fastest here. jemalloc with page decay off was faster on large
# tensors but grew without bound in real-data training (docs/performance.md, "Allocator";
# metahead.perf.tuned_allocator_env is the same for Python launchers). Idle OpenMP threads sleep instead of
# spinning: on a shared machine spinning threads stall each other.
RUN_ENV := MALLOC_ARENA_MAX=2 MALLOC_TRIM_THRESHOLD_=268435456 MALLOC_MMAP_THRESHOLD_=268435456 OMP_WAIT_POLICY=PASSIVE

.PHONY: install test test-browser lint demo bench clean

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

# `metahead app` end to end in headless Chromium (Debian's chromium + chromium-driver; skips without them).
test-browser: install
	$(RUN_ENV) $(PY) -m pytest -q -m browser tests/test_app_browser.py

demo: install
	$(RUN_ENV) $(VENV)/bin/metahead demo --out demo-output

bench: install
	$(RUN_ENV) $(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
